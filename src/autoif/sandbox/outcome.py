"""The typed result of one check: a function run on one response."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .protocol import CODE, ERRORS, FALSE, TRUE


@dataclass(frozen=True)
class Outcome:
    """`value` is the function's result when it returned a real bool, else None; `error` is one
    of ERRORS when it did not (every caller counts an error as a failure)."""

    value: bool | None
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.value is True


def pass_rate(outcomes: Sequence[Outcome]) -> float:
    """The share of outcomes whose value is True; errors count as failures; 0.0 for none."""
    if not outcomes:
        return 0.0
    return sum(1 for o in outcomes if o.value is True) / len(outcomes)


# Result byte -> Outcome, for all 256 byte values; anything not a final code reads as a crash
# (a worker that writes garbage into its result area is a crashed worker).
_CRASH = Outcome(None, "crash")
OUTCOME_OF_CODE: tuple[Outcome, ...] = tuple(
    Outcome(True)
    if code == TRUE
    else Outcome(False)
    if code == FALSE
    else Outcome(None, ERRORS[code - 3])
    if code in CODE.values()
    else _CRASH
    for code in range(256)
)

__all__ = ["Outcome", "pass_rate", "ERRORS", "OUTCOME_OF_CODE"]
