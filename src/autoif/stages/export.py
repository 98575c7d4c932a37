"""Stage `export`: SFT records (`sft.jsonl`) and DPO pairs (`dpo.jsonl`), formats as in docs/architecture.md.

The functions of each instruction travel with every record, so a trainer can score new samples.

- SFT: every distinct response that passed verification (`passed`, set by verify), has no drop
  reason (verify's `drop`, e.g. `truncated`) and, when scoring is on, has a relevance score of at
  least `score.min_score`.
- DPO, query level (per prompt): chosen = distinct responses with pass rate >=
  `export.chosen_min_pass_rate`, no drop reason (and, when scoring is on, a score >=
  `score.min_score`); rejected = distinct responses with pass rate <=
  `export.rejected_max_pass_rate`, truncated ones only when `export.truncated_rejected` (the rule
  is `PairBounds.may_choose/may_reject`, which online DPO uses too). At most
  `export.max_pairs_per_prompt` pairs, spread over as many different responses as possible
  (`pairs.pair_up`). verified.jsonl files made before responses had a finish reason have no drop
  reasons, and export them as before.
- DPO, instruction level (per kept instruction, from its cross-validated test cases): the prompt is
  the instruction alone; chosen = a case input labelled True, rejected = one labelled False. The
  cases are run again on the instruction's kept functions, and the same pass-rate bounds apply, so
  every pair is one the functions themselves tell apart.

Pair order is drawn from generators seeded by the global seed and the prompt (instruction) id, so
the output is the same on every run. Export sees all records at once (not sharded).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from ..pairs import pair_up
from ..records import CrossvalRecord, DPORecord, Message, QueryRecord, SFTRecord, VerifiedRecord, VerifiedResponse
from .base import Context, Drop, Stage
from .verify import INSTRUCTIONS, QUERIES


def _user(text: str) -> list[Message]:
    return [Message(role="user", content=text)]


def _assistant(text: str) -> list[Message]:
    return [Message(role="assistant", content=text)]


class ExportStage(Stage[VerifiedRecord]):
    name = "export"
    output = "sft.jsonl"
    input = "score"
    output_type = SFTRecord
    uses_sandbox = True
    also_writes = {DPORecord: "dpo.jsonl"}
    needs = (QUERIES, INSTRUCTIONS)
    sharded = False

    def settings(self, config):
        return {
            **super().settings(config),
            "scoring": config.score.active(config.llm),
            "min_score": config.score.min_score,
            "sandbox": config.sandbox.model_dump(),
        }

    def run(self, records: list[VerifiedRecord], ctx: Context) -> Iterable[SFTRecord | DPORecord | Drop]:
        queries = ctx.index(QUERIES, "id", QueryRecord)
        instructions = ctx.index(INSTRUCTIONS, "instruction_id", CrossvalRecord)
        for record in records:
            query = queries.get(record.prompt_id)
            instruction = instructions.get(query.instruction_id) if query else None
            if query is None or instruction is None:
                yield Drop(record, "unknown_prompt" if query is None else "unknown_instruction")
                continue
            functions = [f.source for f in instruction.functions]
            sft = self._sft(record, query.prompt, instruction.instruction_id, functions, ctx)
            pairs = self._query_pairs(record, query.prompt, functions, ctx)
            yield from sft
            yield from pairs
            if not sft and not pairs:
                yield Drop(record, "nothing_exported")
        # crossval and backtranslate both write CrossvalRecords
        yield from self._instruction_pairs(cast("list[CrossvalRecord]", ctx.needs[INSTRUCTIONS]), ctx)

    # --------------------------------------------------------------------------------- helpers
    def _score_ok(self, response: VerifiedResponse, ctx: Context) -> bool:
        score = ctx.config.score
        return not score.active(ctx.config.llm) or (response.score is not None and response.score >= score.min_score)

    def _sft(
        self, record: VerifiedRecord, prompt: str, instruction_id: str, functions: list[str], ctx: Context
    ) -> list[SFTRecord]:
        out, seen = [], set()
        for response in record.responses:
            if not response.passed:
                continue
            if response.drop is not None:
                ctx.count(f"sft_skipped:{response.drop}")
            elif not self._score_ok(response, ctx):
                ctx.count("sft_skipped:score")
            elif response.text in seen:
                ctx.count("sft_skipped:duplicate")
            else:
                seen.add(response.text)
                out.append(
                    SFTRecord(
                        messages=_user(prompt) + _assistant(response.text),
                        instruction_id=instruction_id,
                        functions=functions,
                        pass_rate=response.pass_rate,
                    )
                )
        return out

    def _query_pairs(self, record: VerifiedRecord, prompt: str, functions: list[str], ctx: Context) -> list[DPORecord]:
        cfg = ctx.config.export
        chosen = [r.text for r in record.responses if cfg.may_choose(r.pass_rate, r.drop) and self._score_ok(r, ctx)]
        rejected = [r.text for r in record.responses if cfg.may_reject(r.pass_rate, r.drop)]
        pairs = pair_up(chosen, rejected, cfg, ctx.rng("export.query_pairs", record.prompt_id))
        if not pairs:
            ctx.count("dpo_query:no_chosen" if not chosen else "dpo_query:no_rejected")
        ctx.count("dpo_query_pairs", len(pairs))
        return [
            DPORecord(
                prompt=_user(prompt), chosen=_assistant(c), rejected=_assistant(r), level="query", functions=functions
            )
            for c, r in pairs
        ]

    def _instruction_pairs(self, instructions: list[CrossvalRecord], ctx: Context) -> Iterable[DPORecord]:
        from ..sandbox import pass_rate

        cfg = ctx.config.export
        usable = [r for r in instructions if r.functions and r.cases]
        grids = (
            ctx.sandbox.check_many([([f.source for f in r.functions], [c.input for c in r.cases]) for r in usable])
            if usable
            else []
        )
        for record, grid in zip(usable, grids):
            functions = [f.source for f in record.functions]
            chosen, rejected = [], []
            for j, case in enumerate(record.cases):
                rate = pass_rate([grid[i][j] for i in range(len(functions))])
                if case.output and cfg.may_choose(rate):
                    chosen.append(case.input)
                elif not case.output and cfg.may_reject(rate):
                    rejected.append(case.input)
                else:
                    ctx.count("dpo_instruction:case_not_separable")
            pairs = pair_up(chosen, rejected, cfg, ctx.rng("export.instruction_pairs", record.instruction_id))
            ctx.count("dpo_instruction_pairs", len(pairs))
            for c, r in pairs:
                yield DPORecord(
                    prompt=_user(record.instruction),
                    chosen=_assistant(c),
                    rejected=_assistant(r),
                    level="instruction",
                    functions=functions,
                )
