"""Executor `local`: a stage's shards in order, in this process."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ..config import Config
from ..records import Record
from ..stages.base import Context, Stage
from . import ShardResult, run_shard


class LocalExecutor:
    """Shards in order, in this process; yields each as soon as it is done (so it is saved)."""

    def __init__(self, config: Config | None = None) -> None:
        self.config = config

    def prepare(self, stage: Stage) -> None:
        """Nothing to start here (resources open lazily)."""

    def run(self, stage: Stage, shards: list[list[Record]], ctx: Context) -> Iterator[tuple[int, ShardResult]]:
        indices: Iterable[int] = range(len(shards))
        if len(shards) > 1:
            from tqdm.auto import tqdm

            indices = tqdm(indices, desc=f"{stage.name} shards", unit="shard", leave=False)
        for i in indices:
            yield i, run_shard(stage, shards[i], ctx)

    def close(self) -> None:
        """Nothing to release: the resources are the Context's, closed by the pipeline."""
