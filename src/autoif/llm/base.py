"""The LLM layer's one interface: `Backend.generate(requests) -> completions`.

Every backend (HTTP, local transformers, vLLM) implements only `_run`, which produces the samples
that are not cached yet. The base class owns caching, counting and progress, so that a rerun after
an interruption (kill -9 included) re-issues no request that had finished.
"""

from __future__ import annotations

import hashlib
import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Protocol

from ..errors import AutoifError
from .cache import Cache


class BackendError(AutoifError):
    """The backend cannot serve at all (unreachable endpoint, model missing): a one-line error."""


@dataclass(frozen=True)
class Sampling:
    """Sampling settings of one request; part of the cache key."""

    temperature: float = 0.8
    top_p: float = 1.0
    max_tokens: int = 512
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", tuple(self.stop))
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")

    def seed_for(self, sample_index: int) -> int | None:
        """Each sample of a seeded request gets its own seed, so fanned-out samples differ."""
        return None if self.seed is None else self.seed + sample_index


@dataclass(frozen=True)
class Request:
    """Chat messages + sampling settings + how many samples (n) to return."""

    messages: tuple[dict, ...]
    sampling: Sampling = field(default_factory=Sampling)
    n: int = 1

    def __post_init__(self) -> None:
        msgs = tuple({"role": str(m["role"]), "content": str(m["content"])} for m in self.messages)
        if not msgs:
            raise ValueError("a request needs at least one message")
        object.__setattr__(self, "messages", msgs)
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")

    @classmethod
    def user(cls, prompt: str, *, n: int = 1, system: str | None = None, **sampling: Any) -> Request:
        """A single-turn request: `Request.user("Write a haiku.", n=4, temperature=0.8)`."""
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        return cls(messages=tuple(messages), sampling=Sampling(**sampling), n=n)


class Completion(str):
    """One sample's text (a `str`), with metadata: `finish_reason`, `tokens` (completion tokens),
    `prompt_tokens` (this sample's share of the prompt's billed tokens, when the backend knows it),
    `error` and `rejected`.

    `error` is set (and the text empty) when the backend gave up on this one sample. Errors are
    never cached. Most are failures (an endpoint that kept failing, a stall): the pipeline does not
    mark finished a shard that met one, so a rerun asks again. `rejected` marks the others, the
    request's own fault (a prompt longer than the context, HTTP 400), which a rerun would meet again.
    """

    finish_reason: str | None
    tokens: int | None
    error: str | None
    rejected: bool
    prompt_tokens: int | None

    def __new__(
        cls,
        text: str,
        finish_reason: str | None = None,
        tokens: int | None = None,
        error: str | None = None,
        rejected: bool = False,
        prompt_tokens: int | None = None,
    ) -> Completion:
        obj = super().__new__(cls, text)
        obj.finish_reason, obj.tokens, obj.error = finish_reason, tokens, error
        obj.rejected, obj.prompt_tokens = rejected, prompt_tokens
        return obj

    def to_json(self) -> str:
        d = {"text": str(self), "finish_reason": self.finish_reason, "tokens": self.tokens}
        if self.prompt_tokens is not None:
            d["prompt_tokens"] = self.prompt_tokens
        return json.dumps(d)

    @classmethod
    def from_json(cls, raw: str) -> Completion:
        d = json.loads(raw)
        return cls(d["text"], d.get("finish_reason"), d.get("tokens"), prompt_tokens=d.get("prompt_tokens"))


@dataclass
class Job:
    """What a backend must produce: the samples (by index) of one request that are not cached."""

    request: Request
    samples: list[int]


Emit = Callable[[int, int, Completion], None]
"""emit(job_index, sample_index, completion): a backend reports each sample as soon as it has it."""


