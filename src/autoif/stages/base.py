"""What every stage is: a pure function over records, `run(records, ctx) -> records | Drop`.

A stage reads no file, caches nothing and starts no pool of its own: the pipeline hands it its
input records (and the whole output of any stage it `needs`), writes what it yields, counts what
it drops, and decides what to redo. LLM calls and function executions go through `ctx.llm` and
`ctx.sandbox`, which the executor owns.
"""

from __future__ import annotations

import functools
import random
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, cast

from ..config import Config
from ..config_reads import ConfigView, UndeclaredRead, read_values, reads_field
from ..cost import Budget, price_of
from ..failures import CRASH, CRASHED, SANDBOX_CRASH, Failed
from ..records import Record
from ..seeding import seeded_rng

if TYPE_CHECKING:  # opened on first use: a stage that needs none of them imports none of them
    from ..llm import Backend
    from ..sandbox import Outcome, Sandbox
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

    While a stage runs (`reading(stage)`), `config` is a view of what the stage declares it
    `reads`, and opening the LLM, the sandbox or the NLI model needs their sections among those:
    a read the stage's resume key would miss raises `UndeclaredRead` instead.
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
        self._config = config
        self._view: ConfigView | None = None  # the running stage's view; None: the whole config
        self.needs: dict[str, list[Record]] = needs if needs is not None else {}
        self.counts: Counter[str] = Counter()
        # Work of the current shard that failed and is to be redone (sandbox crashes; the LLM's
        # failures are read off its stats), reset with `counts`.
        self.failures: list[Failed] = []
        self.role: str | None = None
        self.divert: Any = None  # handed to every backend opened (`Backend.divert`: --emit-batch)
        self.budget: Budget | None = None  # meters every backend opened (`Backend.meter`: llm.max_cost)
        # One backend per distinct LLM config of a role; None: the `llm` section's.
        self._llms: dict[str | None, Backend] = {} if llm is None else {None: llm}
        self._sandbox = sandbox
        self._nli = nli
        # (need, key) -> (the records indexed, the index): rebuilt when `needs` holds new records.
        self._indexes: dict[tuple[str, str], tuple[list[Record], dict[Any, Record]]] = {}

    @property
    def config(self) -> Config:
        """The run's config; while a stage runs, only what it declared in `reads` (a `ConfigView`,
        which reads like a Config)."""
        return self._config if self._view is None else cast("Config", self._view)

    @contextmanager
    def reading(self, stage: Stage) -> Iterator[None]:
        """Restrict `config` to what `stage` reads while the block runs."""
        outer = self._view
        self._view = ConfigView(self._config, stage.reads)
        try:
            yield
        finally:
            self._view = outer

    def _require(self, section: str, resource: str) -> None:
        if self._view is not None and not reads_field(self._view.declared, section):
            raise UndeclaredRead(f"a stage that uses {resource} must declare '{section}' in `reads`")

    @property
    def llm(self) -> Backend:
        self._require("llm", "the LLM")
        # The role's own section is among the stage's reads (its section holds `llm`); the whole
        # config builds the backend, since a backend reads settings no stage declares (the cache path).
        own = self._config.llm_for(self.role) if self.role else self._config.llm
        key = None if own is self._config.llm else own.model_dump_json()
        if key not in self._llms:
            from ..llm import make_backend

            backend = make_backend(self._config.model_copy(update={"llm": own}))
            backend.divert = self.divert
            if self.budget is not None:
                backend.meter = self.budget.meter(price_of(self._config.prices, own.model), own.batch)
            self._llms[key] = backend
        return self._llms[key]

    @property
    def sandbox(self) -> Sandbox:
        self._require("sandbox", "the sandbox")
        if self._sandbox is None:
            from ..sandbox import Sandbox

            self._sandbox = Sandbox.from_config(self._config.sandbox)
        return self._sandbox

    @property
    def nli(self) -> NLIModel:
        """The NLI model of back-translations: the LLM judge wraps `llm`; a Hugging Face model is
        loaded once for all the shards this Context runs."""
        # What the model is and how it judges is read through the stage's view (checked there).
        from .nli import make_nli, nli_backend

        llm = self.llm if nli_backend(self.config) == "llm" else None
        if self._nli is None:
            self._nli = make_nli(self.config, llm)
        return self._nli

    def check_many(self, grids: Sequence[tuple[Sequence[str], Sequence[str]]]) -> list[list[list[Outcome]]]:
        """`sandbox.check_many(grids)`, its `crash` outcomes counted as failed work: a worker that
        died during a check gave no verdict, so the shard is redone by the next run."""
        out = self.sandbox.check_many(grids)
        outcomes = [o for grid in out for row in grid for o in row]
        crashed = sum(1 for o in outcomes if o.error == CRASH)
        if outcomes:
            reason = CRASHED if crashed else ""
            self.failures.append(Failed("checks in the sandbox", len(outcomes), crashed, reason, SANDBOX_CRASH))
        return out

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

    def llm_failed(self, cost: dict[str, int]) -> Failed:
        """The requests of `cost` (what some work cost the LLM: a difference of `llm_stats`) and
        how many of them failed, with the backend's latest reason."""
        assert self._llms  # a cost comes from llm_stats, which is None without a backend
        failed = cost.get("errors", 0) - cost.get("rejected", 0)
        # The endpoints and the latest reason of every backend this Context opened (one per role).
        where = ", ".join(sorted({b.where for b in self._llms.values()}))
        reasons = [b.last_error for b in self._llms.values() if b.last_error]
        reason = (reasons[-1] if reasons else "") if failed else ""
        return Failed(f"requests to {where}", cost.get("misses", 0), failed, reason)

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
    # The config it reads: sections ("export") or fields ("llm.model"), "seed" for `ctx.rng`; its
    # resume key holds exactly these (`settings`), and while it runs it can read nothing else
    # (`Context.reading`). Using the LLM or the sandbox reads their whole sections.
    reads: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "run" in cls.__dict__:  # every call of `run`, by the pipeline or anyone, sees only `reads`
            cls.run = _reading_declared(cls.__dict__["run"])  # type: ignore[method-assign]

    def files(self) -> dict[type[Record], str]:
        """Output file of each record type this stage yields."""
        return {self.output_type: self.output, **self.also_writes}

    def key_inputs(self, config: Config) -> Any:
        """What besides the config changes the output (a prompt template's text, the query pool's
        content); `config` is restricted to `reads`. None: nothing."""
        return None

    def settings(self, config: Config) -> dict[str, Any]:
        """Everything that changes this stage's output (its resume key, with its input files): the
        values it `reads`, and its `key_inputs`."""
        view = cast("Config", ConfigView(config, self.reads))
        return {"reads": read_values(config, self.reads), "inputs": self.key_inputs(view)}

    @abstractmethod
    def run(self, records: list[R], ctx: Context) -> Iterable[Record | Drop]:
        """Yield the output records, and a `Drop` for every input record filtered out."""


def _reading_declared(run: Any) -> Any:
    """`run` with `ctx.config` restricted to the stage's `reads` for as long as it yields."""

    @functools.wraps(run)
    def reading(self: Stage, records: list, ctx: Context) -> Iterator[Record | Drop]:
        with ctx.reading(self):
            yield from run(self, records, ctx)

    return reading
