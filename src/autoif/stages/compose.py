"""Stage `compose`: prompts that combine several kept instructions, the way real prompts carry
several constraints at once ("under 100 words, all lowercase, end with a question").

Input: the instructions that survived back-translation. They all pass through unchanged, followed
by the combinations: `compose.combinations(n)` draws (`compose.count`, else `compose.ratio` x the
instructions), each of a size drawn by the `compose.sizes` weights, its instructions drawn without
replacement, all from one generator seeded by the global seed, so the draw depends on the input
alone. A set of instructions is drawn once at most.

A combination is one instruction record (`CrossvalRecord`): its text joins the constituents' texts
by a template (`JOINS`, one drawn per combination), its functions are all of theirs in order, and
`constituents` names each instruction with the range of the functions that are its own. Conflicts
are found, not guessed:

- declared: two built-in library constituents that the library declares incompatible
  (`library/conflicts.py`: lowercase vs uppercase, at most 50 words vs at least 100...) drop the
  combination as `declared_conflict`, the rule counted as `declared_conflict:<rule>`;
- execution: every test case of the constituents, and their accepted cases joined (one after the
  other, both orders), run through every function of the combination in the sandbox. A text that
  passes them all proves the constraints can hold together (`evidence`: `case` or
  `joined_cases`); with none the combination is kept as `unproven`, and verify later shows whether
  some response satisfies it (export counts `combinations:unsatisfied`). The combination's cases
  are these texts, labelled True when they pass every function.

- LLM (`compose.llm_conflict_check`): a combination with an LLM-written (non-library) instruction,
  which no declared rule covers, goes to the supervision LLM, and its verdict is recorded
  (`llm_check`, counted `llm_check:<verdict or error>`). Execution overrides it: a combination the
  LLM calls conflicting is kept, counted `llm_conflict_overridden:<evidence>` when a case proves it
  compatible, and otherwise left to its responses (export counts `combinations:llm_conflict` when
  none holds every constraint, `combinations:llm_conflict_overridden` when one does). An unproven
  combination that no response satisfies is never trained on, whatever the verdict, so keeping it
  only costs its responses.

The text is the template join, or with `compose.rewrite: llm` one instruction the LLM writes, used
when back-translation with NLI finds it keeps every constraint (`compose_llm.rewrites`); the
rewrite is recorded either way (`rewrite`, counted `rewrite:kept` or `rewrite:rejected:<reason>`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from functools import lru_cache
from itertools import combinations
from typing import Any

from ..config import Config
from ..prompts import template as prompt_template
from ..records import CaseResult, ConflictCheck, Constituent, CrossvalRecord, Evidence, Rewrite
from ..rundir import COMPOSE
from .base import Context, Drop, Stage
from .compose_llm import conflict_checks, rewrites
from .queries import closed

LIBRARY_PREFIX = "lib-"  # stage seeds' id of a library instruction: "lib-<constraint>-<index>"
# How constituent texts are joined into one instruction: in one paragraph, or as a list of rules.
JOINS = ("{inline}", "Follow all of these rules:\n{bullets}", "{first} In addition: {rest}")
ATTEMPTS = 20  # draws per wanted combination before the input is taken to hold no more distinct ones


@lru_cache(maxsize=4)
def _library(seed: int, per_constraint: int) -> dict[str, tuple[str, str, dict[str, Any]]]:
    from .library import build_library

    return {LIBRARY_PREFIX + e.id: (e.instruction, e.constraint, e.params) for e in build_library(seed, per_constraint)}


def library_constraint(record: CrossvalRecord, config: Config) -> tuple[str, dict[str, Any]] | None:
    """The library constraint and parameters behind an instruction record, None when it is not a
    library instruction of this run (its id and text must both match what stage seeds made)."""
    entry = _library(config.seed, config.seeds.library_per_constraint).get(record.instruction_id)
    if entry is None or entry[0] != record.instruction:
        return None
    return entry[1], entry[2]


def join_text(texts: Sequence[str], template: str) -> str:
    sentences = [closed(t) for t in texts]
    return template.format(
        inline=" ".join(sentences),
        bullets="\n".join(f"- {s}" for s in sentences),
        first=sentences[0],
        rest=" ".join(sentences[1:]),
    )


def combination_id(instruction_ids: Sequence[str]) -> str:
    return "cmp-" + hashlib.sha256("\x00".join(instruction_ids).encode()).hexdigest()[:16]


def joined_cases(records: Sequence[CrossvalRecord]) -> list[str]:
    """Each constituent's i-th accepted case, one after the other, in order and reversed: a text made
    for one constraint at its start (an opening) and another at its end (an ending)."""
    accepted = [[c.input for c in r.cases if c.output] for r in records]
    if not all(accepted):
        return []
    texts: list[str] = []
    for i in range(max(map(len, accepted))):
        parts = [cases[i % len(cases)] for cases in accepted]
        texts += ["\n\n".join(parts), "\n\n".join(reversed(parts))]
    return list(dict.fromkeys(texts))


def constituent_holds(
    values: Sequence[bool | None], constituents: Sequence[Constituent], threshold: float
) -> list[bool]:
    """Per constituent, whether it holds: its own functions' pass rate above `threshold` (verify's
    keep rule, applied to each constraint of a combination)."""
    holds = []
    for c in constituents:
        own = values[c.start : c.stop]
        holds.append(sum(v is True for v in own) / len(own) > threshold)
    return holds


class ComposeStage(Stage[CrossvalRecord]):
    name = "compose"
    output = COMPOSE.name
    input = "backtranslate|crossval"
    output_type = CrossvalRecord
    uses_sandbox = True
    uses_llm = True  # the conflict check and the rewrite (the LLM is opened only when one is asked)
    sharded = False  # a combination draws from all instructions

    reads = (
        "compose",
        "llm",
        "sandbox",
        "seed",
        "seeds.library_per_constraint",  # which instructions are the library's (`library_constraint`)
        # the rewrite's check: stage 1's back-translation requests and NLI judge
        "backtranslate.max_functions",
        "backtranslate.temperature",
        "backtranslate.max_tokens",
        "backtranslate.nli",
    )

    def key_inputs(self, config):
        prompts = ("compose_conflict", "compose_rewrite", "backtranslate", "nli")
        return {"joins": list(JOINS), "prompts": {name: prompt_template(name) for name in prompts}}

    def run(self, records: list[CrossvalRecord], ctx: Context) -> Iterable[CrossvalRecord | Drop]:
        yield from records
        cfg = ctx.config.compose
        atomic = [r for r in records if r.functions and not r.constituents]
        wanted = cfg.combinations(len(atomic))
        if not cfg.enabled or wanted == 0:
            return
        sizes = [s for s in sorted(cfg.sizes) if s <= len(atomic) and cfg.sizes[s] > 0]
        if not sizes:
            ctx.count("too_few_instructions")
            return
        weights = [cfg.sizes[s] for s in sizes]
        constraints = [library_constraint(r, ctx.config) for r in atomic]
        rng = ctx.rng("compose")
        drawn: set[frozenset[int]] = set()
        kept: list[tuple[list[int], str]] = []
        for _ in range(wanted * ATTEMPTS):
            if len(drawn) == wanted:
                break
            members = rng.sample(range(len(atomic)), rng.choices(sizes, weights)[0])
            if frozenset(members) in drawn:
                continue
            drawn.add(frozenset(members))
            ctx.count(f"combinations_drawn:{len(members)}")
            join = JOINS[rng.randrange(len(JOINS))]
            rule = self._declared_conflict([constraints[i] for i in members])
            if rule is not None:
                ctx.count(f"declared_conflict:{rule}")
                # The combination never becomes a record: the drop names its instructions.
                yield Drop([atomic[i].instruction_id for i in members], "declared_conflict")
            else:
                kept.append((members, join))
        if len(drawn) < wanted:
            ctx.count("fewer_distinct_combinations", wanted - len(drawn))

        candidates = []
        for members, _ in kept:
            parts = [atomic[i] for i in members]
            own = list(dict.fromkeys(c.input for r in parts for c in r.cases))
            candidates.append((own, joined_cases(parts)))
        grids = (
            ctx.check_many(
                [
                    ([f.source for i in members for f in atomic[i].functions], own + joined)
                    for (members, _), (own, joined) in zip(kept, candidates)
                ]
            )
            if kept
            else []
        )
        parts_of = [[atomic[i] for i in members] for members, _ in kept]
        checks: list[ConflictCheck | None] = [None] * len(kept)
        if cfg.llm_conflict_check:
            asked = [k for k, (members, _) in enumerate(kept) if any(constraints[i] is None for i in members)]
            for k, check in zip(asked, conflict_checks([parts_of[k] for k in asked], ctx)):
                checks[k] = check
                ctx.count(f"llm_check:{check.verdict or check.error}")
        rewritten: list[Rewrite | None] = [*rewrites(parts_of, ctx)] if cfg.rewrite == "llm" else [None] * len(kept)
        for (members, join), (own, joined), grid, parts, check, rewrite in zip(
            kept, candidates, grids, parts_of, checks, rewritten
        ):
            texts = own + joined
            satisfied = [all(row[j].passed for row in grid) for j in range(len(texts))]
            evidence: Evidence = (
                "case" if any(satisfied[: len(own)]) else "joined_cases" if any(satisfied[len(own) :]) else "unproven"
            )
            ctx.count(f"evidence:{evidence}")
            if check is not None and check.verdict == "conflict" and evidence != "unproven":
                ctx.count(f"llm_conflict_overridden:{evidence}")
            if rewrite is not None:
                ctx.count("rewrite:kept" if rewrite.rejected is None else f"rewrite:rejected:{rewrite.rejected}")
            cases = [
                CaseResult(input=text, output=ok, accuracy=sum(row[j].passed == ok for row in grid) / len(grid))
                for j, (text, ok) in enumerate(zip(texts, satisfied))
            ]
            record = self._combine(parts, join, cases, [constraints[i] for i in members], evidence)
            if rewrite is not None and rewrite.rejected is None:
                record.instruction = rewrite.text
            record.llm_check, record.rewrite = check, rewrite
            yield record

    @staticmethod
    def _declared_conflict(constraints: list[tuple[str, dict[str, Any]] | None]) -> str | None:
        from .library.conflicts import declared_conflict

        for a, b in combinations([c for c in constraints if c is not None], 2):
            rule = declared_conflict(a[0], a[1], b[0], b[1])
            if rule is not None:
                return rule
        return None

    @staticmethod
    def _combine(
        parts: list[CrossvalRecord],
        template: str,
        cases: list[CaseResult],
        constraints: list[tuple[str, dict[str, Any]] | None],
        evidence: Evidence,
    ) -> CrossvalRecord:
        constituents, start = [], 0
        for part, constraint in zip(parts, constraints):
            stop = start + len(part.functions)
            constituents.append(
                Constituent(
                    instruction_id=part.instruction_id,
                    start=start,
                    stop=stop,
                    constraint=constraint[0] if constraint else None,
                )
            )
            start = stop
        return CrossvalRecord(
            instruction_id=combination_id([p.instruction_id for p in parts]),
            instruction=join_text([p.instruction for p in parts], template),
            functions=[f for p in parts for f in p.functions],
            cases=cases,
            constituents=constituents,
            evidence=evidence,
        )
