"""Stage `responses`: K sampled responses per prompt, kept raw for verification.

Every prompt goes to the LLM as one request for `responses.k` samples (seeded, so a rerun asks
the cache for the same samples). Each response keeps why its generation stopped (`finish_reason`:
'stop', or 'length' when `responses.max_tokens` cut it off) and its token count, so that verify
can mark the cut-off ones. Empty samples are counted and left out; a prompt left with no response
is dropped. A prompt with a sample the backend gave up on (`Completion.error`) is dropped as
`llm_error` (the pipeline does not mark its shard finished, so the next run asks again) or, when
the backend refused it for the request's own fault (a prompt too long), `llm_rejected`.

What the model is asked (`responses.template`): `natural`, the query record's `prompt` itself
(instruction and query joined as users write them; the prompt autoif trains on), or `paper`, the
generation prompt of the AutoIF release ("Please answer the query strictly following the
instruction." with the instruction and the query under `[instruction]` and `[Query]` tags,
`prompts/respond_paper.txt`). The training prompt is the natural one either way: the tags are a
sampling aid, not something a user writes.

`responses.greedy` adds one more answer per prompt, after the k samples: the training prompt
decoded greedily (temperature 0), which is what a greedy evaluation of the model measures. A small
model loops there far more often than when sampled (SmolLM2-135M: 26 of 90 dev prompts ran to 512
tokens greedily, 7% of its sampled training answers did), so the samples alone rarely show the
model the failure that evaluation punishes; verified like any answer, a failing or (with
`export.truncated_rejected`) cut-off greedy answer is a DPO rejected against a passing sample.
The k-sample request is unchanged, so its cached samples are reused.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..llm import Request, failure
from ..prompts import render, template
from ..records import QueryRecord, Response, ResponsesRecord
from ..rundir import RESPONSES
from .base import Context, Drop, Stage

PAPER_TEMPLATE = "respond_paper"


def sampling_prompt(record: QueryRecord, template_name: str) -> str:
    """What the model is asked for this query record under `responses.template`."""
    if template_name == "paper":
        # The release's prompts end at the query: no trailing newline.
        return render(PAPER_TEMPLATE, instruction=record.instruction.strip(), query=record.query.strip()).rstrip("\n")
    return record.prompt


class ResponsesStage(Stage[QueryRecord]):
    name = "responses"
    output = RESPONSES.name
    input = "queries"
    output_type = ResponsesRecord
    uses_llm = True
    reads = ("responses", "llm", "seed")

    def key_inputs(self, config):
        # The template's text changes what is asked as much as the config does.
        return {"template_text": template(PAPER_TEMPLATE) if config.responses.template == "paper" else None}

    def run(self, records: list[QueryRecord], ctx: Context) -> Iterable[ResponsesRecord | Drop]:
        cfg = ctx.config.responses
        requests = [
            Request.user(
                sampling_prompt(r, cfg.template),
                n=cfg.k,
                temperature=cfg.temperature,
                max_tokens=cfg.max_tokens,
                seed=ctx.config.seed,
            )
            for r in records
        ]
        if cfg.greedy:
            requests += [
                Request.user(r.prompt, n=1, temperature=0.0, max_tokens=cfg.max_tokens, seed=ctx.config.seed)
                for r in records
            ]
        answers = ctx.llm.generate(requests, desc="responses") if requests else []
        if cfg.greedy:
            answers = [sampled + greedy for sampled, greedy in zip(answers, answers[len(records) :])]
        for record, completions in zip(records, answers):
            reason = failure(completions)
            if reason:  # not all its samples (a failed one: the pipeline redoes the shard next run)
                ctx.count(reason, sum(1 for c in completions if c.error))
                yield Drop(record, reason)
                continue
            responses = []
            for completion in completions:
                if not completion.strip():
                    ctx.count("response_empty")
                else:
                    responses.append(
                        Response(text=str(completion), finish_reason=completion.finish_reason, tokens=completion.tokens)
                    )
            if responses:
                yield ResponsesRecord(prompt_id=record.id, responses=responses)
            else:
                yield Drop(record, "no_response")
