"""What every stage is: a pure function over records, `run(records, ctx) -> records | Drop`.

A stage reads no file, caches nothing and starts no pool of its own: the pipeline hands it its
input records (and the whole output of any stage it `needs`), writes what it yields, counts what
it drops, and decides what to redo. LLM calls and function executions go through `ctx.llm` and
`ctx.sandbox`, which the executor owns.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

from pydantic import BaseModel

from ..config import Config
from ..records import Record
from ..seeding import seeded_rng

if TYPE_CHECKING:  # opened on first use: a stage that needs none of them imports none of them
    from ..llm import Backend
    from ..sandbox import Sandbox
    from .nli import NLIModel

R = TypeVar("R", bound=Record)  # the record type a stage reads, or an index holds


@dataclass(frozen=True)
class Drop:
    """A record a stage filtered out, with the reason counted in funnel.json."""

    record: Any
    reason: str


class Context:
    """What a stage may use besides its records: the run's resources, opened on first use.

    `llm`, `sandbox` and `nli` are the run's LLM backend, sandbox and NLI model (given to the
    constructor, or opened from `config` the first time a stage asks); `needs` holds the whole
    output of every stage the current one `needs`, set by the executor, and `index` looks records
    up in it; `counts` collects finer counts than records for the funnel; `llm_stats` is what the
    LLM has cost so far. `role` is the stage being run (set by the pipeline): a stage with its own
    `<stage>.llm` gets its own backend from `llm`. Whoever made the Context closes it.
    """

    def __init__(
        self,
        config: Config,
        needs: dict[str, list[Record]] | None = None,
        *,
        llm: Backend | None = None,
        sandbox: Sandbox | None = None,
        nli: NLIModel | None = None,
    ) -> None:
        self.config = config
        self.needs: dict[str, list[Record]] = needs if needs is not None else {}
        self.counts: Counter[str] = Counter()
        self.role: str | None = None
        self.divert: Any = None  # handed to every backend opened (`Backend.divert`: --emit-batch)
        # One backend per distinct LLM config of a role; None: the `llm` section's.
        self._llms: dict[str | None, Backend] = {} if llm is None else {None: llm}
        self._sandbox = sandbox
        self._nli = nli
        # (need, key) -> (the records indexed, the index): rebuilt when `needs` holds new records.
        self._indexes: dict[tuple[str, str], tuple[list[Record], dict[Any, Record]]] = {}

    @property
    def llm(self) -> Backend:
        own = self.config.llm_for(self.role) if self.role else self.config.llm
        key = None if own is self.config.llm else own.model_dump_json()
        if key not in self._llms:
            from ..llm import make_backend

            backend = make_backend(self.config.model_copy(update={"llm": own}))
            backend.divert = self.divert
            self._llms[key] = backend
        return self._llms[key]

    @property
    def sandbox(self) -> Sandbox:
        if self._sandbox is None:
            from ..sandbox import Sandbox

            self._sandbox = Sandbox.from_config(self.config.sandbox)
        return self._sandbox

    @property
    def nli(self) -> NLIModel:
        """The NLI model of back-translations: the LLM judge wraps `llm`; a Hugging Face model is
        loaded once for all the shards this Context runs."""
        if self._nli is None:
            from .nli import make_nli, nli_backend

            self._nli = make_nli(self.config, self.llm if nli_backend(self.config) == "llm" else None)
        return self._nli

    @property
    def llm_stats(self) -> dict[str, int] | None:
        """What the LLM backend has cost so far (samples generated, cache hits...); None when no
        stage has used it."""
        if not self._llms:
            return None
        total: dict[str, int] = {}
        for backend in self._llms.values():
            for k, v in backend.stats.as_dict().items():
                total[k] = total.get(k, 0) + v
        return total

    def index(self, need: str, key: str, of: type[R]) -> dict[Any, R]:
        """`needs[need]` as a dict by the attribute `key`, built once per stage run, not per shard.
        `of` is the type of those records (the needed stage's `output_type`), for the type checker."""
        records = self.needs[need]
        cached = self._indexes.get((need, key))
        if cached is None or cached[0] is not records:
            cached = (records, {getattr(r, key): r for r in records})
            self._indexes[(need, key)] = cached
        return cast("dict[Any, R]", cached[1])

    def count(self, what: str, n: int = 1) -> None:
        """Count something finer than a record (e.g. `function_dropped:compile`) into the funnel."""
        self.counts[what] += n

    def rng(self, *key: Any) -> random.Random:
        """A random generator determined by the global seed and `key` alone (never by run order)."""
        return seeded_rng(self.config.seed, *key)

    def close(self) -> None:
        if self._sandbox is not None:
            self._sandbox.close()
            self._sandbox = None
        self._nli = None
        for backend in self._llms.values():
            backend.close()
            if backend.cache is not None:
                backend.cache.close()
        self._llms = {}


class Stage(ABC, Generic[R]):
    """One step of the pipeline. Subclasses set the class attributes and implement `run`; `R` is
    the record type it reads (the `output_type` of its `input` stage)."""

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
    def run(self, records: list[R], ctx: Context) -> Iterable[Record | Drop]:
        """Yield the output records, and a `Drop` for every input record filtered out."""