class Meter(Protocol):
    """What a backend pays its samples through under a budget (`cost.Meter`, `llm.max_cost`)."""

    def affordable(self, jobs: Sequence[Job]) -> int:
        """How many of `jobs`, from the first, the budget can still pay for."""
        ...

    def pay(self, request: Request, completion: Completion) -> None:
        """Charge one answered sample."""
        ...

    def stop(self) -> Exception:
        """What to raise when not even the next job fits."""
        ...


@dataclass
class BackendStats:
    hits: int = 0
    misses: int = 0
    completion_tokens: int = 0
    prompt_tokens: int = 0  # of the generated samples, where the backend reports them (HTTP backends)
    errors: int = 0  # samples given up on, the rejected ones included
    rejected: int = 0  # of those, the ones the backend refused for the request's own fault

    def as_dict(self) -> dict:
        return asdict(self)


# Why a sample failed under `llm.cache_only`: not in the cache, so not asked of the model.
NOT_CACHED = "not in the response cache (llm.cache_only)"
NO_CACHE_TO_REPLAY = "llm.cache_only answers from the response cache, and llm.cache is off"


def cache_key(backend: str, model: str, request: Request, sample_index: int) -> str:
    """Hash of everything that determines a sample; `n` is left out so n=8 reuses n=4's samples."""
    payload = {
        "backend": backend,
        "model": model,
        "messages": list(request.messages),
        "sampling": asdict(request.sampling),
        "sample": sample_index,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def failure(completions: Sequence[Completion]) -> str | None:
    """Why a record whose answers are `completions` cannot pass: `llm_error` when a sample failed
    (the pipeline redoes its shard), `llm_rejected` when the backend refused one for the request's
    own fault (a rerun would not help); None when every sample was answered."""
    if any(c.error and not c.rejected for c in completions):
        return "llm_error"
    return "llm_rejected" if any(c.error for c in completions) else None


def _filled(results: list[list[Completion | None]], kind: str) -> list[list[Completion]]:
    """`results` with every sample there: a missing one is a backend bug, never silently an empty sample."""
    filled: list[list[Completion]] = []
    for ri, row in enumerate(results):
        filled.append([])
        for i, c in enumerate(row):
            if c is None:
                raise RuntimeError(f"backend {kind} returned no sample {i} for request {ri}")
            filled[-1].append(c)
    return filled


class Backend(ABC):
    """Base of all backends. Subclasses set `kind` and implement `_run` (and `close` if needed)."""

    kind: ClassVar[str]

    def __init__(self, model: str, cache: Cache | None = None) -> None:
        self.model = model
        self.cache = cache
        # Set by `autoif run --emit-batch` (batchfile.Emitter.divert): it gets the cache misses
        # (jobs, each job's sample keys, emit) in place of `_run`.
        self.divert: Callable[[Backend, list[Job], list[list[str]], Emit], None] | None = None
        # Set under a budget (`llm.max_cost`, cost.Meter): jobs are sent only in rounds it can pay for.
        self.meter: Meter | None = None
        # Set by `llm.cache_only`: a cache miss fails (NOT_CACHED) instead of reaching the model.
        self.cache_only = False
        self.stats = BackendStats()
        # The message of the latest sample that failed (not rejected; stats.errors counts them all).
        self.last_error: str | None = None
        self._lock = threading.Lock()

    @classmethod
    @abstractmethod
    def from_config(cls, llm, cache: Cache | None = None, paths=None) -> Backend:
        """Build from the `llm` config section (`paths`: the `paths` section, or None)."""

    @property
    def where(self) -> str:
        """Where requests go, as failure messages name it ("requests to WHERE failed")."""
        return f"the {self.kind} backend ({self.model})"

    @property
    def cache_identity(self) -> str:
        """The model's identity in cache keys (a backend may refine it, e.g. with a file hash)."""
        return self.model

    def generate(
        self, requests: Sequence[Request], *, desc: str | None = None, progress: bool = True
    ) -> list[list[Completion]]:
        """For each request, its n completions, in order. Cached samples are not requested again."""
        requests = list(requests)
        # Once a call: a backend's identity may read files (a local model's weights, the CPU's name).
        identity = self.cache_identity
        keys = [[cache_key(self.kind, identity, r, i) for i in range(r.n)] for r in requests]
        found = self.cache.get_many([k for ks in keys for k in ks]) if self.cache else {}
        results: list[list[Completion | None]] = [[None] * r.n for r in requests]
        jobs: list[Job] = []
        job_slots: list[int] = []
        # A sample asked for twice in one call (same request, same index) is generated once and fills
        # both places, as a rerun from the cache would: one key, one text.
        first_slot: dict[str, tuple[int, int]] = {}
        same_as: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for ri, (r, ks) in enumerate(zip(requests, keys)):
            missing = []
            for i, k in enumerate(ks):
                if k in found:
                    results[ri][i] = Completion.from_json(found[k])
                elif k in first_slot:
                    same_as.setdefault(first_slot[k], []).append((ri, i))
                else:
                    first_slot[k] = (ri, i)
                    missing.append(i)
            if missing:
                jobs.append(Job(r, missing))
                job_slots.append(ri)
        n_hits = sum(r.n for r in requests) - sum(len(j.samples) for j in jobs)
        n_missing = sum(len(j.samples) for j in jobs)
        with self._lock:
            self.stats.hits += n_hits
            self.stats.misses += n_missing
        if not jobs:
            return _filled(results, self.kind)

        bar = _progress(n_missing, desc or f"{self.kind}:{self.model}", progress)

        def emit(job_index: int, sample_index: int, completion: Completion) -> None:
            ri = job_slots[job_index]
            if results[ri][sample_index] is not None:
                return  # a backend retried a sample it had already delivered: keep the first
            results[ri][sample_index] = completion
            for rj, j in same_as.get((ri, sample_index), ()):
                results[rj][j] = completion
            with self._lock:
                if completion.error:
                    self.stats.errors += 1
                    if completion.rejected:
                        self.stats.rejected += 1
                    else:
                        self.last_error = completion.error
                else:
                    self.stats.completion_tokens += completion.tokens or 0
                    self.stats.prompt_tokens += completion.prompt_tokens or 0
                if self.meter is not None:
                    self.meter.pay(requests[ri], completion)
            if self.cache is not None and not completion.error:
                self.cache.put(keys[ri][sample_index], completion.to_json())
            bar.update(1)

        try:
            if self.cache_only:
                for job_index, job in enumerate(jobs):
                    for sample_index in job.samples:
                        emit(job_index, sample_index, Completion("", error=NOT_CACHED))
            elif self.divert is not None:
                self.divert(self, jobs, [keys[ri] for ri in job_slots], emit)
            elif self.meter is not None:
                self._run_metered(self.meter, jobs, emit)
            else:
                self._run(jobs, emit)
        finally:
            bar.close()
        return _filled(results, self.kind)

    def _run_metered(self, meter: Meter, jobs: list[Job], emit: Emit) -> None:
        """`_run` in rounds of the jobs the budget can pay for, each sized by what the ones before
        cost; when not even the next job fits, the run stops (what was answered is cached)."""
        start = 0
        while start < len(jobs):
            end = start + meter.affordable(jobs[start:])
            if end == start:
                with self._lock:  # the samples never asked for are no misses
                    self.stats.misses -= sum(len(job.samples) for job in jobs[start:])
                raise meter.stop()

            def shifted(job_index: int, sample_index: int, completion: Completion, base: int = start) -> None:
                emit(base + job_index, sample_index, completion)

            self._run(jobs[start:end], shifted)
            start = end

    @abstractmethod
    def _run(self, jobs: list[Job], emit: Emit) -> None:
        """Produce every sample of every job, calling `emit` for each as soon as it is done."""

    def close(self) -> None:  # noqa: B027 (a no-op default: a backend that holds nothing need not override it)
        """Release engines, threads and connections."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="sample", leave=False, dynamic_ncols=True)
