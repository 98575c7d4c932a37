"""The anthropic backend (official SDK), synchronous and with Message Batches, against a local
server implementing the Messages and Message Batches endpoints, answered by a real llama_cpp.server
(tests/batch_server.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from autoif.config import config_from_tree
from autoif.errors import AutoifError
from autoif.llm import Request, make_backend

sys.path.insert(0, str(Path(__file__).parent))
from batch_server import AnthropicServer  # noqa: E402
from llm_server import free_port  # noqa: E402
from test_llm_batch import created  # noqa: E402

pytest.importorskip("anthropic")


@pytest.fixture
def server(llama_server):
    with AnthropicServer(llama_server.url) as s:
        yield s


def config(out: Path, base_url: str, **llm):
    settings = {"backend": "anthropic", "base_url": base_url, "model": "claude-test", "max_retries": 1}
    settings.update({"batch_poll_s": 0.05, "batch_poll_max_s": 0.2, "max_concurrency": 2, **llm})
    return config_from_tree({"paths": {"out": str(out)}, "llm": settings})


def requests() -> list[Request]:
    asks = [Request.user(f"Name one fruit. ({i})", max_tokens=6, temperature=0.0) for i in range(3)]
    return asks + [Request.user("Name a color.", n=2, max_tokens=6, temperature=0.0, system="Answer in one word.")]


def generate(cfg) -> list[list]:
    with make_backend(cfg) as backend:
        return backend.generate(requests(), progress=False)


def texts(rows) -> list[list[str]]:
    return [[str(c) for c in row] for row in rows]


def test_unreachable_endpoint_is_one_line_error(tmp_path):
    with pytest.raises(AutoifError, match="cannot reach") as err:
        generate(config(tmp_path, f"http://127.0.0.1:{free_port()}", max_retries=0))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("batch", [False, True])
def test_bad_key_and_unknown_model_are_one_line_errors(tmp_path, monkeypatch, batch):
    """The API's 401 and 404 from a real local server: one line naming what to fix, nothing asked further."""
    with AnthropicServer("http://127.0.0.1:1") as refusing:  # refuses before any answer is needed
        refusing.api_key, refusing.models = "right-key", {"claude-test"}
        monkeypatch.setenv("ANTHROPIC_API_KEY", "wrong-key")
        with pytest.raises(AutoifError, match="401") as err:
            generate(config(tmp_path / "key", refusing.base_url, batch=batch))
        assert "\n" not in str(err.value) and ("ANTHROPIC_API_KEY" in str(err.value) or batch)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "right-key")
        with pytest.raises(AutoifError, match="404") as err:
            generate(config(tmp_path / "model", refusing.base_url, model="claude-nonexistent", batch=batch))
        assert "\n" not in str(err.value) and ("claude-nonexistent" in str(err.value) or batch)
        assert refusing.messages == 0 and not refusing.submitted


@pytest.mark.slow
def test_sync_and_message_batches_give_the_same_completions(tmp_path, server):
    sync = generate(config(tmp_path / "sync", server.base_url))
    assert server.messages == 5 and all(c.tokens and c.prompt_tokens and c.finish_reason for r in sync for c in r)
    batch = generate(config(tmp_path / "batch", server.base_url, batch=True))
    assert texts(batch) == texts(sync) and server.messages == 5  # nothing went through the synchronous endpoint
    assert len(server.batches) == 1 and set(server.submitted.values()) == {1} and len(server.submitted) == 5


@pytest.mark.slow
def test_errored_and_expired_requests_are_resubmitted(tmp_path, server):
    sync = generate(config(tmp_path / "sync", server.base_url))
    server.expire_after, server.fail_first = 3, 1
    batch = generate(config(tmp_path / "batch", server.base_url, batch=True))
    assert texts(batch) == texts(sync) and len(server.batches) == 2
    assert sorted(server.submitted.values()) == [1, 1, 2, 2, 2]


CHILD = """
import sys
from autoif.llm import make_backend
sys.path.insert(0, {tests!r})
from test_llm_anthropic import config, requests
with make_backend(config({out!r}, {url!r}, batch=True)) as backend:
    backend.generate(requests(), progress=False)
"""


@pytest.mark.slow
def test_kill_9_while_polling_then_rerun_polls_the_same_batch(tmp_path, server):
    out = tmp_path / "out"
    server.delay_s = 2.0
    code = CHILD.format(tests=str(Path(__file__).parent), out=str(out), url=server.base_url)
    child = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        deadline = time.monotonic() + 60
        while not created(out):
            assert time.monotonic() < deadline and child.poll() is None, "the child never created its batch"
            time.sleep(0.05)
        (batch_id,) = server.batches
        while server.retrieved[batch_id] < 2:
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    rows = generate(config(out, server.base_url, batch=True))
    assert list(server.batches) == [batch_id] and set(server.submitted.values()) == {1}
    assert texts(rows) == texts(generate(config(tmp_path / "sync", server.base_url)))
