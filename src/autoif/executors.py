"""Executors decide where a stage's shards run; they know nothing of a stage's insides.

`local` runs shards one after another in this process (each stage batches its own LLM requests
and sandbox checks, which is where the parallelism is); `ray` (`autoif.ray_executor`) spreads them
over the actors of a Ray cluster. Both only yield `(shard index, ShardResult)` as shards finish:
writing, resuming and assembling the outputs belong to the pipeline, so the files are the same
whichever executor ran them.
"""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from .jsonl import dumps_records
from .records import Record
from .stages.base import Context, Drop, Stage


@dataclass
class ShardResult:
    records: list[Record]
    dropped: dict[str, int]
    counts: dict[str, int]
    llm: dict[str, int] | None = None  # what the shard cost the LLM backend (cache hits, tokens...), if used
    texts: dict[str, str] | None = None  # the records as the JSONL text of each output file, once packed

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
        return ShardResult([], self.dropped, self.counts, self.llm, self.file_texts(files))


def run_shard(stage: Stage, records: list[Record], ctx: Context) -> ShardResult:
    """Run one stage over one shard, separating kept records from counted drops."""
    ctx.counts = Counter()
    before = ctx._llm.stats.as_dict() if ctx._llm is not None else {}
    kept: list[Record] = []
    dropped: Counter = Counter()
    for item in stage.run(records, ctx):
        if isinstance(item, Drop):
            dropped[item.reason] += 1
        else:
            kept.append(item)
    llm = None
    if ctx._llm is not None:
        llm = {k: v - before.get(k, 0) for k, v in ctx._llm.stats.as_dict().items()}
    return ShardResult(kept, dict(dropped), dict(ctx.counts), llm)


class LocalExecutor:
    """Shards in order, in this process; yields each as soon as it is done (so it is saved)."""

    def __init__(self, config=None) -> None:
        self.config = config

    def prepare(self, stage: Stage) -> None:
        """Called before the stage's inputs are read; nothing to start here (resources open lazily)."""

    def run(self, stage: Stage, shards: list[list[Record]], ctx: Context) -> Iterator[tuple[int, ShardResult]]:
        if len(shards) > 1:
            from tqdm.auto import tqdm

            indices = tqdm(range(len(shards)), desc=f"{stage.name} shards", unit="shard", leave=False)
        else:
            indices = range(len(shards))
        for i in indices:
            yield i, run_shard(stage, shards[i], ctx)

    def close(self) -> None:
        """Nothing to release: the resources are the Context's, closed by the pipeline."""


# Name -> "module:Class", imported only when chosen: the local executor never imports Ray.
EXECUTORS = {"local": "autoif.executors:LocalExecutor", "ray": "autoif.ray_executor:RayExecutor"}


def make_executor(config):
    kind = config.executor.kind
    if kind not in EXECUTORS:
        from .errors import AutoifError

        raise AutoifError(f"executor '{kind}' is not available in this version (available: {', '.join(EXECUTORS)})")
    module, cls = EXECUTORS[kind].split(":")
    return getattr(importlib.import_module(module), cls)(config)
