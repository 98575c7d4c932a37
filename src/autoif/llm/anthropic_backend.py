"""The `anthropic` backend: Claude models through the official `anthropic` SDK, synchronously
(the Messages API) or, with `llm.batch: true`, through Message Batches (half the price).

- The SDK retries 429, 5xx, 529 (overloaded) and connection errors itself (`llm.max_retries`,
  honouring Retry-After); what still fails maps to the synchronous `openai` backend's reasons: a
  rejected request (400) is an error completion (not cached; a rerun asks again), a refused key
  (401/403), an unknown model or path (404) or an unreachable endpoint is a one-line BackendError.
- The Messages API has no `n` and no seed: each sample is its own request (`llm.max_concurrency`
  in flight), the system message goes in `system`, stop strings in `stop_sequences`.
- Usage: `input_tokens` and `output_tokens` of each answer are the sample's prompt and completion
  tokens; `stop_reason` end_turn/stop_sequence is "stop", max_tokens is "length".
- Batch mode shares the state machine of `batch.py` (state under OUT, kill -9 safe, resubmission);
  Message Batches carry no metadata, so a batch whose creation a killed run never recorded is
  found again by its request count among the batches created since the entry was written.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import require
from .base import Backend, BackendError, Completion, Emit, Job, Request
from .batch import BatchAPI, BatchRunner, BatchState, configure_batch, keyed_samples, state_path
from .cache import Cache
from .redact import redact

ANTHROPIC_API = "https://api.anthropic.com"
STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length"}


def anthropic_sdk():
    return require("anthropic", "anthropic", "the anthropic backend")


class AnthropicBackend(Backend):
    kind = "anthropic"

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "ANTHROPIC_API_KEY",
        max_concurrency: int = 32,
        max_retries: int = 8,
        stall_s: float = 60.0,
        cache: Cache | None = None,
    ) -> None:
        super().__init__(model, cache)
        if not base_url and not api_key:
            raise BackendError(
                f"anthropic backend: no API key for {ANTHROPIC_API}: set the environment variable {api_key_env}"
            )
        self.base_url = base_url or ANTHROPIC_API
        self.api_key_env = api_key_env
        self.max_concurrency, self.max_retries, self.stall_s = max_concurrency, max_retries, stall_s
        self._key = api_key or "EMPTY"  # a local server takes any key; the SDK insists on one
        self._client: Any = None

    @classmethod
    def from_config(cls, llm, cache: Cache | None = None, paths=None) -> AnthropicBackend:
        # The openai backend's default variable names the wrong provider's key.
        env = "ANTHROPIC_API_KEY" if llm.api_key_env == "OPENAI_API_KEY" else llm.api_key_env
        return cls(
            llm.model,
            base_url=llm.base_url,
            api_key=os.environ.get(env) or None,
            api_key_env=env,
            max_concurrency=llm.max_concurrency,
            max_retries=llm.max_retries,
            stall_s=llm.stall_s,
            cache=cache,
        )

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = anthropic_sdk().Anthropic(
                base_url=self.base_url, api_key=self._key, max_retries=self.max_retries, timeout=self.stall_s
            )
        return self._client

    def _run(self, jobs: list[Job], emit: Emit) -> None:
        work = [(i, job.request, s) for i, job in enumerate(jobs) for s in job.samples]
        with ThreadPoolExecutor(self.max_concurrency) as pool:
            for (index, _, sample), completion in zip(work, pool.map(lambda w: self._sample(w[1]), work)):
                emit(index, sample, completion)

    def _sample(self, request: Request) -> Completion:
        sdk = anthropic_sdk()
        p = params(self.model, request)
        # Sent as extra body fields: SDK 2.x dropped temperature and top_p from `create`'s signature
        # (recent models fix them), while the API takes them for the models that do not.
        sampling = {k: p.pop(k) for k in ("temperature", "top_p") if k in p}
        try:
            return message_completion(self.client.messages.create(**p, extra_body=sampling).model_dump())
        except sdk.APIStatusError as exc:
            return self._failed(exc.status_code, _detail(exc))
        except sdk.APIConnectionError as exc:
            raise BackendError(f"anthropic backend: cannot reach {self.base_url} ({exc}); check llm.base_url") from None

    def _failed(self, status: int, detail: str) -> Completion:
        if status in (401, 403):
            raise BackendError(
                f"anthropic backend: {self.base_url} refused the API key (HTTP {status}: {detail}); "
                f"put the key in the environment variable {self.api_key_env} (llm.api_key_env)"
            )
        if status == 404:
            raise BackendError(f"anthropic backend: HTTP 404 ({detail}); check llm.model ('{self.model}')")
        reason = status_reason(status)
        # The request's own fault (HTTP 400): a rerun would meet it again, so it does not hold the shard open.
        return Completion("", error=f"{reason}: HTTP {status}: {detail}", rejected=reason == "bad_request")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def status_reason(status: int) -> str:
    """The synchronous openai backend's reason codes for an HTTP status."""
    if status == 429:
        return "rate_limited"
    if status == 408:
        return "timeout"
    return "server_error" if status >= 500 or status == 409 else "bad_request"


def params(model: str, request: Request) -> dict[str, Any]:
    """The Messages API's parameters of one sample of `request`."""
    s = request.sampling
    system = "\n\n".join(m["content"] for m in request.messages if m["role"] == "system")
    p: dict[str, Any] = {
        "model": model,
        "max_tokens": s.max_tokens,
        "messages": [m for m in request.messages if m["role"] != "system"],
        "temperature": s.temperature,
    }
    if s.top_p < 1:
        p["top_p"] = s.top_p
    if system:
        p["system"] = system
    if s.stop:
        p["stop_sequences"] = list(s.stop)
    return p


