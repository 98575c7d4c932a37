"""Stage `export`: SFT records (`sft.jsonl`) and DPO pairs (`dpo.jsonl`), formats as in docs/architecture.md.

The functions of each instruction travel with every record, so a trainer can score new samples.

- SFT: every distinct response that passed verification (`passed`, set by verify), has no drop
  reason (verify's `drop`, e.g. `truncated`) and, when scoring is on, has a relevance score of at
  least `score.min_score`; none from a prompt whose pass rate (`VerifiedRecord.prompt_pass_rate`:
  the share of its responses that pass and may be trained on) is above
  `export.sft_max_prompt_pass_rate`, and at most `export.max_sft_per_prompt` from one prompt (a
  seeded sample). Every passing response is either an SFT record or counted once under
  `sft_skipped:<reason>` (its drop reason, `score`, `duplicate`, `prompt_too_easy`,
  `per_prompt_cap`).
- DPO, query level (per prompt): chosen = distinct responses with pass rate >=
  `export.chosen_min_pass_rate`, no drop reason (and, when scoring is on, a score >=
  `score.min_score`); rejected = distinct responses with pass rate <=
  `export.rejected_max_pass_rate`, truncated ones only when `export.truncated_rejected` (the rule
  is `PairBounds.may_choose/may_reject`, which online DPO uses too; `pairs.pair_sides` applies it).
  At most `export.max_pairs_per_prompt` pairs, spread over as many different responses as possible
  (`pairs.pair_up`); none from a prompt whose outcomes are less mixed than
  `export.dpo_min_prompt_mix` (mix: min(prompt pass rate, 1 - prompt pass rate)), those counted
  `dpo_query_skipped:prompt_not_mixed`. A pair needs a chosen and a rejected, so its prompt is
  mixed already unless its chosen does not pass verify's keep rule (a pass rate of exactly 0.5
  under the paper's > 0.5); a value such as 0.25 asks for more balanced outcomes. verified.jsonl
  files made before responses had a finish reason have no drop reasons, and export them as before.
- DPO, instruction level (per kept instruction, from its cross-validated test cases): the prompt is
  the instruction alone; chosen = a case input labelled True, rejected = one labelled False. The
  cases are run again on the instruction's kept functions, and the same pass-rate bounds apply, so
  every pair is one the functions themselves tell apart.

- Combinations (stage compose): a response's pass rate is the share of constituents that hold and
  it passes only when all hold (verify), so every SFT record of a combination holds every
  constraint, and names them (`instruction_ids`). A DPO pair of a combination, at either level, has
  a chosen that holds every constraint and a rejected that holds at least `export.compose_margin`
  fewer (`compose_bounds`). Per combination the funnel counts `combinations:satisfied` (some
  response holds all constraints) or `combinations:unsatisfied`, and
  `combinations:proven_by_response` where compose found no test case that proved it; a combination
  the LLM called conflicting (compose's `llm_check`) and no case proved is counted
  `combinations:llm_conflict_overridden` when a response holds every constraint, else
  `combinations:llm_conflict`. Its SFT records and DPO pairs name the constituents (`instruction_ids`).

Pair order and the SFT sample of a capped prompt are drawn from generators seeded by the global seed
and the prompt (instruction) id, so the output is the same on every run. The funnel counts the
prompts whose responses all pass, all fail or are mixed (`prompts:all_pass` ...). Export sees all
records at once (not sharded).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from ..pairs import PairBounds, pair_sides, pair_up
from ..records import CrossvalRecord, DPORecord, Message, QueryRecord, SFTRecord, VerifiedRecord, VerifiedResponse
from ..rundir import DPO, SFT
from .base import Context, Drop, Stage
from .compose import constituent_holds
from .verify import INSTRUCTIONS, QUERIES


def _user(text: str) -> list[Message]:
    return [Message(role="user", content=text)]


def _assistant(text: str) -> list[Message]:
    return [Message(role="assistant", content=text)]


def constituent_ids(instruction: CrossvalRecord) -> list[str] | None:
    """The instruction ids a combination's training records name (None: not a combination)."""
    return [c.instruction_id for c in instruction.constituents] if instruction.constituents else None


def compose_bounds(bounds: PairBounds, constituents: int, margin: int) -> PairBounds:
    """The pair bounds of a combination, over the share of its constituents that hold: a chosen holds
    them all, a rejected at least `margin` fewer (none, when the margin is the combination's size)."""
    return bounds.model_copy(
        update={"chosen_min_pass_rate": 1.0, "rejected_max_pass_rate": max(0, constituents - margin) / constituents}
    )


