"""Batch APIs for tests, completed by a real OpenAI-compatible server (llama_cpp.server).

- `run_batch`: what `vllm run-batch` does with a request file (OpenAI batch format): each line's
  body sent to the server's /v1/chat/completions, one result line per request, in the format the
  OpenAI Batch API writes to its output file.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from pathlib import Path


def complete(upstream: str, line: dict) -> dict:
    """One request line -> its result line, the request answered by `upstream` (e.g. http://127.0.0.1:8000)."""
    req = urllib.request.Request(
        upstream.rstrip("/") + line["url"],
        data=json.dumps(line["body"]).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            status, body = resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, json.loads(exc.read() or b"{}")
    return {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": line["custom_id"],
        "response": {"status_code": status, "request_id": uuid.uuid4().hex, "body": body},
        "error": None,
    }


def run_batch(requests: Path, results: Path, upstream: str) -> None:
    """`vllm run-batch -i requests -o results`, answered by `upstream`."""
    lines = [json.loads(raw) for raw in requests.read_text().splitlines() if raw.strip()]
    results.write_text("".join(json.dumps(complete(upstream, line)) + "\n" for line in lines))
