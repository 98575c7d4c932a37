"""Batch mode of the openai backend (`llm.batch: true`) against a local server implementing the
OpenAI Files and Batches endpoints, which completes every request through a real llama_cpp.server
(tests/batch_server.py): results equal the synchronous path's, failed and expired requests are
resubmitted (bounded), and kill -9 while polling loses nothing and submits nothing twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from autoif.cli import cli
from autoif.config import config_from_tree
from autoif.llm import Request, make_backend

sys.path.insert(0, str(Path(__file__).parent))
from batch_server import OpenAIBatchServer  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture
def server(llama_server):
    with OpenAIBatchServer(llama_server.url) as s:
        yield s


def config(out: Path, base_url: str, **llm):
    settings = {"backend": "openai", "base_url": base_url, "model": "smollm2", "max_retries": 2}
    settings.update({"batch": True, "batch_poll_s": 0.05, "batch_poll_max_s": 0.2, **llm})
    return config_from_tree({"paths": {"out": str(out)}, "llm": settings})


def requests() -> list[Request]:
    asks = [Request.user(f"Name one animal. ({i})", max_tokens=6, temperature=0.0, seed=3) for i in range(4)]
    return asks + [Request.user("Name two colors.", n=2, max_tokens=6, temperature=0.0, seed=5)]


def texts(rows) -> list[list[str]]:
    return [[str(c) for c in row] for row in rows]


def generate(cfg) -> list:
    with make_backend(cfg) as backend:
        return backend.generate(requests(), progress=False)


def synchronous(tmp_path, llama_server) -> list[list[str]]:
    cfg = config(tmp_path / "sync", llama_server.base_url, batch=False)
    return texts(generate(cfg))


def state(out: Path) -> dict:
    (path,) = (out / "batches").glob("*.json")
    return json.loads(path.read_text())


def test_batch_results_equal_the_synchronous_path(tmp_path, server, llama_server):
    rows = generate(config(tmp_path / "out", server.base_url))
    assert texts(rows) == synchronous(tmp_path, llama_server)
    assert all(c.tokens and c.prompt_tokens for row in rows for c in row)  # usage recorded from the batch output
    assert len(server.batches) == 1 and set(server.submitted.values()) == {1} and len(server.submitted) == 6
    saved = state(tmp_path / "out")
    assert [b["status"] for b in saved["batches"]] == ["collected"] and saved["kind"] == "openai"
    # A rerun is answered by the cache: no batch, no request.
    assert texts(generate(config(tmp_path / "out", server.base_url))) == texts(rows)
    assert len(server.batches) == 1


def test_requests_are_split_within_the_providers_limit(tmp_path, server, monkeypatch):
    from autoif.llm.batch import OpenAIBatches

    monkeypatch.setattr(OpenAIBatches, "max_requests", 4)  # the API's is 50,000; 6 samples make 4 + 2
    rows = generate(config(tmp_path / "out", server.base_url))
    assert all(not c.error for row in rows for c in row)
    assert sorted(b["request_counts"]["total"] for b in server.batches.values()) == [2, 4]
    assert set(server.submitted.values()) == {1}


def created(out: Path) -> str | None:
    """The id of the first batch the state under `out` records as created (None: none yet)."""
    paths = list((out / "batches").glob("*.json")) if (out / "batches").is_dir() else []
    return json.loads(paths[0].read_text())["batches"][0].get("id") if paths else None


def test_failed_and_expired_requests_are_resubmitted_successful_ones_kept(tmp_path, server, llama_server):
    server.expire_after, server.fail_first = 3, 1  # the first batch: 1 fails, 2 succeed, 3 expire unrun
    rows = generate(config(tmp_path / "out", server.base_url))
    assert texts(rows) == synchronous(tmp_path, llama_server)
    assert len(server.batches) == 2
    first, second = sorted(server.batches.values(), key=lambda b: b["id"].split("-")[1])
    assert first["status"] == "expired" and second["request_counts"]["total"] == 4  # 1 failed + 3 expired
    assert sorted(server.submitted.values()) == [1, 1, 2, 2, 2, 2]


def test_resubmission_is_bounded_and_ends_in_error_completions(tmp_path, server):
    server.fail_always = True
    rows = generate(config(tmp_path / "out", server.base_url, batch_max_attempts=2))
    assert all(
        c.error and "server_error" in c.error and "after 2 batch submissions" in c.error for r in rows for c in r
    )
    assert len(server.batches) == 2 and set(server.submitted.values()) == {2}


CHILD = """
import sys
from autoif.config import config_from_tree
from autoif.llm import Request, make_backend
sys.path.insert(0, {tests!r})
from test_llm_batch import config, requests
with make_backend(config({out!r}, {url!r})) as backend:
    backend.generate(requests(), progress=False)
"""


def test_kill_9_while_polling_then_rerun_polls_the_same_batch(tmp_path, server, llama_server):
    out = tmp_path / "out"
    server.delay_s = 2.0  # the batch waits before it starts: the child is polling when killed
    code = CHILD.format(tests=str(Path(__file__).parent), out=str(out), url=server.base_url)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        deadline = time.monotonic() + 60
        while not created(out):
            assert time.monotonic() < deadline and child.poll() is None, "the child never created its batch"
            time.sleep(0.05)
        (batch_id,) = server.batches
        while server.retrieved[batch_id] < 2:  # it polls
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert state(out)["batches"][0]["id"] == batch_id
    polled = server.retrieved[batch_id]
    rows = generate(config(out, server.base_url))
    assert list(server.batches) == [batch_id] and server.retrieved[batch_id] > polled  # the same batch, polled
    assert set(server.submitted.values()) == {1}  # nothing submitted twice
    assert texts(rows) == synchronous(tmp_path, llama_server)


def test_batches_command_lists_and_cancels(tmp_path, server):
    out = tmp_path / "out"
    server.delay_s = 30.0
    code = CHILD.format(tests=str(Path(__file__).parent), out=str(out), url=server.base_url)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen([sys.executable, "-c", code], env=env)
    try:
        deadline = time.monotonic() + 60
        while not created(out):
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    (batch_id,) = server.batches
    listed = CliRunner().invoke(cli, ["batches", str(out)])
    assert listed.exit_code == 0 and batch_id in listed.output and "validating" in listed.output, listed.output
    cancelled = CliRunner().invoke(cli, ["batches", str(out), "--cancel"])
    assert cancelled.exit_code == 0, cancelled.output
    deadline = time.monotonic() + 10
    while server.batches[batch_id]["status"] != "cancelled":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert "cancel" in cancelled.output and batch_id in cancelled.output
