"""Stage `verify`: the pass rate of every response over its instruction's functions.

Each prompt's instruction is found through `queries.jsonl` (prompt id -> instruction id), and its
functions in `compose.jsonl` (else `backtranslate.jsonl`, else `crossval.jsonl`). Every function runs on every response
in the sandbox, one grid per prompt, all prompts of a shard in one call. A response's outcomes
are each function's bool, or None when the function failed (error, timeout, a non-bool such as
the string 'true'); its pass rate is the share of functions that returned True, so a failing
function counts against the response. A check whose sandbox worker died (`crash`) is no verdict:
the prompt is dropped as `sandbox_crash` and the pipeline redoes its shard on the next run.

A combination of instructions (stage compose) is verified per constraint: each constituent holds
when its own functions' pass rate is above the threshold (`holds`, one bool per constituent, in the
response's record), the response's pass rate is the share of constituents that hold, and it passes
only when every one holds. A prompt of a combination that no response satisfies is counted
`composed_prompts_unsatisfied`.

Every response is kept in `verified.jsonl`, the failing ones too: they are the rejected side of
the query-level DPO pairs. `passed` marks the responses that meet the keep rule, pass rate
strictly above `verify.threshold()` (paper: > 0.5; official release: > 0). A response the backend
cut off at `responses.max_tokens` (finish reason 'length') is verified and kept like the others,
with `drop: "truncated"`: it never becomes SFT data or a DPO chosen (the rule is in `pairs.py`).
Every other response meets the quality gate (`quality.py`, config section `quality`): degenerate
text (repetition by the Gopher rules, too short, an echo of the prompt, another language than the
query's, control-character garbage) is kept with its rule's reason code as `drop`, under the same
rule. A rule that the instruction's own passing test cases break is waived for its answers ("answer
in at most five words" makes short answers right). The funnel counts prompts in and out, and
responses checked, passed, truncated and dropped by each quality rule; `autoif run` warns when more
than `TRUNCATED_WARNING` of them were truncated (`warn_on_truncation`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from ..failures import CRASH, SANDBOX_CRASH
from ..pairs import TRUNCATED
from ..quality import drop_reasons, waived_rules
from ..records import CrossvalRecord, QueryRecord, ResponsesRecord, VerifiedRecord, VerifiedResponse
from ..rundir import VERIFIED
from .base import Context, Drop, Stage
from .compose import constituent_holds

log = logging.getLogger("autoif.verify")

INSTRUCTIONS = "compose|backtranslate|crossval"
QUERIES = "queries"
# Above this share of truncated responses the token limit is too low for the model's answers.
TRUNCATED_WARNING = 0.10


def functions_of(ctx: Context, prompt_id: str) -> tuple[QueryRecord | None, CrossvalRecord | None]:
    """The query record of a prompt and its instruction's record (None where unknown)."""
    query = ctx.index(QUERIES, "id", QueryRecord).get(prompt_id)
    instruction = ctx.index(INSTRUCTIONS, "instruction_id", CrossvalRecord).get(query.instruction_id) if query else None
    return query, instruction


def passes(pass_rate: float, threshold: float) -> bool:
    """The verify keep rule: strictly above the threshold (paper: > 0.5, official: > 0)."""
    return pass_rate > threshold


class VerifyStage(Stage[ResponsesRecord]):
    name = "verify"
    output = VERIFIED.name
    input = "responses"
    output_type = VerifiedRecord
    uses_sandbox = True
    needs = (INSTRUCTIONS, QUERIES)

    reads = ("verify", "sandbox", "quality")

    def run(self, records: list[ResponsesRecord], ctx: Context) -> Iterable[VerifiedRecord | Drop]:
        from ..sandbox import pass_rate

        threshold = ctx.config.verify.threshold()
        checkable: list[tuple[ResponsesRecord, QueryRecord, CrossvalRecord]] = []
        for record in records:
            query, instruction = functions_of(ctx, record.prompt_id)
            if query is None:
                yield Drop(record, "unknown_prompt")
            elif instruction is None:
                yield Drop(record, "unknown_instruction")
            elif not instruction.functions:
                yield Drop(record, "no_functions")
            elif not record.responses:
                yield Drop(record, "no_response")
            else:
                checkable.append((record, query, instruction))
        grids = (
            ctx.check_many(
                [
                    ([f.source for f in instruction.functions], [r.text for r in record.responses])
                    for record, _, instruction in checkable
                ]
            )
            if checkable
            else []
        )
        quality = ctx.config.quality
        waived: dict[str, frozenset[str]] = {}
        for (record, query, instruction), grid in zip(checkable, grids):
            if any(o.error == CRASH for row in grid for o in row):
                yield Drop(record, SANDBOX_CRASH)  # no verdict: the pipeline redoes the shard next run
                continue
            if instruction.instruction_id not in waived:
                accepted = [case.input for case in instruction.cases if case.output]
                waived[instruction.instruction_id] = waived_rules(accepted, instruction.instruction, quality)
            drops = drop_reasons(
                [r.text for r in record.responses],
                [r.finish_reason for r in record.responses],
                query.query,
                query.prompt,
                quality,
                waived[instruction.instruction_id],
            )
            verified = []
            for j, (response, drop) in enumerate(zip(record.responses, drops)):
                outcomes = [row[j] for row in grid]
                for outcome in outcomes:
                    if outcome.error:
                        ctx.count(f"function_outcome:{outcome.error}")
                holds = None
                if instruction.constituents:
                    holds = constituent_holds([o.value for o in outcomes], instruction.constituents, threshold)
                    rate, ok = sum(holds) / len(holds), all(holds)
                else:
                    rate = pass_rate(outcomes)
                    ok = passes(rate, threshold)
                ctx.count("responses_passed" if ok else "responses_failed")
                if drop:
                    ctx.count(drop)
                verified.append(
                    VerifiedResponse(
                        text=response.text,
                        pass_rate=rate,
                        outcomes=[o.value for o in outcomes],
                        passed=ok,
                        finish_reason=response.finish_reason,
                        drop=drop,
                        holds=holds,
                    )
                )
            if not any(r.passed and r.drop is None for r in verified):
                ctx.count("prompts_without_passing_response")
            if instruction.constituents and not any(r.passed for r in verified):
                ctx.count("composed_prompts_unsatisfied")
            yield VerifiedRecord(prompt_id=record.prompt_id, responses=verified)


def warn_on_truncation(funnel: dict) -> float | None:
    """Log one warning when verify's funnel counts say more than `TRUNCATED_WARNING` of the responses
    were cut off; returns the truncated share (None when verify checked no response)."""
    counts = funnel.get("stages", {}).get("verify", {}).get("counts", {})
    checked = counts.get("responses_passed", 0) + counts.get("responses_failed", 0)
    if not checked:
        return None
    share = counts.get(TRUNCATED, 0) / checked
    if share > TRUNCATED_WARNING:
        log.warning(
            "%d of %d responses (%.0f%%) were cut off at responses.max_tokens and are not trained on; "
            "raise responses.max_tokens",
            counts[TRUNCATED],
            checked,
            100 * share,
        )
    return share
