"""The `openai` backend: any OpenAI-compatible chat endpoint (vLLM, SGLang, llama.cpp server, Ollama,
LiteLLM, hosted APIs) through the official `openai` async client.

Why it is built this way:
- One asyncio loop in a background thread, started on first use: `generate()` stays synchronous for
  the stages, works where a loop is already running (Jupyter), and keeps the connection pool alive
  across calls.
- The client's own retries are off; ours retry 429, 408/409, 5xx, stalls and connection errors
  with exponential backoff and full jitter, never sooner than the server's Retry-After, and are
  counted in `stats`. A request that receives no byte for `stall_s` (the client's read, write,
  connect and pool timeouts) is logged and retried; while requests are in flight a line every
  `heartbeat_s` says how many and for how long, so a hung endpoint is never silent.
- A request that keeps failing after every retry becomes a `Completion` with `error` set; the stage
  goes on, the pipeline does not mark the shard finished, and a rerun tries it again (errors are
  not cached). One that the server rejects (400: bad request, prompt longer than the context) is
  also `rejected`: a rerun would meet the same answer, so it does not hold its shard open.
  A fault of the whole endpoint raises a one-line `BackendError` instead (the CLI exits 2): no
  connection after every retry (wrong URL, server down: every further request would fail the same
  way), a refused API key (401/403), an unknown model or path (404), or an answer that is not an
  API's JSON (an HTML page: a wrong base_url). Finished samples are already cached, so a rerun resumes.
- `n` is passed through; a server that returns fewer choices (llama.cpp answers n=2 with one) is
  remembered, and the missing samples are requested one by one, each with its own seed
  (`Sampling.seed_for(i)`), so samples differ yet are reproducible. Sample i of a request gets the
  same seed whichever way it was requested.
- Every sample is emitted (and so cached) the moment its answer arrives: a kill -9 loses only the
  requests in flight.
- The API key is read from the environment variable `llm.api_key_env` and goes only into the
  client's Authorization header: never into cache keys, logs, errors or files. Every message from
  the endpoint is redacted (`redact.py`) before it goes anywhere, as servers quote keys and headers.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import openai

from .base import Backend, BackendError, BackendStats, Completion, Emit, Job, Request
from .cache import Cache
from .redact import redact

log = logging.getLogger(__name__)

T = TypeVar("T")

# The model name that means "the embedded SmolLM2" to the local backend; here: the one model the
# endpoint serves.
EMBEDDED = "embedded"
# Without a base_url the client talks to the OpenAI API, which needs a real key.
OPENAI_API = "https://api.openai.com/v1"
# Local servers (vLLM, llama.cpp, Ollama...) accept any key, but the client insists on one.
NO_KEY = "EMPTY"
RETRYABLE_STATUS = frozenset({408, 409, 429})  # plus every 5xx
# Failures that are the request's own fault (HTTP 400; fewer choices than asked with fan_out=never):
# a rerun would meet them again, so they do not keep a shard unfinished.
_REJECTIONS = frozenset({"bad_request", "short_answer"})
_DETAIL_CHARS = 300
# Tasks created ahead of the concurrency limit: enough to keep every slot busy, few enough that a
# million requests do not become a million coroutines at once.
_WINDOW_PER_SLOT = 4


@dataclass
class OpenAIStats(BackendStats):
    """BackendStats plus what HTTP adds."""

    requests: int = 0  # HTTP requests sent, retries included
    retries: int = 0  # requests that repeated a failed one
    fanned_out: int = 0  # samples of an n > 1 request that were requested one by one


class _Failure(Exception):
    """One request gave up: becomes an error `Completion` ("code: message")."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        self.code, self.message = code, message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass
class _Attempt:
    """Why one HTTP attempt failed, and whether trying again may help."""

    code: str
    message: str
    retryable: bool
    retry_after: float | None = None


