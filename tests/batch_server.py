"""Batch APIs for tests, completed by a real OpenAI-compatible server (llama_cpp.server).

- `run_batch`: what `vllm run-batch` does with a request file (OpenAI batch format): each line's
  body sent to the server's /v1/chat/completions, one result line per request, in the format the
  OpenAI Batch API writes to its output file.
- `OpenAIBatchServer`: the OpenAI Files and Batches endpoints as the API reference describes them
  (upload a JSONL file with purpose "batch", create a batch from it, retrieve / list / cancel
  batches, download output and error files), each batch worked through in a thread that sends
  every request to the real server. It can be told to make the next batch slow, expire it after
  some requests (the rest go to the error file as `batch_expired`), or fail some requests (500).
"""

from __future__ import annotations

import collections
import email
import email.policy
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self
from urllib.parse import parse_qs, urlsplit


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


class JSONHandler(BaseHTTPRequestHandler):
    """What both servers' handlers share: HTTP/1.1 keep-alive, quiet, JSON (or bytes) answers."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _send(
        self,
        status: int,
        body: dict | bytes,
        ctype: str = "application/json",
        headers: dict[str, str] | None = None,
        head: bool = False,
    ) -> None:
        """Answer `body` (JSON unless bytes) with `headers`; for a HEAD request (`head`), its headers alone."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(data)


class Served:
    """A local server run on a thread while in a `with` block; exiting also cancels the batches at work."""

    _cancel: dict[str, threading.Event]

    def _serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for event in self._cancel.values():
            event.set()
        self._server.shutdown()
        self._server.server_close()


