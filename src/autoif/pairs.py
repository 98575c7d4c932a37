"""Preference pairs from texts rated by their verification functions, the one way autoif makes them:
the export stage pairs each prompt's verified responses (query level) and each instruction's test
cases (instruction level), online DPO pairs each iteration's samples.

`PairBounds` says which texts make a chosen and a rejected text (the paper: chosen pass rate >= 0.5,
rejected == 0) and how many pairs one prompt gives; it is a section of both `export` and
`train online-dpo` settings. `pair_sides` applies it to one prompt's rated responses, and `pair_up`
picks the pairs.

The rule for texts with a drop reason, stated here once for SFT export, both DPO levels, online DPO
and the GRPO reward: such a text is never a training target (no SFT record, no chosen, no reward),
and it is a rejected only when its reason is `truncated` and `truncated_rejected` is set. The
reasons (`quality.drop_reasons`, one statement for verify, online DPO and GRPO) are `truncated`, a
response cut off at the token limit, whose pass rate says nothing about the constraint (a
word-count limit is met because the text stopped, an ending is missing because it never came), and
the quality gate's codes (repetition, too short, echo, other language, garbage): degenerate text
is not a lesson in what to avoid either, so it pairs with nothing.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, Field, model_validator

TRUNCATED = "truncated"  # the drop reason of a text cut off at the token limit


def truncation(finish_reason: str | None) -> str | None:
    """The drop reason a backend's finish reason implies: `truncated` for 'length', else None."""
    return TRUNCATED if finish_reason == "length" else None


class PairBounds(BaseModel):
    """Which texts may be paired, and how many pairs per prompt (mixed into a settings section)."""

    chosen_min_pass_rate: float = Field(0.5, ge=0, le=1, description="DPO: chosen responses pass at least this")
    rejected_max_pass_rate: float = Field(0.0, ge=0, le=1, description="DPO: rejected responses pass at most this")
    max_pairs_per_prompt: int = Field(4, ge=1, description="DPO pairs built from one prompt at most")
    truncated_rejected: bool = Field(
        False,
        description="DPO: a response cut off at the token limit may be a rejected (never a chosen); off by "
        "default: a cut-off text teaches length, not the constraint",
    )

    @model_validator(mode="after")
    def _pairs_separable(self) -> PairBounds:
        if self.rejected_max_pass_rate >= self.chosen_min_pass_rate:
            raise ValueError(
                f"rejected_max_pass_rate ({self.rejected_max_pass_rate}) must be below "
                f"chosen_min_pass_rate ({self.chosen_min_pass_rate})"
            )
        return self

    def may_choose(self, pass_rate: float, drop: str | None = None) -> bool:
        return drop is None and pass_rate >= self.chosen_min_pass_rate

    def may_reject(self, pass_rate: float, drop: str | None = None) -> bool:
        allowed = drop is None or (drop == TRUNCATED and self.truncated_rejected)
        return allowed and pass_rate <= self.rejected_max_pass_rate


def pair_sides(
    texts: Sequence[str],
    rates: Sequence[float],
    bounds: PairBounds,
    drops: Sequence[str | None] | None = None,
    choosable: Sequence[bool] | None = None,
) -> tuple[list[str], list[str]]:
    """One prompt's responses that may be a chosen and those that may be a rejected (for `pair_up`),
    by their pass rates and drop reasons (`drops[i]`, e.g. `truncated`; None: none), the rule of
    `bounds.may_choose/may_reject`. `choosable[i]` False keeps a response from being a chosen for a
    reason outside the bounds (export: a relevance score below `score.min_score`); it may still be a
    rejected."""
    drops = drops if drops is not None else [None] * len(texts)
    choosable = choosable if choosable is not None else [True] * len(texts)
    chosen = [t for t, p, d, ok in zip(texts, rates, drops, choosable) if ok and bounds.may_choose(p, d)]
    rejected = [t for t, p, d in zip(texts, rates, drops) if bounds.may_reject(p, d)]
    return chosen, rejected


def pair_up(
    chosen: Iterable[str], rejected: Iterable[str], bounds: PairBounds, rng: random.Random
) -> list[tuple[str, str]]:
    """Up to `bounds.max_pairs_per_prompt` (chosen, rejected) pairs of distinct texts, each new pair
    made of the least-used texts, so the pairs spread over as many different texts as there are.

    Both sides are deduplicated, then shuffled by `rng`, so which texts pair up is seeded, not input
    order.
    """
    chosen, rejected = list(dict.fromkeys(chosen)), list(dict.fromkeys(rejected))
    rng.shuffle(chosen)
    rng.shuffle(rejected)
    candidates = [(i, j) for i in range(len(chosen)) for j in range(len(rejected)) if chosen[i] != rejected[j]]
    used_c: Counter = Counter()
    used_r: Counter = Counter()
    pairs: list[tuple[str, str]] = []
    while candidates and len(pairs) < bounds.max_pairs_per_prompt:
        best = min(range(len(candidates)), key=lambda k: used_c[candidates[k][0]] + used_r[candidates[k][1]])
        i, j = candidates.pop(best)
        used_c[i] += 1
        used_r[j] += 1
        pairs.append((chosen[i], rejected[j]))
    return pairs
