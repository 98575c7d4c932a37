"""Batch request and result files in the OpenAI Batch API's JSONL format, which vLLM's
`run-batch` reads and writes too.

A request line is `{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body"}`, one
per sample: `custom_id` is the sample's LLM cache key, so a result lands in the cache under the
key the run looks up, whichever machine produced it. A result line is `{"id", "custom_id",
"response": {"status_code", "request_id", "body"}, "error"}` with a chat completion as the body.

`autoif run --emit-batch DIR` writes request files with `Emitter`; `--ingest-batch FILE...` reads
result files into the cache with `ingest`. The OpenAI and Anthropic batch backends use
`request_line` and `completion_of` for the same conversions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import AutoifError, RunStopped
from .base import Backend, Completion, Emit, Job
from .cache import Cache

CHAT_URL = "/v1/chat/completions"


def chat_body(model: str, job: Job, sample: int, extra_body: dict[str, Any] | None = None) -> dict[str, Any]:
    """The chat-completions body of one sample: n=1, the sample's own seed (as the sync path asks)."""
    s = job.request.sampling
    body: dict[str, Any] = {
        "model": model,
        "messages": list(job.request.messages),
        "temperature": s.temperature,
        "top_p": s.top_p,
        "max_tokens": s.max_tokens,
    }
    if s.stop:
        body["stop"] = list(s.stop)
    if (seed := s.seed_for(sample)) is not None:
        body["seed"] = seed
    return {**body, **(extra_body or {})}


def request_line(custom_id: str, body: dict[str, Any], url: str = CHAT_URL) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body}, ensure_ascii=False)


def completion_of(line: dict[str, Any]) -> Completion:
    """One result line as a Completion (`error` set when the request failed), the way the
    synchronous path reports the same failure."""
    error = line.get("error")
    response = line.get("response") or {}
    status = response.get("status_code")
    body = response.get("body")
    if error or status != 200 or not isinstance(body, dict):
        detail = error.get("message") if isinstance(error, dict) else error
        if detail is None and isinstance(body, dict):
            inner = body.get("error", body)
            detail = inner.get("message") if isinstance(inner, dict) else inner
        code = "bad_request" if status is not None and 400 <= status < 500 and status != 429 else "server_error"
        if isinstance(error, dict) and error.get("code") in ("batch_expired", "batch_cancelled"):
            code = "expired"
        message = f"{code}: HTTP {status}: {' '.join(str(detail).split())[:300]}"
        # The request's own fault: a rerun would meet it again, so it does not hold the shard open.
        return Completion("", error=message, rejected=code == "bad_request")
    choices = body.get("choices") or []
    if not choices:
        return Completion("", error="empty_answer: the server returned no choice")
    choice = choices[0]
    usage = body.get("usage") or {}
    return Completion(
        (choice.get("message") or {}).get("content") or "",
        choice.get("finish_reason"),
        usage.get("completion_tokens"),
        prompt_tokens=usage.get("prompt_tokens"),
    )


@dataclass
class Emitter:
    """Collects the cache misses of every backend it is attached to (`Backend.divert`) into
    `DIR/<stage>.jsonl`, one request line per sample, each sample once."""

    directory: Path
    stage: str = ""
    lines: dict[str, list[str]] = field(default_factory=dict)
    diverted: int = 0  # samples handed over, repeats included (a shard that diverted any is not done)
    _seen: set[str] = field(default_factory=set)

    def divert(self, backend: Backend, jobs: list[Job], keys: list[list[str]], emit: Emit) -> None:
        """Write the jobs' samples out instead of generating them; each becomes an error completion
        (never cached), and the pipeline discards the records of a shard that emitted any."""
        out = self.lines.setdefault(self.stage, [])
        # The name the endpoint serves (the openai backend resolves "embedded"), and its extra fields.
        model = getattr(backend, "served_model", backend.model)
        extra = getattr(backend, "extra_body", None)
        for index, (job, job_keys) in enumerate(zip(jobs, keys)):
            for sample in job.samples:
                key = job_keys[sample]
                if key not in self._seen:
                    self._seen.add(key)
                    out.append(request_line(key, chat_body(model, job, sample, extra)))
                self.diverted += 1
                emit(index, sample, Completion("", error="emitted: written to a batch file, not generated"))

    def write(self) -> list[Path]:
        """The request files, written atomically; a stage with no request writes none."""
        from ..jsonl import atomic_write_text

        paths = []
        for stage, lines in self.lines.items():
            if lines:
                path = self.directory / f"{stage}.jsonl"
                atomic_write_text(path, "\n".join(lines) + "\n")
                paths.append(path)
        return paths

    @property
    def count(self) -> int:
        return len(self._seen)


def read_results(path: Path) -> Iterable[dict[str, Any]]:
    """The result lines of one file; a line that is not a result is a one-line error naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AutoifError(f"--ingest-batch: cannot read {path}: {exc}") from None
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise AutoifError(f"--ingest-batch: {path} line {number}: not JSON ({exc.msg})") from None
        if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
            raise AutoifError(f"--ingest-batch: {path} line {number}: no custom_id (not a batch result line)")
        yield line


def ingest(paths: Sequence[Path], cache: Cache) -> dict[str, int]:
    """Put every successful result of `paths` into `cache`; failed ones are counted, not cached
    (the run asks them again)."""
    counts = {"ingested": 0, "failed": 0}
    for path in paths:
        for line in read_results(path):
            completion = completion_of(line)
            if completion.error:
                counts["failed"] += 1
            else:
                cache.put(line["custom_id"], completion.to_json())
                counts["ingested"] += 1
    return counts


class BatchEmitted(RunStopped):
    """`--emit-batch`: a stage's requests are written; the run stops until their results are ingested."""

    def __init__(self, stage: str, requests: int, paths: list[Path]) -> None:
        names = ", ".join(str(p) for p in paths)
        super().__init__(
            f"{requests} request(s) of stage {stage} written to {names}; run them (e.g. `vllm run-batch -i FILE -o "
            "RESULTS`), then `autoif run --ingest-batch RESULTS` goes on"
        )
        self.stage, self.requests, self.paths = stage, requests, paths

    def as_dict(self) -> dict[str, Any]:
        return {
            "reason": "emit_batch",
            "stage": self.stage,
            "requests": self.requests,
            "files": [str(p) for p in self.paths],
        }
