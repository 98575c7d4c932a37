"""Batch mode (`llm.batch: true`): a stage's requests go to a provider's batch API (half the price)
instead of the synchronous endpoint, tracked in a state file under OUT so that kill -9 at any
moment and a rerun resumes polling the same batches and never submits a request twice.

The state (`OUT/batches/<kind>-<hash>.json`, written atomically) holds every batch this backend
created: a token of ours, the custom_ids it holds (each the sample's LLM cache key), the provider's
file and batch ids and the last status seen. The order of writes makes it safe:

1. the entry is written (status `uploading`, its token, its custom_ids) before anything is sent;
2. the input file is uploaded and its id written (`submitting`); a kill before that re-uploads on
   the rerun: a file is not a request;
3. the batch is created with the token in its metadata and its id written; a kill between the
   call and the write is resolved on the rerun by finding the batch by its token (listing the
   provider's batches) before creating anything.

Then each live batch is polled with a growing interval (`llm.batch_poll_s` doubling up to
`llm.batch_poll_max_s`); a finished one's output and error files are read, each result emitted
(and so cached) as the synchronous path would: the same Completion, the same error reasons. A
request that the provider rejected (4xx) is an error completion like on the synchronous path;
one that failed on the server, expired or was cancelled is resubmitted in a new batch, up to
`llm.batch_max_attempts` submissions. The entry is marked `collected` only once every result was
emitted.

`OpenAIBatches` speaks the OpenAI Files and Batches API; `anthropic_backend.py` has the same for
Anthropic's Message Batches.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..errors import AutoifError
from ..jsonl import atomic_write_text
from ..registry import Registry
from .base import BackendError, Completion, Emit, Job, cache_key
from .batchfile import chat_body, completion_of, request_line
from .cache import Cache
from .openai_backend import NO_KEY, OpenAIBackend

log = logging.getLogger(__name__)

# A provider's batch statuses after which nothing more happens to it.
FINAL = frozenset({"completed", "expired", "cancelled", "failed", "ended"})
COLLECTED = "collected"  # ours: every result of a final batch was emitted
# Errors worth another submission: the request itself was fine.
RETRYABLE = ("server_error", "expired", "rate_limited", "timeout")


class BatchState:
    """The state file of one backend: its batches, and how often each custom_id was submitted."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self.data: dict[str, Any] = {**header, "batches": [], "attempts": {}}
        if path.is_file():
            try:
                saved = json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                raise AutoifError(f"batch state {path} is unreadable ({exc.msg}); move it away to start anew") from None
            # The saved header (kind, endpoint...) unless a new one is given; the batches as saved.
            self.data = {**saved, **header, "batches": saved.get("batches", []), "attempts": saved.get("attempts", {})}

    @property
    def batches(self) -> list[dict[str, Any]]:
        return self.data["batches"]

    @property
    def attempts(self) -> dict[str, int]:
        return self.data["attempts"]

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.data, indent=1) + "\n")


def keyed_samples(
    kind: str, identity: str, jobs: list[Job], body: Callable[[Job, int], dict[str, Any]]
) -> tuple[dict[str, tuple[int, int]], dict[str, dict[str, Any]]]:
    """Each sample of `jobs` by its cache key (a batch line's custom_id): where its answer goes
    back (job index, sample index), and its request body for the provider."""
    where: dict[str, tuple[int, int]] = {}
    bodies: dict[str, dict[str, Any]] = {}
    for index, job in enumerate(jobs):
        for sample in job.samples:
            key = cache_key(kind, identity, job.request, sample)
            where[key], bodies[key] = (index, sample), body(job, sample)
    return where, bodies


def configure_batch(backend: Any, llm: Any, paths: Any) -> None:
    """What a batch backend of either provider reads of the config: where its state lives
    (under paths.out), how it polls and how often it submits a request at most."""
    if paths is None:
        raise BackendError(
            "llm.batch keeps its batches' state under paths.out: build the backend from the whole config"
        )
    backend.out = Path(paths.out).expanduser()
    backend.poll_s, backend.poll_max_s = llm.batch_poll_s, llm.batch_poll_max_s
    backend.max_attempts = llm.batch_max_attempts


def state_path(out: str | Path, kind: str, endpoint: str, identity: str) -> Path:
    digest = hashlib.sha256(f"{endpoint}\n{identity}".encode()).hexdigest()[:12]
    return Path(out).expanduser() / "batches" / f"{kind}-{digest}.json"


