"""Stage `responses`: K sampled responses per prompt, kept raw for verification.

Every prompt goes to the LLM as one request for `responses.k` samples (seeded, so a rerun asks
the cache for the same samples). Samples the backend gave up on (`Completion.error`) and empty
ones are counted and left out; a prompt left with no response is dropped.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..llm import Request
from ..records import QueryRecord, ResponsesRecord
from .base import Context, Drop, Stage


class ResponsesStage(Stage):
    name = "responses"
    output = "responses.jsonl"
    input = "queries"
    output_type = ResponsesRecord
    uses_llm = True

    def run(self, records: list[QueryRecord], ctx: Context) -> Iterable[ResponsesRecord | Drop]:
        cfg = ctx.config.responses
        requests = [
            Request.user(
                r.prompt, n=cfg.k, temperature=cfg.temperature, max_tokens=cfg.max_tokens, seed=ctx.config.seed
            )
            for r in records
        ]
        answers = ctx.llm.generate(requests, desc="responses") if requests else []
        for record, completions in zip(records, answers):
            texts = []
            for completion in completions:
                if completion.error:
                    ctx.count("llm_error")
                elif not completion.strip():
                    ctx.count("response_empty")
                else:
                    texts.append(str(completion))
            if texts:
                yield ResponsesRecord(prompt_id=record.id, responses=texts)
            else:
                yield Drop(record, "no_response")