class OpenAIBackend(Backend):
    kind = "openai"
    stats: OpenAIStats

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 32,
        max_retries: int = 8,
        stall_s: float = 60.0,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        fan_out: str = "auto",
        extra_body: dict[str, Any] | None = None,
        cache: Cache | None = None,
    ) -> None:
        super().__init__(model, cache)
        if fan_out not in ("auto", "always", "never"):
            raise BackendError(f"openai backend: fan_out must be auto, always or never, got '{fan_out}'")
        if not base_url and not api_key:
            raise BackendError(
                f"openai backend: no API key for {OPENAI_API}: set the environment variable "
                f"{api_key_env}, or llm.base_url for a local server"
            )
        self.stats = OpenAIStats()
        self.base_url = base_url or OPENAI_API
        self.endpoint = _display_url(self.base_url)
        self.api_key_env = api_key_env
        self._api_key = api_key or NO_KEY
        self._secret = api_key or ""  # what to redact: the real key, not the placeholder
        self.max_concurrency = max_concurrency
        self.max_retries = max_retries
        self.stall_s = stall_s
        # Seconds between the lines saying what is in flight (public: tests make it short).
        self.heartbeat_s = 30.0
        self._in_flight: dict[int, float] = {}  # id of a running attempt -> when it was sent (loop thread only)
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.fan_out = fan_out
        self.extra_body = dict(extra_body or {})
        self._served_model: str | None = None if model == EMBEDDED else model
        self._n_refused = False  # learnt from the first short answer to an n > 1 request
        self._reached = False  # the endpoint has answered at least once
        self._warned: set[str] = set()
        self._rng = random.Random()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Any = None
        self._slots: asyncio.Semaphore | None = None

    @classmethod
    def from_config(cls, llm, cache: Cache | None = None, paths=None) -> OpenAIBackend:
        return cls(
            llm.model,
            base_url=llm.base_url,
            api_key=os.environ.get(llm.api_key_env) or None,
            api_key_env=llm.api_key_env,
            max_concurrency=llm.max_concurrency,
            max_retries=llm.max_retries,
            stall_s=llm.stall_s,
            backoff_base_s=llm.backoff_base_s,
            backoff_max_s=llm.backoff_max_s,
            fan_out=llm.fan_out,
            extra_body=llm.extra_body,
            cache=cache,
        )

    # ------------------------------------------------------------------------------ identity
    @property
    def served_model(self) -> str:
        """The model name sent to the endpoint; "embedded" asks the endpoint (/models) once."""
        if self._served_model is None:
            self._served_model = self._submit(self._only_served_model())
        return self._served_model

    @property
    def cache_identity(self) -> str:
        # extra_body changes the samples (top_k, repetition_penalty...), so it is part of the key.
        extra = f" {json.dumps(self.extra_body, sort_keys=True)}" if self.extra_body else ""
        return self.served_model + extra

    async def _only_served_model(self) -> str:
        try:
            listing = await self._call(lambda: self._client.models.list())
        except _Failure as failure:
            raise BackendError(
                f"openai backend: llm.model is '{EMBEDDED}' and {self.endpoint} does not list "
                f"its models ({failure}): set llm.model"
            ) from None
        ids = sorted(m.id for m in listing.data)
        if len(ids) != 1:
            served = ", ".join(ids[:10]) or "none"
            raise BackendError(
                f"openai backend: llm.model is '{EMBEDDED}' but {self.endpoint} serves "
                f"{len(ids)} models ({served}): set llm.model to the one to use"
            )
        log.info("openai backend: using %s, the one model %s serves", ids[0], self.endpoint)
        return ids[0]

    @property
    def where(self) -> str:
        return self.endpoint

    # ------------------------------------------------------------------------------- running
    def _run(self, jobs: list[Job], emit: Emit) -> None:
        self._submit(self._run_all(jobs, emit))

    def _submit(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the backend's loop thread and wait for it; Ctrl-C cancels it."""
        with self._lock:  # generate() may be called from several threads; they share one loop
            loop = self._loop if self._loop is not None else self._start_loop()
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def _start_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="autoif-openai", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open_client(), loop).result()
        return loop

    async def _open_client(self) -> None:
        # The pool holds as many connections as requests may be in flight, all kept alive. openai 1.x
        # builds on httpx, later majors on httpx2: take Limits from the library its client extends.
        http = importlib.import_module(openai.DefaultAsyncHttpxClient.__mro__[1].__module__)
        limits = http.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=self._api_key,
            timeout=self.stall_s,
            max_retries=0,
            # One number for httpx's connect, read, write and pool timeouts: no byte for stall_s
            # in any phase of a request is a stall.
            http_client=openai.DefaultAsyncHttpxClient(limits=limits, timeout=http.Timeout(self.stall_s)),
        )
        self._slots = asyncio.Semaphore(self.max_concurrency)

    async def _run_all(self, jobs: list[Job], emit: Emit) -> None:
        window = _WINDOW_PER_SLOT * self.max_concurrency
        todo = iter(enumerate(jobs))
        running: set[asyncio.Task] = set()
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            while True:
                while len(running) < window and (item := next(todo, None)) is not None:
                    running.add(asyncio.create_task(self._job(*item, emit)))
                if not running:
                    return
                done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                errors = [exc for exc in (task.exception() for task in done) if exc is not None]
                if errors:  # a BackendError ends the run; the finally cancels the rest
                    raise errors[0]
        finally:
            for task in (*running, heartbeat):
                task.cancel()
            await asyncio.gather(*running, heartbeat, return_exceptions=True)

    async def _heartbeat(self) -> None:
        """Every heartbeat_s, one line on the requests in flight: a slow or hung endpoint is seen."""
        while True:
            await asyncio.sleep(self.heartbeat_s)
            if self._in_flight:
                oldest = time.monotonic() - min(self._in_flight.values())
                log.info(
                    "openai backend: %d request(s) in flight to %s, the oldest for %.0fs (llm.stall_s=%g)",
                    len(self._in_flight),
                    self.endpoint,
                    oldest,
                    self.stall_s,
                )

    async def _job(self, job_index: int, job: Job, emit: Emit) -> None:
        request, todo = job.request, list(job.samples)
        one_by_one = self.fan_out == "always" or (self.fan_out == "auto" and self._n_refused)
        if len(todo) > 1 and not one_by_one:
            try:
                got = await self._complete(request, len(todo), request.sampling.seed_for(todo[0]))
            except _Failure as failure:
                got = [self._failed(failure)] * len(todo)
            for sample, completion in zip(todo, got):
                emit(job_index, sample, completion)
            if len(got) == len(todo):
                return
            todo = todo[len(got) :]
            if self.fan_out == "never":
                short = self._failed(
                    _Failure(
                        "short_answer", f"asked for {len(job.samples)} choices, got {len(got)} (llm.fan_out=never)"
                    )
                )
                for sample in todo:
                    emit(job_index, sample, short)
                return
            if len(got) <= 1 and not self._n_refused:
                self._n_refused = True
                log.info(
                    "openai backend: %s returns one choice per request; requesting samples one by one", self.endpoint
                )
        if len(job.samples) > 1:
            with self._lock:
                self.stats.fanned_out += len(todo)
        await asyncio.gather(*(self._sample(job_index, request, sample, emit) for sample in todo))

    async def _sample(self, job_index: int, request: Request, sample: int, emit: Emit) -> None:
        try:
            got = await self._complete(request, 1, request.sampling.seed_for(sample))
            completion = got[0] if got else self._failed(_Failure("empty_answer", "the server returned no choice"))
        except _Failure as failure:
            completion = self._failed(failure)
        emit(job_index, sample, completion)

    async def _complete(self, request: Request, n: int, seed: int | None) -> list[Completion]:
        """One chat completion with n choices; the list may be shorter than n."""
        s = request.sampling
        # generate() resolved the model (cache_identity) before calling _run.
        params: dict[str, Any] = {
            "model": self._served_model,
            "messages": list(request.messages),
            "temperature": s.temperature,
            "top_p": s.top_p,
            "max_tokens": s.max_tokens,
        }
        if n > 1:
            params["n"] = n
        if s.stop:
            params["stop"] = list(s.stop)
        if seed is not None:
            params["seed"] = seed
        if self.extra_body:
            params["extra_body"] = self.extra_body
        answer = await self._call(lambda: self._client.chat.completions.create(**params))
        if isinstance(answer, str):  # the client hands back a body that is not JSON as text
            raise self._not_an_api(answer)
        choices = sorted(getattr(answer, "choices", None) or [], key=lambda c: c.index)[:n]
        usage = getattr(answer, "usage", None)
        shares, prompt_shares = (
            _shares(getattr(usage, f, None), len(choices)) for f in ("completion_tokens", "prompt_tokens")
        )
        return [
            Completion(c.message.content or "", c.finish_reason, tokens, prompt_tokens=prompt)
            for c, tokens, prompt in zip(choices, shares, prompt_shares)
        ]

    # ------------------------------------------------------------------------------- retries
    async def _call(self, make: Callable[[], Awaitable[T]]) -> T:
        """One API call, retried per the policy; raises _Failure (give up) or BackendError (fatal)."""
        retries = 0
        slots = self._slots
        assert slots is not None  # made by _open_client, which runs before any call
        while True:
            async with slots:
                with self._lock:
                    self.stats.requests += 1
                token = object()
                self._in_flight[id(token)] = time.monotonic()
                try:
                    result = await make()
                    self._reached = True
                    return result
                except openai.APIStatusError as exc:
                    self._reached = True
                    attempt = self._status_attempt(exc)
                except openai.APITimeoutError:
                    attempt = _Attempt("stalled", f"no byte from the endpoint for {self.stall_s:g}s", True)
                    log.warning(
                        "openai backend: a request to %s stalled (no byte for %gs, llm.stall_s); %s",
                        self.endpoint,
                        self.stall_s,
                        "retrying" if retries < self.max_retries else "giving up on it",
                    )
                except openai.APIConnectionError as exc:
                    attempt = _Attempt("connection", _root_cause(exc, self._secret), True)
                except json.JSONDecodeError as exc:  # a 2xx whose body claims to be JSON but is not
                    raise self._not_an_api(exc.doc) from None
                finally:
                    del self._in_flight[id(token)]
            if not attempt.retryable:
                raise _Failure(attempt.code, attempt.message)
            if attempt.code == "connection" and not self._reached and "unreachable" not in self._warned:
                self._warned.add("unreachable")
                log.warning(
                    "openai backend: cannot reach %s yet (%s); retrying up to %d times",
                    self.endpoint,
                    attempt.message,
                    self.max_retries,
                )
            if retries >= self.max_retries:
                tries = f"{retries + 1} tr{'y' if retries == 0 else 'ies'}"
                if attempt.code == "connection":
                    what = "cannot reach" if not self._reached else "lost the connection to"
                    raise BackendError(
                        f"openai backend: {what} {self.endpoint}: {attempt.message} (after {tries};"
                        " check llm.base_url and that the server is running)"
                    )
                raise _Failure(attempt.code, f"{attempt.message} (gave up after {tries})")
            delay = self._backoff(retries, attempt.retry_after)
            log.debug("openai backend: %s, retry %d/%d in %.2fs", attempt.message, retries + 1, self.max_retries, delay)
            retries += 1
            with self._lock:
                self.stats.retries += 1
            await asyncio.sleep(delay)

    def _not_an_api(self, body: str) -> BackendError:
        start = redact(" ".join(body.split())[:80], self._secret)
        return BackendError(
            f"openai backend: {self.endpoint} answered with something other than an API's JSON "
            f"('{start}'); check llm.base_url (it usually ends in /v1)"
        )

    def _status_attempt(self, exc) -> _Attempt:
        status, detail = exc.status_code, _detail(exc, self._secret)
        if status in (401, 403):
            raise BackendError(
                f"openai backend: {self.endpoint} refused the API key (HTTP {status}: {detail}); "
                f"put the key in the environment variable {self.api_key_env} (llm.api_key_env)"
            )
        if status == 404:
            raise BackendError(
                f"openai backend: {self.endpoint} answered HTTP 404 ({detail}); check llm.model "
                f"('{self._served_model}') and llm.base_url (it usually ends in /v1)"
            )
        if status in RETRYABLE_STATUS or status >= 500:
            code = "rate_limited" if status == 429 else "timeout" if status == 408 else "server_error"
            return _Attempt(code, f"HTTP {status}: {detail}", True, _retry_after(exc.response.headers))
        return _Attempt("bad_request", f"HTTP {status}: {detail}", False)

    def _backoff(self, retries: int, retry_after: float | None) -> float:
        """Full jitter: uniform in [0, base * 2^retries] capped at backoff_max_s; never below Retry-After."""
        delay = self._rng.uniform(0, min(self.backoff_max_s, self.backoff_base_s * 2**retries))
        return max(delay, retry_after or 0.0)

    def _failed(self, failure: _Failure) -> Completion:
        if failure.code not in self._warned:  # the first of each kind; stats.errors counts them all
            self._warned.add(failure.code)
            log.warning(
                "openai backend: a request failed (%s); it is recorded as an error completion and "
                "retried on the next run",
                failure,
            )
        return Completion("", error=str(failure), rejected=failure.code in _REJECTIONS)

    # -------------------------------------------------------------------------------- closing
    def close(self) -> None:
        if self._loop is None:
            return
        loop, self._loop = self._loop, None
        if self._client is not None:
            asyncio.run_coroutine_threadsafe(self._client.close(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        assert self._thread is not None  # started with the loop
        self._thread.join()
        loop.close()


def _shares(total: int | None, parts: int) -> list[int | None]:
    """A usage figure of a whole answer split over its choices; unknown (None) for each when not reported."""
    return [None] * parts if total is None else list(_split(total, parts))


def _split(total: int, parts: int) -> list[int]:
    """A usage figure shared by several choices, split so that the shares add up to it."""
    if parts == 0:
        return []
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _retry_after(headers) -> float | None:
    """Seconds the server asks us to wait (Retry-After in seconds or as an HTTP date, retry-after-ms)."""
    import email.utils
    import time

    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        return max(0.0, email.utils.mktime_tz(parsed) - time.time()) if parsed else None


def _detail(exc, api_key: str) -> str:
    """The server's own error message, on one short line, without secrets."""
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        text = inner.get("message") if isinstance(inner, dict) else inner
    else:
        text = body
    text = str(text or exc.message or type(exc).__name__)
    return redact(" ".join(text.split()), api_key)[:_DETAIL_CHARS]


def _root_cause(exc: BaseException, api_key: str) -> str:
    """'connection refused' rather than the client's generic 'Connection error.'."""
    cause = exc
    for _ in range(16):  # the chain is short; the bound only guards against a pathological one
        nxt = cause.__cause__ or cause.__context__
        if nxt is None:
            break
        cause = nxt
        if isinstance(cause, OSError) and cause.errno:
            return os.strerror(cause.errno).lower()
    text = redact(" ".join(str(cause).split()), api_key)
    return text[:_DETAIL_CHARS] if text and cause is not exc else "connection error"


def _display_url(url: str) -> str:
    """The endpoint as shown in messages: without any user:password@ part."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