def read_states(out: str | Path) -> list[BatchState]:
    """Every batch state file under OUT (for `autoif batches`)."""
    return [BatchState(p, {}) for p in sorted((Path(out).expanduser() / "batches").glob("*.json"))]


class BatchAPI(ABC):
    """What batch mode needs of a provider. Each call raises AutoifError for a fault of the whole API."""

    max_requests: int
    max_bytes: int

    @classmethod
    @abstractmethod
    def connect(cls, endpoint: str, api_key: str) -> BatchAPI:
        """The API at `endpoint` (as a state file records it), with the SDK's client."""

    @abstractmethod
    def line(self, custom_id: str, body: dict[str, Any]) -> str:
        """One request line of the input (the provider's format)."""

    @abstractmethod
    def upload(self, entry: dict[str, Any], lines: list[str]) -> None:
        """Send the input where the provider wants it (set `entry["input_file_id"]` if a file)."""

    @abstractmethod
    def create(self, entry: dict[str, Any], lines: list[str]) -> tuple[str, str]:
        """Create the batch, tagged with `entry["token"]`; (batch id, status)."""

    def new_token(self, keys: list[str]) -> str:
        """What identifies a batch of ours at the provider before we know its id."""
        return uuid.uuid4().hex

    @abstractmethod
    def find(self, token: str, known: set[str]) -> tuple[str, str] | None:
        """(id, status) of a batch created with `token` and not among `known` ids, if the provider has one."""

    @abstractmethod
    def status(self, batch_id: str) -> str: ...

    @abstractmethod
    def results(self, batch_id: str) -> Iterable[tuple[str, Completion]]:
        """(custom_id, completion) of every request that has a result (an output or an error)."""

    @abstractmethod
    def cancel(self, batch_id: str) -> str: ...


