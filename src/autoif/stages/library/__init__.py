"""autoif's built-in verified constraint library.

Atomic, code-checkable constraints (counts, keywords, case, punctuation, formats, start and end
phrases, language), each with sampled parameters, verification functions and test cases written
by us. Stage `seeds` adds them when the supervision model is too weak to write working functions
(the embedded SmolLM2), `verifiers` hands their functions and cases to crossval like any LLM
answer, and the verifiers prompt takes its few-shot example from here.

    from autoif.stages.library import build_library, CONSTRAINTS
    entries = build_library(seed=42, per_constraint=2)
    CONSTRAINTS["length:max_words"]        # a KeyError with "did you mean" for an unknown id

Instances depend only on (seed, constraint id, index): adding a constraint changes no other.
"""

from __future__ import annotations

from ...seeding import seeded_rng
from .base import Constraint, LibraryEntry, UnknownConstraint
from .constraints import CONSTRAINTS

__all__ = ["CONSTRAINTS", "Constraint", "LibraryEntry", "UnknownConstraint", "build_library"]

# Draws per wanted instance before a constraint is taken to have no more distinct ones.
_ATTEMPTS = 25


def build_library(seed: int, per_constraint: int = 1) -> list[LibraryEntry]:
    """`per_constraint` instances of every constraint, deterministic for `seed`.

    Instances of one constraint differ in their parameters; a constraint with fewer distinct
    parameter sets than asked (one without parameters has a single one) gives fewer instances.
    """
    if per_constraint < 1:
        raise ValueError(f"per_constraint must be at least 1, got {per_constraint}")
    entries = []
    for cid, constraint in CONSTRAINTS.items():
        seen: list[dict] = []
        for attempt in range(per_constraint * _ATTEMPTS):
            if len(seen) == per_constraint:
                break
            rng = seeded_rng(seed, cid, attempt)
            params = constraint.sample(rng)
            if params in seen:
                continue
            index = len(seen)
            seen.append(params)
            passing, failing = constraint.cases(params, rng)
            entries.append(
                LibraryEntry(
                    id=f"{cid}-{index}",
                    constraint=cid,
                    instruction=constraint.instruction(params, rng),
                    functions=constraint.bound_functions(params),
                    cases=_interleave(passing, failing),
                    params=dict(params),
                )
            )
    return entries


def _interleave(passing: list[str], failing: list[str]) -> list[dict]:
    """Cases alternating true/false, so any prefix (a few-shot example) shows both kinds."""
    cases = []
    for i in range(max(len(passing), len(failing))):
        cases += [{"input": text, "output": True} for text in passing[i : i + 1]]
        cases += [{"input": text, "output": False} for text in failing[i : i + 1]]
    return cases
