"""Work that failed and is to be redone: LLM requests that gave up after their retries, and
sandbox checks during which the worker died (`crash`).

A failed request is not an answer and a crash is not a verdict: neither is cached, the record is
dropped (`llm_error`, `sandbox_crash`), the shard it belongs to is not marked finished (so a plain
rerun redoes that shard, its other requests served from the cache), and when more than
`llm.max_failed_share` of a stage's requests (`sandbox.max_crashed_share` of its checks) failed
the run stops there with one line (`WorkFailed`, exit 1: nothing in the input is wrong, and a
rerun may succeed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

LLM_ERROR = "llm_error"
SANDBOX_CRASH = "sandbox_crash"
# What a check whose worker died is, in the sandbox's outcomes and in the one line.
CRASH = "crash"
CRASHED = "a worker died or broke the protocol during the check"


class WorkFailed(Exception):
    """Too much of a stage's work failed: one line saying what, and that a rerun retries it.

    Not an `AutoifError` (exit 2, "fix your input"): the input is fine, the endpoint was not."""


@dataclass
class Failed:
    """Of the requests a shard (or a stage) sent to one place, how many failed, and why (the last
    failure's message, already free of secrets)."""

    where: str  # "requests to http://127.0.0.1:8000/v1"
    tried: int = 0
    failed: int = 0
    reason: str = ""
    code: str = LLM_ERROR  # how the funnel names them

    def add(self, other: Failed) -> None:
        self.tried += other.tried
        self.failed += other.failed
        self.reason = other.reason or self.reason

    def share(self) -> float:
        return self.failed / self.tried if self.tried else 0.0

    def line(self) -> str:
        return f"{self.failed} of {self.tried} {self.where} failed: {self.reason}; rerun to retry them"

    def as_dict(self) -> dict:
        return asdict(self)


def total(failures: list[Failed]) -> dict[str, Failed]:
    """The failures of several shards added up per place."""
    out: dict[str, Failed] = {}
    for f in failures:
        out.setdefault(f.where, Failed(f.where, code=f.code)).add(f)
    return out