class BatchRunner:
    """Runs samples through a `BatchAPI`, resuming from and recording to a `BatchState`."""

    def __init__(
        self,
        api: BatchAPI,
        state: BatchState,
        *,
        poll_s: float,
        poll_max_s: float,
        max_attempts: int,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api, self.state = api, state
        self.poll_s, self.poll_max_s, self.max_attempts = poll_s, poll_max_s, max_attempts
        self.sleep = sleep

    def run(self, bodies: dict[str, dict[str, Any]], emit: Callable[[str, Completion], None]) -> None:
        """Every custom_id of `bodies` emitted once: its result, or an error completion."""
        wanted = dict(bodies)
        last_error: dict[str, str] = {}
        while wanted:
            live = [b for b in self.state.batches if b["status"] != COLLECTED and wanted.keys() & set(b["custom_ids"])]
            for entry in live:  # being submitted when a run was killed: finish that submission
                if entry.get("id"):
                    continue
                if entry["status"] == "submitting" and (found := self.api.find(entry["token"], self._known())):
                    entry["id"], entry["status"] = found
                    self.state.save()
                elif all(k in bodies for k in entry["custom_ids"]):
                    self._resume(entry, bodies)
                else:  # it also holds requests no longer asked for: never created, so it is let go
                    entry["status"] = COLLECTED
                    self.state.save()
            live = [b for b in live if b["status"] != COLLECTED]
            held = {k for b in live for k in b["custom_ids"]}
            fresh = []
            for key in [k for k in wanted if k not in held]:
                if self.state.attempts.get(key, 0) >= self.max_attempts:
                    why = last_error.get(key, "expired: no result")
                    emit(key, Completion("", error=f"{why} (after {self.max_attempts} batch submissions)"))
                    del wanted[key]
                else:
                    fresh.append(key)
            live += [self._submit(chunk, wanted) for chunk in self._chunks(fresh, wanted)]
            for entry in live:
                self._finish(entry)
                for key, completion in self.api.results(entry["id"]) if entry.get("id") else ():
                    if key not in wanted:
                        continue
                    code = (completion.error or "").split(":", 1)[0]
                    if completion.error and code in RETRYABLE:
                        last_error[key] = completion.error
                        continue
                    emit(key, completion)
                    del wanted[key]
                for key in set(entry["custom_ids"]) & wanted.keys():
                    last_error.setdefault(key, f"expired: the batch ended ({entry['status']}) before this request ran")
                entry["status"] = COLLECTED
                self.state.save()

    def _chunks(self, keys: list[str], bodies: dict[str, dict[str, Any]]) -> Iterable[list[str]]:
        """Groups within the provider's limits on requests and bytes per batch."""
        chunk: list[str] = []
        size = 0
        for key in keys:
            n = len(self.api.line(key, bodies[key]).encode()) + 1
            if chunk and (len(chunk) >= self.api.max_requests or size + n > self.api.max_bytes):
                yield chunk
                chunk, size = [], 0
            chunk.append(key)
            size += n
        if chunk:
            yield chunk

    def _submit(self, keys: list[str], bodies: dict[str, dict[str, Any]]) -> dict[str, Any]:
        entry = {
            "token": self.api.new_token(keys),
            "custom_ids": keys,
            "status": "uploading",
            "id": None,
            "created": time.time(),
        }
        for key in keys:
            self.state.attempts[key] = self.state.attempts.get(key, 0) + 1
        self.state.batches.append(entry)
        self.state.save()  # before anything is sent
        log.info("batch: submitting %d request(s)", len(keys))
        self._resume(entry, bodies)
        return entry

    def _resume(self, entry: dict[str, Any], bodies: dict[str, dict[str, Any]]) -> None:
        """Bring a batch that was being submitted (now or by a killed run) to a created one."""
        if entry.get("id"):
            return
        lines = [self.api.line(k, bodies[k]) for k in entry["custom_ids"]]
        if entry["status"] == "uploading":
            self.api.upload(entry, lines)
            entry["status"] = "submitting"
            self.state.save()
        found = self.api.find(entry["token"], self._known())
        entry["id"], entry["status"] = found if found else self.api.create(entry, lines)
        self.state.save()

    def _known(self) -> set[str]:
        return {b["id"] for b in self.state.batches if b.get("id")}

    def _finish(self, entry: dict[str, Any]) -> None:
        """Poll until the batch is final, waiting longer each time."""
        wait = self.poll_s
        while True:
            if not entry.get("id"):
                raise AutoifError(f"batch {entry['token']} was never created; rerun to submit it")
            status = self.api.status(entry["id"])
            if status != entry["status"]:
                entry["status"] = status
                self.state.save()
                log.info("batch %s: %s", entry["id"], status)
            if status in FINAL:
                return
            self.sleep(wait)
            wait = min(self.poll_max_s, wait * 2)


# ------------------------------------------------------------------------------------- OpenAI
class OpenAIBatches(BatchAPI):
    """The OpenAI Files and Batches endpoints, through the official client."""

    max_requests = 50_000  # the API's limits per batch
    max_bytes = 200 * 1024 * 1024

    def __init__(self, client: Any, url: str = "/v1/chat/completions") -> None:
        self.client, self.url = client, url

    @classmethod
    def connect(cls, endpoint: str, api_key: str) -> OpenAIBatches:
        import openai

        return cls(openai.OpenAI(base_url=endpoint, api_key=api_key))

    def line(self, custom_id: str, body: dict[str, Any]) -> str:
        return request_line(custom_id, body, self.url)

    def upload(self, entry: dict[str, Any], lines: list[str]) -> None:
        data = ("\n".join(lines) + "\n").encode()
        entry["input_file_id"] = self._call(
            lambda: self.client.files.create(file=("autoif-batch.jsonl", data), purpose="batch")
        ).id

    def create(self, entry: dict[str, Any], lines: list[str]) -> tuple[str, str]:
        batch = self._call(
            lambda: self.client.batches.create(
                input_file_id=entry["input_file_id"],
                endpoint=self.url,
                completion_window="24h",
                metadata={"autoif_token": entry["token"]},
            )
        )
        return batch.id, batch.status

    def find(self, token: str, known: set[str]) -> tuple[str, str] | None:
        for batch in self._call(lambda: self.client.batches.list(limit=100)):
            if (batch.metadata or {}).get("autoif_token") == token and batch.id not in known:
                return batch.id, batch.status
        return None

    def status(self, batch_id: str) -> str:
        return self._call(lambda: self.client.batches.retrieve(batch_id)).status

    def results(self, batch_id: str) -> Iterable[tuple[str, Completion]]:
        batch = self._call(lambda: self.client.batches.retrieve(batch_id))
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            text = self._call(functools.partial(self.client.files.content, file_id)).text
            for raw in text.splitlines():
                if raw.strip():
                    line = json.loads(raw)
                    yield line["custom_id"], completion_of(line)

    def cancel(self, batch_id: str) -> str:
        return self._call(lambda: self.client.batches.cancel(batch_id)).status

    @staticmethod
    def _call(make: Callable[[], Any]) -> Any:
        """One API call (the client retries 429/5xx/connection errors itself); what is left is fatal."""
        import openai

        try:
            return make()
        except openai.APIStatusError as exc:
            raise AutoifError(
                f"batch API: HTTP {exc.status_code}: {' '.join(str(exc.message).split())[:300]}"
            ) from None
        except openai.APIConnectionError as exc:
            raise AutoifError(f"batch API: cannot reach the endpoint ({exc}); rerun to resume polling") from None


class OpenAIBatchBackend(OpenAIBackend):
    """The `openai` backend with `llm.batch: true`: the same cache keys and completions, every
    request through the Files and Batches endpoints of `llm.base_url` (or the OpenAI API)."""

    out: Path
    poll_s = 30.0
    poll_max_s = 600.0
    max_attempts = 3
    batch_key = NO_KEY  # from llm.api_key_env; only ever sent in the client's header

    @classmethod
    def from_config(cls, llm, cache: Cache | None = None, paths=None) -> OpenAIBatchBackend:
        backend = super().from_config(llm, cache, paths)
        assert isinstance(backend, OpenAIBatchBackend)
        configure_batch(backend, llm, paths)
        backend.batch_key = os.environ.get(llm.api_key_env) or NO_KEY
        return backend

    def state(self) -> BatchState:
        header = {
            "kind": self.kind,
            "endpoint": self.endpoint,
            "model": self.served_model,
            "api_key_env": self.api_key_env,
        }
        return BatchState(state_path(self.out, self.kind, self.endpoint, self.cache_identity), header)

    def client(self) -> Any:
        import openai

        return openai.OpenAI(
            base_url=self.base_url, api_key=self.batch_key, max_retries=self.max_retries, timeout=self.stall_s
        )

    def _run(self, jobs: list[Job], emit: Emit) -> None:
        def body(job: Job, sample: int) -> dict[str, Any]:
            return chat_body(self.served_model, job, sample, self.extra_body)

        where, bodies = keyed_samples(self.kind, self.cache_identity, jobs, body)
        client = self.client()
        try:
            runner = BatchRunner(
                OpenAIBatches(client),
                self.state(),
                poll_s=self.poll_s,
                poll_max_s=self.poll_max_s,
                max_attempts=self.max_attempts,
            )
            runner.run(bodies, lambda key, completion: emit(*where[key], completion))
        finally:
            client.close()


# ------------------------------------------------------------------------------ `autoif batches`
def batch_rows(out: str | Path) -> list[tuple[str, str, str, str, int, str]]:
    """(state file, kind, model, batch id, requests, last status seen) of every batch under OUT."""
    rows = []
    for st in read_states(out):
        for entry in st.batches:
            rows.append(
                (
                    st.path.name,
                    st.data.get("kind", "?"),
                    st.data.get("model", "?"),
                    entry.get("id") or f"(not created: {entry['token'][:8]})",
                    len(entry["custom_ids"]),
                    entry["status"],
                )
            )
    return rows


def cancel_batches(out: str | Path) -> list[tuple[str, str]]:
    """Ask the provider to cancel every batch under OUT that is not final; (id, status it answered)."""
    done = []
    for st in read_states(out):
        live = [e for e in st.batches if e.get("id") and e["status"] not in FINAL | {COLLECTED}]
        if not live:
            continue
        api = api_for(st.data)
        for entry in live:
            entry["status"] = api.cancel(entry["id"])
            st.save()
            done.append((entry["id"], entry["status"]))
    return done


# The batch API of each backend kind, for a state file's batches (loaded by name: anthropic_backend
# builds on this module).
BATCH_APIS = Registry(
    "batch backend",
    {"openai": "autoif.llm.batch:OpenAIBatches", "anthropic": "autoif.llm.anthropic_backend:AnthropicBatches"},
)


def api_for(header: dict[str, Any]) -> BatchAPI:
    """The batch API a state file's batches live at (its endpoint, the key from its api_key_env)."""
    key = os.environ.get(header.get("api_key_env") or "") or NO_KEY
    return BATCH_APIS.load(str(header.get("kind"))).connect(header["endpoint"], key)
