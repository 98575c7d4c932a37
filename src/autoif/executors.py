"""Executors decide where a stage's shards run; they know nothing of a stage's insides.

`local` runs shards one after another in this process (each stage batches its own LLM requests
and sandbox checks, which is where the parallelism is). Executors sit in a registry so that a
cluster executor can stand beside it without touching the pipeline.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Iterator

from .records import Record
from .stages.base import Context, Drop, Stage


@dataclass
class ShardResult:
    records: list[Record]
    dropped: dict[str, int]
    counts: dict[str, int]


def run_shard(stage: Stage, records: list[Record], ctx: Context) -> ShardResult:
    """Run one stage over one shard, separating kept records from counted drops."""
    ctx.counts = Counter()
    kept: list[Record] = []
    dropped: Counter = Counter()
    for item in stage.run(records, ctx):
        if isinstance(item, Drop):
            dropped[item.reason] += 1
        else:
            kept.append(item)
    return ShardResult(kept, dict(dropped), dict(ctx.counts))


class LocalExecutor:
    """Shards in order, in this process; yields each as soon as it is done (so it is saved)."""

    def run(self, stage: Stage, shards: list[list[Record]], ctx: Context) -> Iterator[tuple[int, ShardResult]]:
        if len(shards) > 1:
            from tqdm.auto import tqdm

            indices = tqdm(range(len(shards)), desc=f"{stage.name} shards", unit="shard", leave=False)
        else:
            indices = range(len(shards))
        for i in indices:
            yield i, run_shard(stage, shards[i], ctx)


EXECUTORS = {"local": LocalExecutor}


def make_executor(config):
    kind = config.executor.kind
    if kind not in EXECUTORS:
        from .errors import AutoifError

        raise AutoifError(f"executor '{kind}' is not available in this version (available: {', '.join(EXECUTORS)})")
    return EXECUTORS[kind]()
