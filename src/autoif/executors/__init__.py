"""Executors decide where a stage's shards run; they know nothing of a stage's insides.

`local` (`executors/local.py`) runs shards one after another in this process (each stage batches
its own LLM requests and sandbox checks, which is where the parallelism is); `ray`
(`executors/ray.py`) spreads them over the actors of a Ray cluster. Both only yield
`(shard index, ShardResult)` as shards finish, each made by `run_shard`: writing, resuming and
assembling the outputs belong to the pipeline, so the files are the same whichever executor ran them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from ..config import Config
from ..cost import BudgetReached
from ..failures import Failed
from ..jsonl import dumps_records
from ..records import Record
from ..registry import Registry
from ..stages.base import Context, Drop, Stage


@dataclass
class ShardResult:
    records: list[Record]
    dropped: dict[str, int]
    counts: dict[str, int]
    llm: dict[str, int] | None = None  # what the shard cost the LLM backend (cache hits, tokens...), if used
    texts: dict[str, str] | None = None  # the records as the JSONL text of each output file, once packed
    failures: list[Failed] = field(default_factory=list)  # work tried, by place, and how much of it failed

    @property
    def finished(self) -> bool:
        """False when some of its work failed: the shard is to be run again."""
        return not any(f.failed for f in self.failures)

    def file_texts(self, files: dict[type[Record], str]) -> dict[str, str]:
        """Output file name -> this shard's JSONL text for it (`files`: the stage's `files()`)."""
        if self.texts is not None:
            return self.texts
        by_file: dict[str, list[Record]] = {f: [] for f in files.values()}
        for record in self.records:
            by_file[files[type(record)]].append(record)
        return {f: dumps_records(recs) for f, recs in by_file.items()}

    def packed(self, files: dict[type[Record], str]) -> ShardResult:
        """The same result with the records as text: what a remote worker sends back, since JSON
        written where the records are made is cheaper than pickling objects there and rebuilding
        them in the driver only to serialize them again."""
        return ShardResult([], self.dropped, self.counts, self.llm, self.file_texts(files), self.failures)


def run_shard(stage: Stage, records: list[Record], ctx: Context) -> ShardResult:
    """Run one stage over one shard, separating kept records from counted drops."""
    ctx.counts = Counter()
    ctx.failures = []
    before = ctx.llm_stats or {}
    kept: list[Record] = []
    dropped: Counter[str] = Counter()
    try:
        for item in stage.run(records, ctx):
            if isinstance(item, Drop):
                dropped[item.reason] += 1
            else:
                kept.append(item)
    except BudgetReached as stop:
        # The samples answered before the stop were paid for: the pipeline keeps that with the shard.
        paid = ctx.llm_stats or {}
        stop.paid = (records, {k: v - before.get(k, 0) for k, v in paid.items()})
        raise
    after = ctx.llm_stats
    llm = None if after is None else {k: v - before.get(k, 0) for k, v in after.items()}
    failures = ctx.failures + ([ctx.llm_failed(llm)] if llm and llm.get("misses") else [])
    return ShardResult(kept, dict(dropped), dict(ctx.counts), llm, failures=failures)


class Executor(Protocol):
    """What the pipeline asks of an executor."""

    def prepare(self, stage: Stage) -> None:
        """Called before the stage's inputs are read (a cluster starts its workers meanwhile)."""

    def run(self, stage: Stage, shards: list[list[Record]], ctx: Context) -> Iterator[tuple[int, ShardResult]]:
        """Run `stage` on each shard; yield (index in `shards`, result) as each one finishes."""
        ...

    def close(self) -> None:
        """Release what the executor started (actors, a cluster)."""


# Imported only when chosen: the local executor never imports Ray.
EXECUTORS = Registry(
    "executor",
    {"local": "autoif.executors.local:LocalExecutor", "ray": "autoif.executors.ray:RayExecutor"},
)


def make_executor(config: Config) -> Executor:
    return EXECUTORS.load(config.executor.kind)(config)


__all__ = ["EXECUTORS", "Executor", "ShardResult", "make_executor", "run_shard"]