class ExportStage(Stage[VerifiedRecord]):
    name = "export"
    output = SFT.name
    input = "score"
    output_type = SFTRecord
    uses_sandbox = True
    also_writes = {DPORecord: DPO.name}
    needs = (QUERIES, INSTRUCTIONS)
    sharded = False

    reads = (
        "export",
        "verify",  # instruction-level pairs: which constraints a response holds (`verify.threshold()`)
        "sandbox",
        "seed",
        # a chosen needs a judge's score when scoring is on (`score.active`: off with the embedded model)
        "score.enabled",
        "score.min_score",
        "score.llm",  # the score role's own model, when it has one: laid over the whole `llm` section
        "llm",
    )

    def run(self, records: list[VerifiedRecord], ctx: Context) -> Iterable[SFTRecord | DPORecord | Drop]:
        queries = ctx.index(QUERIES, "id", QueryRecord)
        instructions = ctx.index(INSTRUCTIONS, "instruction_id", CrossvalRecord)
        satisfied: dict[str, bool] = {}
        for record in records:
            query = queries.get(record.prompt_id)
            instruction = instructions.get(query.instruction_id) if query else None
            if query is None or instruction is None:
                yield Drop(record, "unknown_prompt" if query is None else "unknown_instruction")
                continue
            functions = [f.source for f in instruction.functions]
            ctx.count(f"prompts:{record.prompt_outcome}")
            if instruction.constituents:
                key = instruction.instruction_id
                satisfied[key] = satisfied.get(key, False) or any(r.passed for r in record.responses)
            sft = self._sft(record, query.prompt, instruction, functions, ctx)
            pairs = self._query_pairs(record, query.prompt, instruction, functions, ctx)
            yield from sft
            yield from pairs
            if not sft and not pairs:
                yield Drop(record, "nothing_exported")
        for key, ok in satisfied.items():
            ctx.count("combinations:satisfied" if ok else "combinations:unsatisfied")
            if ok and instructions[key].evidence == "unproven":
                ctx.count("combinations:proven_by_response")
            check = instructions[key].llm_check
            if check is not None and check.verdict == "conflict" and instructions[key].evidence == "unproven":
                # The LLM's verdict stands unless a response proves it wrong (compose counted the cases that did).
                ctx.count("combinations:llm_conflict_overridden" if ok else "combinations:llm_conflict")
        # crossval and backtranslate both write CrossvalRecords
        yield from self._instruction_pairs(cast("list[CrossvalRecord]", ctx.needs[INSTRUCTIONS]), ctx)

    # --------------------------------------------------------------------------------- helpers
    def _score_ok(self, response: VerifiedResponse, ctx: Context) -> bool:
        score = ctx.config.score
        return not score.active(ctx.config.llm_for("score")) or (
            response.score is not None and response.score >= score.min_score
        )

    def _sft(
        self, record: VerifiedRecord, prompt: str, instruction: CrossvalRecord, functions: list[str], ctx: Context
    ) -> list[SFTRecord]:
        parts = constituent_ids(instruction)
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
                        instruction_id=instruction.instruction_id,
                        functions=functions,
                        pass_rate=response.pass_rate,
                        instruction_ids=parts,
                    )
                )
        cfg = ctx.config.export
        if out and record.prompt_pass_rate > cfg.sft_max_prompt_pass_rate:
            ctx.count("sft_skipped:prompt_too_easy", len(out))
            return []
        cap = cfg.max_sft_per_prompt
        if cap is not None and len(out) > cap:
            ctx.count("sft_skipped:per_prompt_cap", len(out) - cap)
            keep = sorted(ctx.rng("export.sft", record.prompt_id).sample(range(len(out)), cap))
            out = [out[i] for i in keep]
        return out

    def _bounds(self, instruction: CrossvalRecord, ctx: Context) -> PairBounds:
        cfg = ctx.config.export
        if not instruction.constituents:
            return cfg
        return compose_bounds(cfg, len(instruction.constituents), cfg.compose_margin)

    def _query_pairs(
        self, record: VerifiedRecord, prompt: str, instruction: CrossvalRecord, functions: list[str], ctx: Context
    ) -> list[DPORecord]:
        cfg = ctx.config.export
        bounds = self._bounds(instruction, ctx)
        responses = record.responses
        chosen, rejected = pair_sides(
            [r.text for r in responses],
            [r.pass_rate for r in responses],
            bounds,
            drops=[r.drop for r in responses],
            choosable=[self._score_ok(r, ctx) for r in responses],
        )
        pairs = pair_up(chosen, rejected, cfg, ctx.rng("export.query_pairs", record.prompt_id))
        if not pairs:
            ctx.count("dpo_query:no_chosen" if not chosen else "dpo_query:no_rejected")
        rate = record.prompt_pass_rate
        if pairs and min(rate, 1 - rate) < cfg.dpo_min_prompt_mix:
            ctx.count("dpo_query_skipped:prompt_not_mixed", len(pairs))
            pairs = []
        ctx.count("dpo_query_pairs", len(pairs))
        return [
            DPORecord(
                prompt=_user(prompt),
                chosen=_assistant(c),
                rejected=_assistant(r),
                level="query",
                functions=functions,
                instruction_ids=constituent_ids(instruction),
            )
            for c, r in pairs
        ]

    def _instruction_pairs(self, instructions: list[CrossvalRecord], ctx: Context) -> Iterable[DPORecord]:
        from ..sandbox import pass_rate

        threshold = ctx.config.verify.threshold()
        usable = [r for r in instructions if r.functions and r.cases]
        grids = (
            ctx.check_many([([f.source for f in r.functions], [c.input for c in r.cases]) for r in usable])
            if usable
            else []
        )
        for record, grid in zip(usable, grids):
            functions = [f.source for f in record.functions]
            bounds = self._bounds(record, ctx)
            chosen, rejected = [], []
            for j, case in enumerate(record.cases):
                outcomes = [grid[i][j] for i in range(len(functions))]
                if record.constituents:
                    holds = constituent_holds([o.value for o in outcomes], record.constituents, threshold)
                    rate = sum(holds) / len(holds)
                else:
                    rate = pass_rate(outcomes)
                if case.output and bounds.may_choose(rate):
                    chosen.append(case.input)
                elif not case.output and bounds.may_reject(rate):
                    rejected.append(case.input)
                else:
                    ctx.count("dpo_instruction:case_not_separable")
            pairs = pair_up(chosen, rejected, bounds, ctx.rng("export.instruction_pairs", record.instruction_id))
            ctx.count("dpo_instruction_pairs", len(pairs))
            for c, r in pairs:
                yield DPORecord(
                    prompt=_user(record.instruction),
                    chosen=_assistant(c),
                    rejected=_assistant(r),
                    level="instruction",
                    functions=functions,
                    instruction_ids=constituent_ids(record),
                )