class OpenAIBatchServer(Served):
    """Files + Batches on 127.0.0.1, completing batches through `upstream` (http://127.0.0.1:PORT).

    Faults for the next batch created: `delay_s` (it waits that long before starting), `expire_after`
    (it expires after that many requests), `fail_first` (its first requests answered 500);
    `fail_always`: every request of every batch answered 500.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.submitted: collections.Counter[str] = collections.Counter()  # custom_id -> times in a created batch
        self.retrieved: collections.Counter[str] = collections.Counter()  # batch id -> GETs
        self.delay_s = 0.0
        self.expire_after: int | None = None
        self.fail_first = 0
        self.fail_always = False
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._cancel: dict[str, threading.Event] = {}
        self._serve(self._handler())

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    # ------------------------------------------------------------------------------- the API
    def _new_id(self, prefix: str) -> str:
        return f"{prefix}-{next(self._ids)}-{uuid.uuid4().hex[:8]}"

    def upload(self, purpose: str, data: bytes, filename: str) -> dict:
        file_id = self._new_id("file")
        self.files[file_id] = data
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
        }

    def create(self, params: dict) -> tuple[int, dict]:
        if params.get("input_file_id") not in self.files:
            return 400, {"error": {"message": "input_file_id not found", "type": "invalid_request_error"}}
        lines = [json.loads(raw) for raw in self.files[params["input_file_id"]].decode().splitlines() if raw.strip()]
        batch_id = self._new_id("batch")
        now = int(time.time())
        batch = {
            "id": batch_id,
            "object": "batch",
            "endpoint": params.get("endpoint"),
            "errors": None,
            "input_file_id": params["input_file_id"],
            "completion_window": params.get("completion_window", "24h"),
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "in_progress_at": None,
            "expires_at": now + 86400,
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            "metadata": params.get("metadata"),
        }
        faults = (self.delay_s, self.expire_after, self.fail_first)
        self.delay_s, self.expire_after, self.fail_first = 0.0, None, 0
        with self._lock:
            self.batches[batch_id] = batch
            self._cancel[batch_id] = threading.Event()
            self.submitted.update(line["custom_id"] for line in lines)
        threading.Thread(target=self._work, args=(batch, lines, *faults), daemon=True).start()
        return 200, dict(batch)

    def _work(self, batch: dict, lines: list[dict], delay_s: float, expire_after: int | None, fail: int) -> None:
        cancel = self._cancel[batch["id"]]
        cancel.wait(delay_s)
        batch.update(status="in_progress", in_progress_at=int(time.time()))
        out, errors = [], []
        for i, line in enumerate(lines):
            if cancel.is_set() or (expire_after is not None and i >= expire_after):
                code = "batch_cancelled" if cancel.is_set() else "batch_expired"
                errors += [_unrun(rest, code) for rest in lines[i:]]
                break
            result = _failed(line) if self.fail_always or i < fail else complete(self.upstream, line)
            ok = result["response"]["status_code"] == 200
            (out if ok else errors).append(result)
            batch["request_counts"]["completed" if ok else "failed"] += 1
        now = int(time.time())
        if out:
            batch["output_file_id"] = self.upload("batch_output", _jsonl(out), "output.jsonl")["id"]
        if errors:
            batch["error_file_id"] = self.upload("batch_output", _jsonl(errors), "errors.jsonl")["id"]
        if cancel.is_set():
            batch.update(status="cancelled", cancelled_at=now)
        elif expire_after is not None and expire_after < len(lines):
            batch.update(status="expired", expired_at=now)
        else:
            batch.update(status="completed", finalizing_at=now, completed_at=now)

    def _handler(self):
        server = self

        class Handler(JSONHandler):
            def _not_found(self) -> None:
                self._send(404, {"error": {"message": f"no such path or object: {self.path}", "type": "not_found"}})

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                parts = url.path.strip("/").split("/")  # v1, files|batches, id, content
                if parts[1:2] == ["files"] and len(parts) == 4 and parts[3] == "content" and parts[2] in server.files:
                    return self._send(200, server.files[parts[2]], "application/octet-stream")
                if parts[1:2] == ["batches"] and len(parts) == 3 and parts[2] in server.batches:
                    server.retrieved[parts[2]] += 1
                    return self._send(200, server.batches[parts[2]])
                if parts[1:] == ["batches"]:
                    limit = int(parse_qs(url.query).get("limit", ["20"])[0])
                    data = sorted(server.batches.values(), key=lambda b: b["created_at"], reverse=True)[:limit]
                    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
                    return self._send(
                        200, {"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": False}
                    )
                self._not_found()

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                parts = urlsplit(self.path).path.strip("/").split("/")
                if parts[1:] == ["files"]:
                    form = _multipart(self.headers["Content-Type"], raw)
                    name, data = form["file"]
                    return self._send(200, server.upload(form["purpose"][1].decode(), data, name or "upload.jsonl"))
                if parts[1:] == ["batches"]:
                    return self._send(*server.create(json.loads(raw)))
                if (
                    parts[1:2] == ["batches"]
                    and len(parts) == 4
                    and parts[3] == "cancel"
                    and parts[2] in server.batches
                ):
                    batch = server.batches[parts[2]]
                    if batch["status"] in ("validating", "in_progress"):
                        batch.update(status="cancelling", cancelling_at=int(time.time()))
                        server._cancel[parts[2]].set()
                    return self._send(200, batch)
                self._not_found()

        return Handler


def _multipart(ctype: str, raw: bytes) -> dict[str, tuple[str | None, bytes]]:
    """name -> (filename, bytes) of a multipart/form-data body (the standard library's email parser)."""
    message = email.message_from_bytes(f"Content-Type: {ctype}\r\n\r\n".encode() + raw, policy=email.policy.HTTP)
    form = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        form[name] = (part.get_filename(), part.get_payload(decode=True))
    return form


def _jsonl(lines: list[dict]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def _failed(line: dict) -> dict:
    body = {"error": {"message": "injected server error", "type": "server_error"}}
    return {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": line["custom_id"],
        "response": {"status_code": 500, "request_id": uuid.uuid4().hex, "body": body},
        "error": None,
    }


def _unrun(line: dict, code: str) -> dict:
    message = {"batch_expired": "This request could not be executed before the completion window expired."}
    return {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": line["custom_id"],
        "response": None,
        "error": {"code": code, "message": message.get(code, "This request was cancelled.")},
    }


# ------------------------------------------------------------------------------------ Anthropic
def anthropic_message(upstream: str, params: dict) -> tuple[int, dict]:
    """One Messages API request answered by the OpenAI-compatible `upstream`, as the Messages API answers."""
    messages = ([{"role": "system", "content": params["system"]}] if params.get("system") else []) + params["messages"]
    body = {"messages": messages, "max_tokens": params["max_tokens"], "temperature": params.get("temperature", 1.0)}
    if params.get("top_p") is not None:
        body["top_p"] = params["top_p"]
    if params.get("stop_sequences"):
        body["stop"] = params["stop_sequences"]
    answer = complete(upstream, {"custom_id": "-", "url": "/v1/chat/completions", "body": body})["response"]
    if answer["status_code"] != 200:
        message = (answer["body"].get("error") or {}).get("message", "upstream error")
        kind = "invalid_request_error" if answer["status_code"] < 500 else "api_error"
        return answer["status_code"], {"type": "error", "error": {"type": kind, "message": message}}
    choice, usage = answer["body"]["choices"][0], answer["body"].get("usage") or {}
    reason = {"stop": "end_turn", "length": "max_tokens"}.get(choice.get("finish_reason"), "end_turn")
    return 200, {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": params["model"],
        "content": [{"type": "text", "text": choice["message"]["content"] or ""}],
        "stop_reason": reason,
        "stop_sequence": None,
        "usage": {"input_tokens": usage.get("prompt_tokens", 0), "output_tokens": usage.get("completion_tokens", 0)},
    }


def _rfc3339(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


class AnthropicServer(Served):
    """The Messages API and its Message Batches endpoints as Anthropic's API reference describes them
    (create with the requests inline, retrieve, list, cancel, results as JSONL at `results_url`),
    answered by the OpenAI-compatible `upstream`. Faults for the next batch as `OpenAIBatchServer`'s."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.batches: dict[str, dict] = {}
        self.results: dict[str, bytes] = {}
        self.submitted: collections.Counter[str] = collections.Counter()
        self.retrieved: collections.Counter[str] = collections.Counter()
        self.messages = 0  # synchronous Messages requests
        self.delay_s = 0.0
        self.expire_after: int | None = None
        self.fail_first = 0
        # As the API answers a wrong `x-api-key` (401) and a model it does not serve (404); None: any.
        self.api_key: str | None = None
        self.models: set[str] | None = None
        self._cancel: dict[str, threading.Event] = {}
        self._serve(self._handler())

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def refusal(self, key: str | None, body: dict) -> tuple[int, dict] | None:
        """The API's error for a request with this key and body, None when it is served."""
        if self.api_key is not None and key != self.api_key:
            return 401, {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}
        models = [body.get("model")] + [r["params"].get("model") for r in body.get("requests", [])]
        unknown = [m for m in models if m is not None and self.models is not None and m not in self.models]
        if unknown:
            return 404, {"type": "error", "error": {"type": "not_found_error", "message": f"model: {unknown[0]}"}}
        return None

    def create(self, requests: list[dict]) -> dict:
        batch_id = f"msgbatch_{uuid.uuid4().hex[:24]}"
        now = time.time()
        batch = {
            "id": batch_id,
            "type": "message_batch",
            "processing_status": "in_progress",
            "request_counts": {"processing": len(requests), "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0},
            "ended_at": None,
            "created_at": _rfc3339(now),
            "expires_at": _rfc3339(now + 86400),
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": None,
        }
        faults = (self.delay_s, self.expire_after, self.fail_first)
        self.delay_s, self.expire_after, self.fail_first = 0.0, None, 0
        self.batches[batch_id] = batch
        self._cancel[batch_id] = threading.Event()
        self.submitted.update(r["custom_id"] for r in requests)
        threading.Thread(target=self._work, args=(batch, requests, *faults), daemon=True).start()
        return dict(batch)

    def _work(self, batch: dict, requests: list[dict], delay_s: float, expire_after: int | None, fail: int) -> None:
        cancel = self._cancel[batch["id"]]
        cancel.wait(delay_s)
        counts, lines = batch["request_counts"], []
        for i, request in enumerate(requests):
            if cancel.is_set() or (expire_after is not None and i >= expire_after):
                kind = "canceled" if cancel.is_set() else "expired"
                result: dict = {"type": kind}
            elif i < fail:
                result = {
                    "type": "errored",
                    "error": {"type": "error", "error": {"type": "api_error", "message": "injected"}},
                }
            else:
                status, message = anthropic_message(self.upstream, request["params"])
                result = (
                    {"type": "succeeded", "message": message}
                    if status == 200
                    else {"type": "errored", "error": message}
                )
            counts["processing"] -= 1
            counts[result["type"]] += 1
            lines.append({"custom_id": request["custom_id"], "result": result})
        self.results[batch["id"]] = _jsonl(lines)
        batch.update(
            processing_status="ended",
            ended_at=_rfc3339(time.time()),
            results_url=f"{self.base_url}/v1/messages/batches/{batch['id']}/results",
        )

    def _handler(self):
        server = self

        class Handler(JSONHandler):
            def _not_found(self) -> None:
                self._send(404, {"type": "error", "error": {"type": "not_found_error", "message": self.path}})

            def do_GET(self) -> None:
                parts = urlsplit(self.path).path.strip("/").split("/")  # v1, messages, batches, id, results
                if parts[:3] != ["v1", "messages", "batches"]:
                    return self._not_found()
                if len(parts) == 3:
                    data = sorted(server.batches.values(), key=lambda b: b["created_at"], reverse=True)
                    first, last = (data[0]["id"], data[-1]["id"]) if data else (None, None)
                    return self._send(200, {"data": data, "has_more": False, "first_id": first, "last_id": last})
                if parts[3] not in server.batches:
                    return self._not_found()
                if len(parts) == 5 and parts[4] == "results" and parts[3] in server.results:
                    return self._send(200, server.results[parts[3]], "application/binary")
                server.retrieved[parts[3]] += 1
                self._send(200, server.batches[parts[3]])

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                parts = urlsplit(self.path).path.strip("/").split("/")
                # The SDK sends the key as `x-api-key` or, in some versions, as a bearer token.
                key = self.headers.get("x-api-key") or self.headers.get("Authorization", "").removeprefix("Bearer ")
                refused = server.refusal(key or None, json.loads(raw) if raw else {})
                if refused is not None:
                    return self._send(*refused)
                if parts == ["v1", "messages"]:
                    server.messages += 1
                    return self._send(*anthropic_message(server.upstream, json.loads(raw)))
                if parts == ["v1", "messages", "batches"]:
                    return self._send(200, server.create(json.loads(raw)["requests"]))
                if len(parts) == 5 and parts[4] == "cancel" and parts[3] in server.batches:
                    batch = server.batches[parts[3]]
                    if batch["processing_status"] == "in_progress":
                        batch.update(processing_status="canceling", cancel_initiated_at=_rfc3339(time.time()))
                        server._cancel[parts[3]].set()
                    return self._send(200, batch)
                self._not_found()

        return Handler