def message_completion(message: dict[str, Any]) -> Completion:
    """A Messages API answer (as JSON) -> Completion with its usage."""
    text = "".join(block.get("text", "") for block in message.get("content") or [] if block.get("type") == "text")
    usage = message.get("usage") or {}
    reason = message.get("stop_reason")
    finish = STOP_REASONS.get(reason, reason) if reason else None
    return Completion(text, finish, usage.get("output_tokens"), prompt_tokens=usage.get("input_tokens"))


def _detail(exc: Any) -> str:
    """The endpoint's message, secrets out (servers quote the key or the request's headers)."""
    body = exc.body
    inner = body.get("error", body) if isinstance(body, dict) else body
    text = inner.get("message") if isinstance(inner, dict) else inner
    return redact(" ".join(str(text or exc.message).split())[:300])


# ------------------------------------------------------------------------------ Message Batches
class AnthropicBatches(BatchAPI):
    """Anthropic's Message Batches endpoints, through the official SDK."""

    max_requests = 100_000  # the API's limits per batch
    max_bytes = 256 * 1024 * 1024

    def __init__(self, client: Any) -> None:
        self.client = client

    @classmethod
    def connect(cls, endpoint: str, api_key: str) -> AnthropicBatches:
        return cls(anthropic_sdk().Anthropic(base_url=endpoint, api_key=api_key))

    def line(self, custom_id: str, body: dict[str, Any]) -> str:
        import json

        return json.dumps({"custom_id": custom_id, "params": body}, ensure_ascii=False)

    def upload(self, entry: dict[str, Any], lines: list[str]) -> None:
        """Nothing to upload: the requests travel in the create call."""

    def create(self, entry: dict[str, Any], lines: list[str]) -> tuple[str, str]:
        import json

        batch = self._call(lambda: self.client.messages.batches.create(requests=[json.loads(x) for x in lines]))
        return batch.id, batch.processing_status

    def new_token(self, keys: list[str]) -> str:
        return f"{time.time():.3f}:{len(keys)}"

    def find(self, token: str, known: set[str]) -> tuple[str, str] | None:
        """No metadata on Message Batches: the entry is found by its size among the batches created
        since it was written and not known (`token` is `created:size`)."""
        created, size = token.split(":")
        for batch in self._call(lambda: self.client.messages.batches.list(limit=100)):
            counts = batch.request_counts
            total = counts.processing + counts.succeeded + counts.errored + counts.canceled + counts.expired
            fresh = batch.id not in known and _timestamp(batch.created_at) >= float(created) - 1
            if fresh and total == int(size):
                return batch.id, batch.processing_status
        return None

    def status(self, batch_id: str) -> str:
        return self._call(lambda: self.client.messages.batches.retrieve(batch_id)).processing_status

    def results(self, batch_id: str):
        for item in self._call(lambda: self.client.messages.batches.results(batch_id)):
            result = item.result
            if result.type == "succeeded":
                yield item.custom_id, message_completion(result.message.model_dump())
            elif result.type == "errored":
                error = result.error.error
                code = "bad_request" if error.type == "invalid_request_error" else "server_error"
                yield item.custom_id, Completion("", error=f"{code}: {error.type}: {error.message}")
            else:  # canceled, expired: asked again
                yield item.custom_id, Completion("", error=f"expired: the request was {result.type}")

    def cancel(self, batch_id: str) -> str:
        return self._call(lambda: self.client.messages.batches.cancel(batch_id)).processing_status

    @staticmethod
    def _call(make):
        from ..errors import AutoifError

        sdk = anthropic_sdk()
        try:
            return make()
        except sdk.APIStatusError as exc:
            raise AutoifError(f"anthropic batch API: HTTP {exc.status_code}: {_detail(exc)}") from None
        except sdk.APIConnectionError as exc:
            raise AutoifError(f"anthropic batch API: cannot reach the endpoint ({exc}); rerun to resume") from None


def _timestamp(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else float(value)


class AnthropicBatchBackend(AnthropicBackend):
    """The `anthropic` backend with `llm.batch: true`: every request through Message Batches."""

    out: Path
    poll_s = 30.0
    poll_max_s = 600.0
    max_attempts = 3

    @classmethod
    def from_config(cls, llm, cache: Cache | None = None, paths=None) -> AnthropicBatchBackend:
        backend = super().from_config(llm, cache, paths)
        assert isinstance(backend, AnthropicBatchBackend)
        configure_batch(backend, llm, paths)
        return backend

    def _run(self, jobs: list[Job], emit: Emit) -> None:
        where, bodies = keyed_samples(
            self.kind, self.cache_identity, jobs, lambda job, _sample: params(self.model, job.request)
        )
        header = {"kind": self.kind, "endpoint": self.base_url, "model": self.model, "api_key_env": self.api_key_env}
        state = BatchState(state_path(self.out, self.kind, self.base_url, self.cache_identity), header)
        runner = BatchRunner(
            AnthropicBatches(self.client),
            state,
            poll_s=self.poll_s,
            poll_max_s=self.poll_max_s,
            max_attempts=self.max_attempts,
        )
        runner.run(bodies, lambda key, completion: emit(*where[key], completion))
