"""The openai backend against a real OpenAI-compatible server (llama_cpp.server with SmolLM2), with
faults injected by a real proxy in front of it (tests/llm_server.py)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autoif.config import LLMConfig
from autoif.errors import AutoifError
from autoif.llm import Request, ResponseCache, make_backend
from autoif.llm.openai_backend import OpenAIBackend
from autoif.llm.redact import redact

sys.path.insert(0, str(Path(__file__).parent))
from llm_server import FaultProxy, free_port  # noqa: E402

MAX_TOKENS = 8


@pytest.fixture
def proxy(llama_server):
    with FaultProxy(llama_server.url) as p:
        yield p


def backend(base_url: str, cache: ResponseCache | None = None, **llm) -> OpenAIBackend:
    """Through the config and the registry, as a run builds it; fast retries for tests."""
    settings = {
        "backend": "openai",
        "base_url": base_url,
        "model": "smollm2",
        "max_concurrency": 2,
        "max_retries": 6,
        "stall_s": 20.0,
        "backoff_base_s": 0.05,
        "backoff_max_s": 0.5,
        **llm,
    }
    return make_backend(LLMConfig(**settings), cache=cache)


def prompts(count: int, tag: str, **sampling) -> list[Request]:
    sampling = {"max_tokens": MAX_TOKENS, "seed": 1, **sampling}
    return [Request.user(f"Name one animal. ({tag} {i})", **sampling) for i in range(count)]


def cache_rows(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]


def texts(results) -> list[list[str]]:
    return [[str(c) for c in row] for row in results]


# ------------------------------------------------------------------------------ fast, no server
def test_unreachable_endpoint_raises_one_line():
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with backend(url, max_retries=2, backoff_base_s=0.01) as b:
        with pytest.raises(AutoifError) as err:
            b.generate(prompts(1, "unreachable"), progress=False)
        assert b.stats.requests == 3 and b.stats.retries == 2  # one request, retried twice, no more
    message = str(err.value)
    assert "\n" not in message and "cannot reach" in message and "connection refused" in message, message
    with backend(url, model="embedded", max_retries=0) as b, pytest.raises(AutoifError, match="cannot reach"):
        b.generate(prompts(1, "unreachable"), progress=False)  # "embedded" first asks for the served model


def test_hosted_api_without_key_is_a_config_error(monkeypatch):
    monkeypatch.delenv("AUTOIF_TEST_NO_SUCH_KEY", raising=False)
    with pytest.raises(AutoifError, match="AUTOIF_TEST_NO_SUCH_KEY"):
        make_backend(LLMConfig(backend="openai", model="gpt-4o-mini", api_key_env="AUTOIF_TEST_NO_SUCH_KEY"))


def test_refused_key_raises_one_line():
    with FaultProxy("http://127.0.0.1:9") as p, backend(p.base_url, api_key_env="AUTOIF_TEST_KEY") as b:
        p.script("401")
        with pytest.raises(AutoifError) as err:
            b.generate(prompts(1, "401"), progress=False)
    assert "HTTP 401" in str(err.value) and "AUTOIF_TEST_KEY" in str(err.value) and "\n" not in str(err.value)
    assert p.chat_requests == 1  # a refused key is not retried


def test_stalled_request_is_logged_retried_and_reported_while_in_flight(caplog):
    caplog.set_level(logging.INFO, logger="autoif")
    with FaultProxy(hang_s=5.0) as p, backend(p.base_url, stall_s=0.3, max_retries=1) as b:
        b.heartbeat_s = 0.1
        p.script("hang")  # then the echo answers: the retry succeeds
        started = time.monotonic()
        (ok,) = b.generate(prompts(1, "stall"), progress=False)
        assert not ok[0].error and b.stats.retries == 1
        p.always = "hang"  # now it never answers: given up on after its retry, not waited on for ever
        (failed,) = b.generate(prompts(1, "stalled"), progress=False)
        assert time.monotonic() - started < 3.0
    assert failed[0].error == "stalled: no byte from the endpoint for 0.3s (gave up after 2 tries)"
    assert caplog.text.count("stalled (no byte for 0.3s, llm.stall_s)") == 3
    assert re.search(r"1 request\(s\) in flight to http://127\.0\.0\.1:\d+/v1, the oldest for", caplog.text)


def test_endpoint_messages_are_redacted(monkeypatch, caplog):
    key = "sk-proj-" + os.urandom(12).hex()
    monkeypatch.setenv("AUTOIF_TEST_KEY", key)
    caplog.set_level(logging.DEBUG)
    with FaultProxy() as p, backend(p.base_url, api_key_env="AUTOIF_TEST_KEY", max_retries=0) as b:
        p.script("500-echo")  # a 500 quoting the request's headers, Authorization among them
        (echoed,) = b.generate(prompts(1, "headers"), progress=False)
        assert "'authorization': 'Bearer [redacted]'" in echoed[0].error
        p.script("401-echo")  # "Incorrect API key provided: sk-..."
        with pytest.raises(AutoifError) as err:
            b.generate(prompts(1, "401"), progress=False)
    assert "Incorrect API key provided: [redacted]" in str(err.value)
    assert key not in str(err.value) + echoed[0].error + caplog.text
    assert p.authorizations == {f"Bearer {key}"}  # it was sent all the same


def test_redact_hides_keys_and_bearer_tokens():
    text = 'key sk-abc123def456, masked sk-abc***f456, {"Authorization": "Bearer tok.en-1"}, secret42'
    assert redact(text, "secret42") == (
        'key [redacted], masked [redacted], {"Authorization": "Bearer [redacted]"}, [redacted]'
    )
    assert redact("a skill, sk- alone, ask-me") == "a skill, sk- alone, ask-me"


def test_html_answer_is_one_line_naming_the_endpoint():
    with FaultProxy() as p, backend(p.base_url, max_retries=0) as b:
        p.always = "html"  # a web page where the API should be: base_url without /v1, a proxy's login page
        with pytest.raises(AutoifError) as err:
            b.generate(prompts(1, "html"), progress=False)
    message = str(err.value)
    assert p.base_url in message and "llm.base_url" in message and "\n" not in message, message


# ------------------------------------------------------------------------- against the server
@pytest.mark.slow
def test_faults_are_retried_none_lost_none_duplicated(proxy, tmp_path):
    faults = ("429", "500", "503", "hang", "drop")
    proxy.retry_after_s = 1.0  # above backoff_max_s: only an honoured Retry-After waits this long
    # Generous: llama_cpp.server keeps computing a request its client gave up on, so a timeout near
    # the real latency (seconds on a loaded CPU) would cascade into more timeouts.
    stall_s = 10.0
    proxy.hang_s = stall_s + 1
    proxy.script(*faults)
    requests = prompts(6, "faults") + [Request.user("Name two colors.", n=2, max_tokens=MAX_TOKENS, seed=5)]
    samples = sum(r.n for r in requests)
    db = tmp_path / "cache.sqlite"
    with backend(proxy.base_url, ResponseCache(db), stall_s=stall_s) as b:
        first = b.generate(requests, progress=False)
        stats = b.stats
    assert all(not c.error for row in first for c in row) and [len(row) for row in first] == [r.n for r in requests]
    assert stats.retries == len(faults) and stats.errors == 0
    assert proxy.chat_requests == stats.requests == samples + len(faults)
    assert cache_rows(db) == samples  # every (request, sample) once
    # The 429'd request came back no sooner than its Retry-After.
    ((t429, _, body429),) = [e for e in proxy.chat_log if e[1] == "429"]
    assert min(t - t429 for t, _, body in proxy.chat_log if body == body429 and t > t429) >= 1.0

    sent = proxy.chat_requests
    with backend(proxy.base_url, ResponseCache(db)) as b:
        again = b.generate(requests, progress=False)
        assert b.stats.hits == samples and b.stats.misses == 0 and b.stats.requests == 0
    assert proxy.chat_requests == sent and texts(again) == texts(first)


@pytest.mark.slow
def test_n_fans_out_against_single_choice_server(proxy, tmp_path):
    requests = [
        Request.user(f"Write a word about {topic}.", n=3, max_tokens=MAX_TOKENS, temperature=1.0, seed=7)
        for topic in ("the sea", "a city")
    ]
    with backend(proxy.base_url, ResponseCache(tmp_path / "c.sqlite")) as b:
        auto = b.generate(requests, progress=False)
        # llama.cpp answered n=3 with one choice: the other two of each request came one by one.
        assert b.stats.fanned_out == 4 and proxy.chat_requests == 6 and b.stats.retries == 0
        assert all(len(row) == 3 and not any(c.error for c in row) for row in auto)
        # Learnt: a later n > 1 request goes one by one from the start.
        before = proxy.chat_requests
        b.generate([Request.user("One more word.", n=2, max_tokens=MAX_TOKENS, seed=7)], progress=False)
        assert [body.get("n", 1) for _, _, body in proxy.chat_log[before:]] == [1, 1]
    # Sample i has seed+i whichever way it was requested: reproducible, and the samples differ.
    with backend(proxy.base_url, fan_out="always") as b:
        assert texts(b.generate(requests, progress=False)) == texts(auto)
    assert len({t for row in texts(auto) for t in row}) > 1


@pytest.mark.slow
def test_fan_out_never_reports_missing_choices(proxy):
    with backend(proxy.base_url, fan_out="never") as b:
        (row,) = b.generate([Request.user("Say yes.", n=3, max_tokens=MAX_TOKENS)], progress=False)
    assert not row[0].error and [c.error.split(":")[0] for c in row[1:]] == ["short_answer"] * 2
    assert proxy.chat_requests == 1 and b.stats.errors == 2


@pytest.mark.slow
def test_concurrency_is_bounded(proxy):
    proxy.delay_s = 0.3  # keep requests in flight long enough to overlap
    with backend(proxy.base_url, max_concurrency=3) as b:
        results = b.generate(prompts(8, "concurrency"), progress=False)
    assert all(not row[0].error for row in results)
    assert proxy.max_in_flight == 3


@pytest.mark.slow
def test_rejected_request_becomes_error_completion(proxy, tmp_path):
    too_long = Request.user("word " * 3000, max_tokens=MAX_TOKENS)  # beyond n_ctx=2048
    requests = [too_long, *prompts(1, "fine")]
    db = tmp_path / "c.sqlite"
    with backend(proxy.base_url, ResponseCache(db)) as b:
        bad, good = b.generate(requests, progress=False)
        assert bad[0].error.startswith("bad_request: HTTP 400") and str(bad[0]) == ""
        assert bad[0].rejected and b.stats.rejected == 1  # the request's own fault: a rerun meets it again
        assert not good[0].error and b.stats.errors == 1 and b.stats.retries == 0
    assert proxy.chat_requests == 2 and cache_rows(db) == 1  # a 400 is not retried, errors are not cached
    with backend(proxy.base_url, ResponseCache(db)) as b:
        b.generate(requests, progress=False)
        assert b.stats.hits == 1 and b.stats.requests == 1  # a rerun tries the failed one again


@pytest.mark.slow
def test_embedded_model_means_the_one_served(llama_server):
    with backend(llama_server.base_url, model="embedded") as b:
        assert b.cache_identity == str(llama_server.model)  # llama_cpp.server names it by its path
        (row,) = b.generate(prompts(1, "embedded"), progress=False)
    assert not row[0].error


@pytest.mark.slow
def test_api_key_is_sent_but_never_stored_or_logged(proxy, tmp_path, monkeypatch, caplog):
    key = "sk-autoif-test-" + os.urandom(8).hex()
    monkeypatch.setenv("AUTOIF_TEST_KEY", key)
    caplog.set_level(logging.DEBUG)  # openai, httpx and our own debug logs included
    proxy.script("500")
    db = tmp_path / "c.sqlite"
    with backend(proxy.base_url, ResponseCache(db), api_key_env="AUTOIF_TEST_KEY") as b:
        b.generate(prompts(2, "key") + [Request.user("x " * 3000, max_tokens=MAX_TOKENS)], progress=False)
        assert b.stats.retries == 1 and b.stats.errors == 1  # a retry and a failure were logged
        assert key not in b.cache_identity
    assert proxy.authorizations == {f"Bearer {key}"}
    assert key not in caplog.text
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir())  # the cache with its WAL files
    assert stored and key.encode() not in stored


_KILLED_RUN = """
import json, sys
from autoif.config import LLMConfig
from autoif.llm import Request, ResponseCache, make_backend
llm, db, prompts = json.loads(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
backend = make_backend(LLMConfig(**llm), cache=ResponseCache(db))
backend.generate([Request.user(p, max_tokens=8, seed=1) for p in prompts], progress=False)
"""


@pytest.mark.slow
def test_kill_9_loses_only_in_flight_requests(proxy, tmp_path):
    proxy.delay_s = 0.4
    concurrency, db = 2, tmp_path / "c.sqlite"
    requests = prompts(12, "kill")
    llm = {"backend": "openai", "base_url": proxy.base_url, "model": "smollm2", "max_concurrency": concurrency}
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _KILLED_RUN,
            json.dumps(llm),
            str(db),
            json.dumps([r.messages[0]["content"] for r in requests]),
        ]
    )
    deadline = time.monotonic() + 60
    while child.poll() is None and time.monotonic() < deadline:
        try:
            if cache_rows(db) >= 4:
                break
        except sqlite3.OperationalError:  # the child has not created the table yet
            pass
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    finished, sent = cache_rows(db), proxy.chat_requests
    assert 4 <= finished < len(requests)
    assert 0 <= sent - finished <= concurrency  # lost: only what was in flight

    with backend(proxy.base_url, ResponseCache(db), max_concurrency=concurrency) as b:
        results = b.generate(requests, progress=False)
        assert b.stats.hits == finished and b.stats.misses == len(requests) - finished
    assert all(not row[0].error for row in results)
    assert proxy.chat_requests - sent == len(requests) - finished  # no finished sample asked again
    assert cache_rows(db) == len(requests)


@pytest.mark.slow
def test_extra_body_is_sent_and_keys_the_cache(proxy, tmp_path):
    cache = ResponseCache(tmp_path / "c.sqlite")
    with backend(proxy.base_url, cache, extra_body={"top_k": 1}) as b:
        (row,) = b.generate(prompts(1, "extra"), progress=False)
    assert not row[0].error and proxy.chat_log[-1][2]["top_k"] == 1
    with backend(proxy.base_url, cache, extra_body={"top_k": 2}) as b:
        b.generate(prompts(1, "extra"), progress=False)
        assert b.stats.hits == 0  # other server-side sampling, other samples
