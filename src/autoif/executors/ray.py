"""Executor `ray`: the same stages, their shards spread over the actors of a Ray cluster.

`autoif run --executor ray` connects to a running cluster (`executor.ray_address`, else
`RAY_ADDRESS`, else it starts one on this machine) and places each stage by what it uses:

- LLM stages (`uses_llm`: augment, verifiers, backtranslate, compose, responses, score) go to *engine*
  actors, each holding its own backend (a `vllm.LLM` on `gpus_per_engine` GPUs of one node, the
  local transformers model, or an HTTP client). They are started once and kept for the whole run,
  so a 70B model loads once, not once per stage. The NLI model of backtranslate loads beside it
  (`ctx.nli` of the actor's Context).
- Sandbox stages (`uses_sandbox`: crossval, verify, export) go to *sandbox* actors, each running
  a sandbox of `cpus_per_sandbox` worker processes on the CPUs the engines leave free.
- The rest (seeds, queries: record shuffling that reads local files) run here, in the driver.

The executor knows nothing of a stage's insides: an actor runs `run_shard(stage, records, ctx)`
exactly as the local executor does, with a Context of its own. Every actor keeps
`shards_per_actor` shards queued and results come back one by one, as they finish; the pipeline
writes each finished shard before the next result is taken, so the driver holds a stage's input and
the results in flight, never a stage's output, and an interrupted run resumes from finished shards.

The LLM response cache stays one SQLite file on the driver's machine (`llm.cache_path`), served
by a cache actor pinned to that node: engines on other machines read and write through it, so a
rerun re-issues no finished request however the shards land, with no shared file system needed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections import Counter, deque
from collections.abc import Iterator
from typing import Any

from ..errors import AutoifError, require
from ..records import Record
from ..stages.base import Context, Stage
from . import ShardResult, run_shard
from .local import LocalExecutor

log = logging.getLogger("autoif.ray")

# Forwarded to every actor: on a real cluster a worker's environment is its node's, not the driver's.
_FORWARDED_ENV_PREFIXES = ("AUTOIF_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "OPENAI_", "VLLM_", "NLTK_")


def _check_reachable(address: str | None, timeout_s: float = 10.0) -> None:
    """Fail in seconds where nothing listens at a `host:port` address: Ray itself retries for minutes."""
    if not address or address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise AutoifError(f"ray: cannot connect to {address}: expected 'host:port', 'ray://host:port' or 'auto'")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise AutoifError(
            f"ray: cannot connect to {address}: nothing answers at {hostport} ({exc.strerror or exc}); "
            "is `ray start --head` running there?"
        ) from None


def _own_error(exc: BaseException) -> BaseException | None:
    """What a stage or an actor's constructor raised, unwrapped from Ray's errors (None: Ray's own)."""
    import ray

    for _ in range(4):  # ActorDiedError -> RayTaskError -> the exception itself
        cause = getattr(exc, "cause", None)
        if not isinstance(cause, BaseException):
            return None
        if not isinstance(cause, ray.exceptions.RayError):
            return cause
        exc = cause
    return None


class RemoteCache:
    """The `ResponseCache` interface, answered by the cache actor on the driver's node.

    A write is sent at once and not waited for (a round trip per sample would hold the engine up, up
    to 4,096 times a generate call); `flush` waits for all of them, and a shard's result leaves the
    actor only after it, so a finished shard's samples are all committed on the driver's disk. A
    killed engine loses at most the samples of its unfinished shard, which are redone."""

    MAX_IN_FLIGHT = 1024  # writes not yet waited for; past it, `put` waits for them (bounded memory)

    def __init__(self, server: Any) -> None:
        self.server = server
        self._pending: list[Any] = []
        self._lock = threading.Lock()  # backends emit from several threads

    def get_many(self, keys: list[str]) -> dict[str, str]:
        import ray

        return ray.get(self.server.get_many.remote(keys))

    def put(self, key: str, value: str) -> None:
        with self._lock:
            self._pending.append(self.server.put.remote(key, value))
            full = len(self._pending) >= self.MAX_IN_FLIGHT
        if full:
            self.flush()

    def flush(self) -> None:
        """Wait until every write sent so far is committed."""
        import ray

        with self._lock:
            pending, self._pending = self._pending, []
        ray.get(pending)

    def close(self) -> None:
        """The cache actor owns the file; it is closed when the executor closes."""
        self.flush()


def on_cpu(config: Any) -> Any:
    """The config of an actor Ray gave no GPU: models left to choose their device (the local LLM,
    backtranslate's NLI model) run on the CPU. Ray no longer hides the node's GPUs from such an actor,
    and `cuda:0` may be an engine's."""
    if config.llm.device != "auto":
        return config
    config = config.model_copy(deep=True)
    config.llm.device = "cpu"
    return config


class ShardWorker:
    """Ray actor: a Context of its own (an LLM backend, or a sandbox) that runs shards of any stage."""

    def __init__(self, config: Any, cache_server: str | None, engine: bool) -> None:
        import ray

        self.node = ray.get_runtime_context().get_node_id()
        self._loaded: tuple[str, str] | None = None
        self._stage: Stage | None = None
        if not ray.get_runtime_context().get_accelerator_ids().get("GPU"):
            config = on_cpu(config)
        self.ctx = Context(config)
        self.cache: RemoteCache | None = None
        # Kept and raised by `ready`: an error out of a constructor reaches the driver only as text.
        self._failed: Exception | None = None
        try:
            self.ctx = self._open(config, cache_server, engine)
        except Exception as exc:
            self._failed = exc

    def _open(self, config: Any, cache_server: str | None, engine: bool) -> Context:
        if engine:
            import ray

            from ..llm import make_backend

            # Found by name, not handed over as a handle: an actor whose constructor arguments are
            # references could not be restarted once they went out of scope.
            self.cache = RemoteCache(ray.get_actor(cache_server)) if cache_server is not None else None
            return Context(config, llm=make_backend(config, cache=self.cache))
        ctx = Context(config)
        _ = ctx.sandbox  # its worker processes boot now, while the driver reads the stage's inputs
        return ctx

    def ready(self) -> str:
        if self._failed is not None:
            raise self._failed
        return self.node

    def run(self, refs: list[Any], records: list[Record]) -> tuple[ShardResult, str]:
        """One shard; `refs` = [stage, needs] object refs, fetched once per stage (not per shard)."""
        import ray

        key = (refs[0].hex(), refs[1].hex())
        if self._stage is None or key != self._loaded:  # (no stage yet: nothing loaded)
            self._stage, self.ctx.needs = ray.get(refs)
            self._loaded = key
        result = run_shard(self._stage, records, self.ctx).packed(self._stage.files())
        if self.cache is not None:
            self.cache.flush()  # the shard is done once its samples are on the driver's disk
        return result, self.node

    def close(self) -> None:
        self.ctx.close()


class _Pool:
    """Actors of one kind: all of them (`actors`), and those still starting by their readiness ref."""

    def __init__(self, kind: str, actors: list[Any], what: str) -> None:
        self.kind, self.actors, self.what = kind, actors, what
        self.starting: dict[Any, Any] = {actor.ready.remote(): actor for actor in actors}
        self.ready: list[Any] = []
        self.nodes: Counter = Counter()  # node id -> ready actors there


class RayExecutor:
    """Shards of LLM stages on engine actors, of sandbox stages on sandbox actors, the rest here."""

    def __init__(self, config) -> None:
        self.config = config
        self._ray: Any = None
        self._connected_here = False
        self._pools: dict[str, _Pool] = {}
        self._cache_server: Any = None
        self._cache_name: str | None = None
        self.placements: dict[str, Counter] = {}  # stage -> node id -> shards run there

    # ------------------------------------------------------------------------------------ running
    @staticmethod
    def _kind(stage: Stage) -> str | None:
        return "engine" if stage.uses_llm else "sandbox" if stage.uses_sandbox else None

    def prepare(self, stage: Stage) -> None:
        """Start the stage's actors without waiting: they boot while the driver reads the inputs."""
        kind = self._kind(stage)
        if kind is not None:
            self._connect()
            self._pool(kind)

    def run(self, stage: Stage, shards: list[list[Record]], ctx: Context) -> Iterator[tuple[int, ShardResult]]:
        kind = self._kind(stage)
        if kind is None or not shards:
            yield from LocalExecutor(self.config).run(stage, shards, ctx)
            return
        ray = self._connect()
        pool = self._pool(kind)
        refs = [ray.put(stage), ray.put(ctx.needs)]  # once per stage; actors fetch them once
        placed: Counter = Counter()  # node -> shards of this call
        todo = deque(range(len(shards)))
        pending: dict[Any, tuple[int, Any]] = {}

        def feed(actor: Any) -> None:
            while todo and sum(1 for _, a in pending.values() if a is actor) < self.config.executor.shards_per_actor:
                i = todo.popleft()
                pending[actor.run.remote(refs, shards[i])] = (i, actor)

        for actor in pool.ready:
            feed(actor)
        from tqdm.auto import tqdm

        with tqdm(
            total=len(shards),
            desc=f"{stage.name} shards ({kind} actors)",
            unit="shard",
            leave=False,
            disable=len(shards) < 2,
        ) as bar:
            while pending or todo:
                # Actors join as they start: work begins on the first, none waits for the last.
                timeout = None if pool.ready else self.config.executor.actor_start_timeout_s
                done, _ = ray.wait([*pending, *pool.starting], num_returns=1, timeout=timeout)
                if not done:
                    self._close_pool(self._pools.pop(kind))
                    raise AutoifError(
                        f"ray: no {kind} actor ({pool.what}) found a place on the cluster in "
                        f"{timeout:g}s: add nodes or lower its resources"
                    )
                if done[0] in pool.starting:
                    feed(self._join(pool, done[0]))
                    continue
                i, actor = pending.pop(done[0])
                result, node = self._result(done[0], stage, i)
                placed[node] += 1
                feed(actor)
                bar.update(1)
                yield i, result
        self.placements.setdefault(stage.name, Counter()).update(placed)
        log.info(
            "%s: %d shard(s) on %d node(s) (%s)",
            stage.name,
            sum(placed.values()),
            len(placed),
            ", ".join(f"{node[:8]}: {n}" for node, n in placed.most_common()),
        )

    def _result(self, ref: Any, stage: Stage, i: int) -> tuple[ShardResult, str]:
        ray = self._ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayError as exc:
            # The stage itself failed: raise its own error (one line for an AutoifError), not Ray's.
            cause = _own_error(exc)
            if isinstance(cause, Exception):
                raise cause from None
            if not isinstance(exc, ray.exceptions.RayActorError):
                raise
            raise AutoifError(
                f"ray: the actor running shard {i} of stage '{stage.name}' died and could not be "
                f"restarted ({type(exc).__name__}); rerun to resume from the finished shards"
            ) from None

    # ------------------------------------------------------------------------------ cluster, pools
    def _connect(self):
        if self._ray is not None:
            return self._ray
        ray = require("ray", "ray", "the ray executor")
        if not ray.is_initialized():
            address = self.config.executor.ray_address
            _check_reachable(address or os.environ.get("RAY_ADDRESS"))
            try:
                # The job's environment, so actors can start in the workers Ray keeps warm for the job.
                ray.init(address=address, runtime_env=self._actor_env(), logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                where = address or os.environ.get("RAY_ADDRESS") or "a new local cluster"
                raise AutoifError(f"ray: cannot connect to {where}: {str(exc).splitlines()[0]}") from None
            self._connected_here = True
        self._ray = ray
        nodes = self._alive_nodes()
        total = ray.cluster_resources()
        log.info("ray: %d node(s), %g CPUs, %g GPUs", len(nodes), total.get("CPU", 0), total.get("GPU", 0))
        return ray

    def _alive_nodes(self) -> list[dict]:
        return [n for n in self._ray.nodes() if n.get("Alive")]

    def _actor_env(self) -> dict[str, Any]:
        keep = {k: v for k, v in os.environ.items() if k.startswith(_FORWARDED_ENV_PREFIXES)}
        key_env = self.config.llm.api_key_env
        if key_env in os.environ:
            keep[key_env] = os.environ[key_env]
        # Progress is the driver's (one bar per stage); actors' bars would interleave in its log.
        keep["TQDM_DISABLE"] = "1"
        return {"env_vars": keep}

    def _gpus_per_engine(self) -> int:
        ex, llm = self.config.executor, self.config.llm
        if ex.gpus_per_engine is not None:
            return ex.gpus_per_engine
        if llm.backend == "vllm":
            return llm.tensor_parallel_size
        if llm.backend == "local" and not llm.device.startswith("cpu"):
            return 1 if self._ray.cluster_resources().get("GPU", 0) >= 1 else 0
        return 0

    def _pool(self, kind: str) -> _Pool:
        if kind in self._pools:
            return self._pools[kind]
        if kind == "engine" and "sandbox" in self._pools:
            # Sandbox actors were sized to the CPUs left free; engines come first, then they regrow.
            self._close_pool(self._pools.pop("sandbox"))
        ray = self._ray
        ex = self.config.executor
        config = self.config.model_copy(deep=True)
        config.paths.out = str(self.config.out_path().resolve())  # actors may not share the driver's cwd
        options: dict[str, Any] = {"max_restarts": 2, "max_task_retries": 2, "scheduling_strategy": "SPREAD"}
        if not self._connected_here:  # joined a session someone else opened: its job has not our env
            options["runtime_env"] = self._actor_env()
        if kind == "engine":
            gpus = self._gpus_per_engine()
            count = ex.engines or self._engines_that_fit(gpus)
            options.update(num_cpus=ex.cpus_per_engine, num_gpus=gpus)
            args = (config, self._cache(config), True)
            what = f"{gpus} GPU(s), {ex.cpus_per_engine:g} CPU(s) each"
        else:
            cpus = ex.cpus_per_sandbox
            # From the cluster's totals, not its momentary availability (which lags behind actors
            # just ended); actors that find no place yet wait for one without holding up the others.
            engines = self._pools.get("engine")
            held = len(engines.actors) * ex.cpus_per_engine if engines else 0
            free = ray.cluster_resources().get("CPU", 0) - held
            if ex.sandbox_actors is None and 1 <= free < cpus and len(self._alive_nodes()) == 1:
                cpus = int(free)  # one small machine (`--executor ray` on a laptop): a smaller sandbox, not none
            count = ex.sandbox_actors or int(free // cpus)
            if count < 1:
                raise AutoifError(
                    f"ray: no room for a sandbox actor of {cpus} CPUs ({free:g} CPUs "
                    "free after the engines): lower executor.cpus_per_sandbox or add CPU nodes"
                )
            config.sandbox.workers = cpus
            options.update(num_cpus=cpus)
            args = (config, None, False)
            what = f"{cpus} CPU(s) each"
        actor_cls = ray.remote(ShardWorker).options(**options)
        self._pools[kind] = pool = _Pool(kind, [actor_cls.remote(*args) for _ in range(count)], what)
        return pool

    def _engines_that_fit(self, gpus: int) -> int:
        """One engine per `gpus` GPUs of a node; where engines need no GPU, one per node with CPUs."""
        cpus = self.config.executor.cpus_per_engine
        count = 0
        for node in self._alive_nodes():
            res = node.get("Resources", {})
            if res.get("CPU", 0) < cpus:
                continue
            count += int(res.get("GPU", 0) // gpus) if gpus else 1
        if count < 1:
            need = f"{gpus} GPU(s) and " if gpus else ""
            raise AutoifError(
                f"ray: no node has {need}{cpus:g} CPU(s) for an LLM engine: add nodes or lower "
                "executor.gpus_per_engine / executor.cpus_per_engine"
            )
        return count

    def _join(self, pool: _Pool, ref: Any) -> Any:
        """An actor of `pool` has started (or failed to): it joins the ready ones."""
        ray = self._ray
        actor = pool.starting.pop(ref)
        try:
            node = ray.get(ref)
        except ray.exceptions.RayError as exc:
            self._close_pool(self._pools.pop(pool.kind))
            cause = _own_error(exc)
            if isinstance(cause, Exception):
                raise cause from None
            raise AutoifError(f"ray: a {pool.kind} actor failed to start: {str(exc).splitlines()[0]}") from None
        pool.ready.append(actor)
        pool.nodes[node] += 1
        if not pool.starting:
            log.info("ray: %d %s actor(s) on %d node(s) (%s)", len(pool.ready), pool.kind, len(pool.nodes), pool.what)
        return actor

    def _cache(self, config) -> str | None:
        """The cache actor's name; it is pinned to the driver's node (None when the cache is off)."""
        if not config.llm.cache:
            return None
        if self._cache_server is None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            ray = self._ray
            path = config.resolve_under_out(config.llm.cache_path)
            here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
            self._cache_name = f"autoif-cache-{uuid.uuid4().hex[:12]}"
            from ..llm.cache import ResponseCache

            # The cache itself is the actor: one writer of the SQLite file, on the driver's machine.
            self._cache_server = (
                ray.remote(ResponseCache)
                .options(name=self._cache_name, num_cpus=0, scheduling_strategy=here, max_concurrency=1)
                .remote(str(path))
            )
        return self._cache_name

    def _close_pool(self, pool: _Pool) -> None:
        ray = self._ray
        try:
            ray.get([actor.close.remote() for actor in pool.ready], timeout=60)  # the others never started
        except Exception as exc:  # a dead actor has nothing left to close
            log.debug("ray: closing %s actors: %s", pool.kind, exc)
        for actor in pool.actors:
            ray.kill(actor)

    def close(self) -> None:
        """Stop this run's actors (and the cluster, when this run started it)."""
        if self._ray is None:
            return
        ray = self._ray
        for pool in self._pools.values():
            self._close_pool(pool)
        self._pools.clear()
        if self._cache_server is not None:
            try:
                ray.get(self._cache_server.close.remote(), timeout=60)
            except Exception as exc:
                log.debug("ray: closing the cache actor: %s", exc)
            ray.kill(self._cache_server)
            self._cache_server = None
        if self._connected_here:
            ray.shutdown()
            self._connected_here = False
        self._ray = None
