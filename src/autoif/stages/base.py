"""What every stage is: a pure function over records, `run(records, ctx) -> records | Drop`.

A stage reads no file, caches nothing and starts no pool of its own: the pipeline hands it its
input records (and the whole output of any stage it `needs`), writes what it yields, counts what
it drops, and decides what to redo. LLM calls and function executions go through `ctx.llm` and
`ctx.sandbox`, which the executor owns.
"""

from __future__ import annotations

import hashlib
import json
import random
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel

from ..config import Config
from ..records import Record


@dataclass(frozen=True)
class Drop:
    """A record a stage filtered out, with the reason counted in funnel.json."""

    record: Any
    reason: str


@dataclass
class Context:
    """What a stage may use besides its records. Heavy resources are opened on first use."""

    config: Config
    needs: dict[str, list[Record]] = field(default_factory=dict)
    counts: Counter = field(default_factory=Counter)
    _llm: Any = None
    _sandbox: Any = None

    @property
    def llm(self):
        if self._llm is None:
            from ..llm import make_backend

            self._llm = make_backend(self.config)
        return self._llm

    @property
    def sandbox(self):
        if self._sandbox is None:
            from ..sandbox import Sandbox

            self._sandbox = Sandbox.from_config(self.config.sandbox)
        return self._sandbox

    def count(self, what: str, n: int = 1) -> None:
        """Count something finer than a record (e.g. `function_dropped:compile`) into the funnel."""
        self.counts[what] += n

    def rng(self, *key: Any) -> random.Random:
        """A random generator determined by the global seed and `key` alone (never by run order)."""
        digest = hashlib.sha256(json.dumps([self.config.seed, *key], default=str).encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None
        if self._llm is not None:
            self._llm.close()
            if self._llm.cache is not None:
                self._llm.cache.close()
            self._llm = None


class Stage(ABC):
    """One step of the pipeline. Subclasses set the class attributes and implement `run`."""

    name: ClassVar[str]
    output: ClassVar[str]  # the file it writes under OUT, e.g. "crossval.jsonl"
    input: ClassVar[str | None]  # the stage whose output feeds this one (None: a source stage)
    output_type: ClassVar[type[Record]]
    # Extra files written besides `output`, by record type, e.g. {DPORecord: "dpo.jsonl"}.
    also_writes: ClassVar[dict[type[Record], str]] = {}
    # Other stages' outputs read whole (see `Context.needs`); "a|b" takes a's, or b's when a has none.
    needs: ClassVar[tuple[str, ...]] = ()
    sharded: ClassVar[bool] = True  # False when a stage must see all records at once (dedup, merge)
    uses_llm: ClassVar[bool] = False
    uses_sandbox: ClassVar[bool] = False  # runs generated functions (a cluster executor places it on CPU workers)

    def files(self) -> dict[type[Record], str]:
        """Output file of each record type this stage yields."""
        return {self.output_type: self.output, **self.also_writes}

    def settings(self, config: Config) -> Any:
        """Everything in the config that changes this stage's output (part of its resume key)."""
        section = getattr(config, self.name, None)
        own = section.model_dump() if isinstance(section, BaseModel) else None
        llm = config.llm.model_dump(include={"backend", "model"}) if self.uses_llm else None
        return {"stage": own, "llm": llm, "seed": config.seed}

    @abstractmethod
    def run(self, records: list[Record], ctx: Context) -> Iterable[Record | Drop]:
        """Yield the output records, and a `Drop` for every input record filtered out."""
