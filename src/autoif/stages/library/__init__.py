"""autoif's built-in verified constraint library.

Atomic, code-checkable constraints (counts, keywords, case, punctuation, formats, start and end
phrases, language), each with sampled parameters, verification functions and test cases written
by us. Stage `seeds` adds them when the supervision model is too weak to write working functions
(the embedded SmolLM2), `verifiers` hands their functions and cases to crossval like any LLM
answer, and the verifiers prompt takes its few-shot example from here.

    from autoif.stages.library import build_library, CONSTRAINTS
    entries = build_library(seed=42, per_constraint=2)
    CONSTRAINTS["length:max_words"]        # a KeyError with "did you mean" for an unknown id

An instance is a distinct (parameters, phrasing) pair: instance i of a constraint draws parameters
and one of the constraint's phrasings on its side of the hold-out, skipping pairs already taken.
Every constraint's train side has at least 12 pairs (a constraint without parameters has 16
phrasings, 13 of them train), so `per_constraint=12` gives 12 instances of each of them.
Instances depend only on (seed, split, constraint id, index): adding a constraint changes no other.

Dev hold-out (`autoif eval dev`, rule and keys in `autoif/devsplit.py`): `build_library(...,
split="train")`, what the pipeline trains on, never yields a dev phrasing or dev parameters;
`split="dev"` yields only dev phrasings and, where the constraint's parameters are held out, dev
parameters. Both sides stay usable, by rules fixed per constraint (no seed involved):

- phrasings: the round(DEV_SHARE x n) phrasings (one at least) with the lowest `dev_score` are dev,
  the others train, so a constraint with three phrasings trains on two and is tested on the third;
- parameters are held out only when a probe of the constraint's parameter space (PARAM_PROBES
  draws) finds at least one dev set and MIN_TRAIN_PARAMS train sets; otherwise (no parameters,
  a single set, or a set as small as the postscript's two markers) only the phrasing is held out.
"""

from __future__ import annotations

from functools import cache

from ...devsplit import DEV_SHARE, check_split, dev_score, is_dev, params_key, phrasing_key
from ...seeding import seeded_rng
from .base import Constraint, LibraryEntry, UnknownConstraint
from .constraints import CONSTRAINTS

__all__ = [
    "CONSTRAINTS",
    "Constraint",
    "LibraryEntry",
    "UnknownConstraint",
    "build_library",
    "params_held_out",
    "split_phrasings",
]

# Draws per wanted instance before a constraint is taken to have no more distinct ones.
_ATTEMPTS = 25
# Draws that map a constraint's parameter space for the hold-out decision, and the fewest distinct
# training sets a constraint keeps when its parameters are held out.
PARAM_PROBES = 200
MIN_TRAIN_PARAMS = 2


@cache
def split_phrasings(constraint_id: str, split: str) -> tuple[str, ...]:
    """The constraint's phrasings on one side of the dev hold-out (never empty on either side)."""
    check_split(split)
    phrasings = CONSTRAINTS[constraint_id].phrasings
    if len(phrasings) < 2:
        raise ValueError(f"{constraint_id}: a constraint needs two phrasings at least, one to hold out")
    ranked = sorted(phrasings, key=lambda p: dev_score(phrasing_key(constraint_id, p)))
    dev = set(ranked[: max(1, round(DEV_SHARE * len(phrasings)))])
    return tuple(p for p in phrasings if (p in dev) == (split == "dev"))


@cache
def params_held_out(constraint_id: str) -> bool:
    """Whether the constraint's parameter sets are split between train and dev (see the module doc)."""
    constraint = CONSTRAINTS[constraint_id]
    keys = {
        params_key(constraint_id, constraint.sample(seeded_rng("devsplit", constraint_id, i)))
        for i in range(PARAM_PROBES)
    }
    dev = sum(map(is_dev, keys))
    return dev >= 1 and len(keys) - dev >= MIN_TRAIN_PARAMS


def _on_side(constraint_id: str, params: dict, split: str) -> bool:
    if not params_held_out(constraint_id):
        return True
    return is_dev(params_key(constraint_id, params)) == (split == "dev")


def build_library(seed: int, per_constraint: int = 1, split: str = "train") -> list[LibraryEntry]:
    """`per_constraint` instances of every constraint, deterministic for `seed`.

    An instance is a distinct (parameters, phrasing) pair of the constraint on one side of the dev
    hold-out; a constraint whose side has fewer pairs than asked gives fewer instances.
    split: "train" (the default, what training data is made of) or "dev" (the held-out instances).
    """
    if per_constraint < 1:
        raise ValueError(f"per_constraint must be at least 1, got {per_constraint}")
    check_split(split)
    entries = []
    for cid, constraint in CONSTRAINTS.items():
        phrasings = split_phrasings(cid, split)
        taken: set[tuple[str, str]] = set()
        for attempt in range(per_constraint * _ATTEMPTS):
            if len(taken) == per_constraint:
                break
            rng = seeded_rng(seed, cid, attempt)
            params = constraint.sample(rng)
            phrasing = rng.choice(phrasings)
            pair = (params_key(cid, params), phrasing)
            if pair in taken or not _on_side(cid, params, split):
                continue
            index = len(taken)
            taken.add(pair)
            passing, failing = constraint.cases(params, rng)
            entries.append(
                LibraryEntry(
                    id=f"{cid}-{index}",
                    constraint=cid,
                    instruction=constraint.instruction(params, phrasing),
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
