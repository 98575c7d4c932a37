"""Stage `crossval`: keep the functions and test cases that agree with each other by execution.

Per instruction: parse every raw generation (robustly; each failure counted by reason), take the
distinct functions and distinct (input, output) cases, run every function on every case in the
sandbox, then apply the keep rules of `crossval.preset` (the paper's text, or the official
release's code) with any threshold overridden on top.

How the rules read (`CrossvalConfig.resolved()`):
- a function that does not compile, defines no `evaluate` or imports a forbidden module is out;
- `min_functions` distinct valid functions and `min_cases` distinct cases are needed first;
- a case is kept when more than half of the valid functions agree with it (`majority`, paper) or
  when any one does (`any`, official). Agreeing means returning the case's bool: an error or a
  non-bool never agrees;
- a function is kept when its accuracy over the kept cases exceeds (paper) or reaches (official)
  `function_accuracy`;
- the instruction survives with at least one function and one case.

A check whose sandbox worker died (`crash`) is no verdict: the instruction is dropped as
`sandbox_crash` and the pipeline redoes its shard on the next run (`autoif.failures`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..failures import CRASH, SANDBOX_CRASH
from ..records import CaseResult, CrossvalRecord, FunctionResult, VerifierSamples
from ..rundir import CROSSVAL
from .base import Context, Drop, Stage
from .parsing import ParseFailure, parse_verifier_generation

# Outcome errors that mean the function never ran at all.
UNUSABLE = ("compile", "no_evaluate", "forbidden_import")


@dataclass
class Candidates:
    """The distinct functions and cases parsed from one instruction's generations."""

    functions: list[str] = field(default_factory=list)
    cases: list[tuple[str, bool]] = field(default_factory=list)
    parse_failures: Counter = field(default_factory=Counter)


@dataclass
class Selection:
    functions: list[tuple[str, float]]
    cases: list[tuple[str, bool, float]]
    reason: str | None  # why the instruction is dropped, None when kept
    counts: Counter


def collect(raw: Sequence[str]) -> Candidates:
    """Parse every generation; keep distinct functions (by stripped source) and distinct cases."""
    out = Candidates()
    seen_funcs: set[str] = set()
    seen_cases: set[tuple[str, bool]] = set()
    for text in raw:
        parsed = parse_verifier_generation(text)
        if isinstance(parsed, ParseFailure):
            out.parse_failures[parsed.reason] += 1
            continue
        for verifier in parsed:
            func = verifier.func.strip()
            if func not in seen_funcs:
                seen_funcs.add(func)
                out.functions.append(func)
            for case in verifier.cases:
                if case not in seen_cases:
                    seen_cases.add(case)
                    out.cases.append(case)
    return out


def cross_validate(functions: Sequence[str], cases: Sequence[tuple[str, bool]], grid, rules: dict) -> Selection:
    """Apply the keep rules to `grid[i][j]` = function i on case j's input (sandbox Outcomes)."""
    counts: Counter = Counter()
    valid = []
    for i in range(len(functions)):
        unusable = next((o.error for o in grid[i] if o.error in UNUSABLE), None)
        if unusable:
            counts[f"function_dropped:{unusable}"] += 1
        else:
            valid.append(i)
            for o in grid[i]:
                if o.error:
                    counts[f"function_outcome:{o.error}"] += 1

    def fail(reason: str) -> Selection:
        return Selection([], [], reason, counts)

    if len(valid) < max(1, rules["min_functions"]):
        return fail("too_few_functions")
    if len(cases) < max(1, rules["min_cases"]):
        return fail("too_few_cases")

    agree = [
        [grid[i][j].error is None and grid[i][j].value is expected for j, (_, expected) in enumerate(cases)]
        for i in valid
    ]
    case_accuracy = [sum(row[j] for row in agree) / len(valid) for j in range(len(cases))]
    keep_case = (lambda a: a > 0.5) if rules["case_rule"] == "majority" else (lambda a: a > 0)
    kept_cases = [j for j, acc in enumerate(case_accuracy) if keep_case(acc)]
    counts["case_dropped:disagreement"] += len(cases) - len(kept_cases)
    if not kept_cases:
        return fail("no_case_kept")

    threshold, strict = rules["function_accuracy"], rules["function_accuracy_strict"]
    kept_functions = []
    for row, i in zip(agree, valid):
        acc = sum(row[j] for j in kept_cases) / len(kept_cases)
        if acc > threshold or (not strict and acc == threshold):
            kept_functions.append((functions[i], acc))
        else:
            counts["function_dropped:low_accuracy"] += 1
    if not kept_functions:
        return fail("no_function_kept")
    kept = [(cases[j][0], cases[j][1], case_accuracy[j]) for j in kept_cases]
    return Selection(kept_functions, kept, None, counts)


class CrossvalStage(Stage[VerifierSamples]):
    name = "crossval"
    output = CROSSVAL.name
    input = "verifiers"
    output_type = CrossvalRecord
    uses_sandbox = True

    reads = ("crossval", "sandbox")

    def run(self, records: list[VerifierSamples], ctx: Context) -> Iterable[CrossvalRecord | Drop]:
        rules = ctx.config.crossval.resolved()
        candidates = [collect(r.raw) for r in records]
        for c in candidates:
            for reason, n in c.parse_failures.items():
                ctx.count(f"generation_unparsable:{reason}", n)
        checkable = [i for i, c in enumerate(candidates) if c.functions and c.cases]
        grids = ctx.check_many([(candidates[i].functions, [inp for inp, _ in candidates[i].cases]) for i in checkable])
        grid_of = dict(zip(checkable, grids))
        for i, (record, cand) in enumerate(zip(records, candidates)):
            if i not in grid_of:
                yield Drop(record, "no_function_parsed" if not cand.functions else "no_case_parsed")
                continue
            if any(o.error == CRASH for row in grid_of[i] for o in row):
                yield Drop(record, SANDBOX_CRASH)  # no verdict: the pipeline redoes the shard next run
                continue
            sel = cross_validate(cand.functions, cand.cases, grid_of[i], rules)
            for what, n in sel.counts.items():
                ctx.count(what, n)
            if sel.reason:
                yield Drop(record, sel.reason)
                continue
            yield CrossvalRecord(
                instruction_id=record.instruction_id,
                instruction=record.instruction,
                functions=[FunctionResult(source=f, accuracy=round(a, 6)) for f, a in sel.functions],
                cases=[CaseResult(input=inp, output=out, accuracy=round(a, 6)) for inp, out, a in sel.cases],
                source=record.source,
            )
