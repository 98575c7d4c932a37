"""Failed requests stay failures: `autoif run` against a real endpoint that fails, then recovers.

A request that failed after its retries is not an answer: nothing is cached, the shard is marked
`partial` (not `done`), the run exits 1 with one line, the funnel names `llm_error`, and a plain
rerun asks for exactly the failed samples and writes the files a run that never failed writes.
The endpoint is a real HTTP server (tests/llm_server.py's FaultProxy) that answers by echoing
what it was asked when it does not fail: the failure and resume logic is under test, not a model.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from autoif.cli import cli
from autoif.config import load_config
from autoif.failures import WorkFailed
from autoif.jsonl import write_jsonl
from autoif.pipeline import Pipeline
from autoif.records import VerifierSamples
from autoif.stages.verifiers import library_generation
from small_run import cache_rows

sys.path.insert(0, str(Path(__file__).parent))
from llm_server import FaultProxy  # noqa: E402

# The run up to verifiers: seeds (no LLM), augment (one request), verifiers (two samples for each
# instruction, one request each, one request at a time: which request fails is known).
CONFIG = {
    "seed": 7,
    "seeds": {"limit": 1, "library_limit": 2},
    "augment": {"k": 1, "max_tokens": 24},
    "verifiers": {"k": 2, "max_tokens": 24},
    "llm": {
        "backend": "openai",
        "model": "smollm2",
        "max_retries": 1,
        "max_concurrency": 1,
        "fan_out": "always",
        "backoff_base_s": 0.01,
        "backoff_max_s": 0.05,
    },
}
UNTIL = "verifiers"
FILES = ("seeds.jsonl", "instructions.jsonl", "verifiers.jsonl")
LINE = re.compile(
    r"autoif: error: (\d+) of (\d+) requests to http://127\.0\.0\.1:\d+/v1 failed: "
    r"server_error: HTTP 500: injected 500 \(gave up after \d tr(?:y|ies)\); rerun to retry them"
)


def run(out: Path, base_url: str, *sets: str) -> Result:
    """`autoif run` in this process (the CLI's own code, exit code and stderr; imports paid once)."""
    config = out.parent / f"{out.name}.yaml"
    config.write_text(json.dumps({**CONFIG, "llm": {**CONFIG["llm"], "base_url": base_url}}))  # JSON is YAML
    args = ["run", "-c", str(config), "-o", str(out), "--until", UNTIL, *(f"--set={s}" for s in sets)]
    # A wide terminal: the funnel table's cells are read whole (rich wraps them to 80 columns otherwise).
    return CliRunner(env={"COLUMNS": "240"}).invoke(cli, args)


def last_line(result: Result) -> str:
    return result.stderr.strip().splitlines()[-1]


def augment_row(out: Path) -> dict:
    return json.loads((out / "funnel.json").read_text())["stages"]["augment"]


def test_every_request_failing_exits_1_with_one_line_and_marks_nothing_done(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="autoif")
    out = tmp_path / "out"
    with FaultProxy() as endpoint:
        endpoint.always = "500"
        proc = run(out, endpoint.base_url)
        assert proc.exit_code == 1, proc.stderr[-2000:]
        assert LINE.fullmatch(last_line(proc)) and LINE.fullmatch(last_line(proc)).groups() == ("1", "1")
        assert endpoint.chat_requests == 2  # one request, retried once
        # The funnel names the failure (also in the table printed before the line), and nothing of it is kept.
        row = augment_row(out)
        assert [(f["code"], f["tried"], f["failed"]) for f in row["failed"]] == [("llm_error", 1, 1)]
        assert "llm_error: 1 of 1 requests" in proc.stderr and "0 generated, 1 failed" in proc.stderr
        work = out / ".work" / "augment"
        assert not (work / "DONE").exists() and [p.suffix for p in work.glob("*.partial")] == [".partial"]
        assert not list(work.glob("*.done")) and cache_rows(out) == 0
        assert not (out / "verifiers.jsonl").exists()  # the run stopped at the failed stage

        # Tolerated: the run goes on (exit 0, a warning), but the shard is still not done...
        tolerant = run(out, endpoint.base_url, "llm.max_failed_share=1")
        assert tolerant.exit_code == 0, tolerant.stderr[-2000:]
        assert "tolerated: llm.max_failed_share is 1" in caplog.text
        assert not (work / "DONE").exists() and (out / "verifiers.jsonl").exists()
        # ...so the next run asks again.
        before = endpoint.chat_requests
        assert run(out, endpoint.base_url).exit_code == 1 and endpoint.chat_requests == before + 2


def test_a_rejected_request_is_no_failure(tmp_path):
    """HTTP 400 is the request's own fault: a rerun would meet it again, so it does not stop the run
    or keep its shard open; its record is dropped as `llm_rejected`."""
    out = tmp_path / "out"
    with FaultProxy() as endpoint:
        endpoint.script("ok", "400")  # augment answered, the first verifiers request rejected
        proc = run(out, endpoint.base_url)
    assert proc.exit_code == 0, proc.stderr[-2000:]
    row = json.loads((out / "funnel.json").read_text())["stages"]["verifiers"]
    assert row["dropped"] == {"llm_rejected": 1} and row["failed"][0]["failed"] == 0
    assert (out / ".work" / "verifiers" / "DONE").is_file()


def test_rerun_after_recovery_makes_only_the_failed_requests_and_matches_a_clean_run(tmp_path):
    with FaultProxy() as endpoint:
        # A: a clean run.
        clean = run(tmp_path / "clean", endpoint.base_url)
        assert clean.exit_code == 0, clean.stderr[-2000:]
        clean_requests = endpoint.chat_requests
        clean_samples = cache_rows(tmp_path / "clean")
        assert clean_samples == clean_requests >= 3  # augment's one, verifiers' two per instruction

        # B: the endpoint down for the whole run, then back.
        down = tmp_path / "down"
        endpoint.always = "500"
        failed = run(down, endpoint.base_url)
        assert failed.exit_code == 1 and LINE.fullmatch(last_line(failed)), failed.stderr[-2000:]
        endpoint.always = None
        before = endpoint.chat_requests
        assert run(down, endpoint.base_url).exit_code == 0
        assert endpoint.chat_requests - before == clean_requests  # nothing cached by the failure: all asked once

        # C: one verifiers sample fails (the first verifiers request, not retried), the others answer.
        partial = tmp_path / "partial"
        endpoint.script("ok", "500")
        failed = run(partial, endpoint.base_url, "llm.max_retries=0")
        assert failed.exit_code == 1, failed.stderr[-2000:]
        assert LINE.fullmatch(last_line(failed)).groups() == ("1", str(clean_samples - 1))
        verifiers = json.loads((partial / "funnel.json").read_text())["stages"]["verifiers"]
        assert verifiers["dropped"].get("llm_error") == 1  # its instruction, not passed on as done
        assert cache_rows(partial) == clean_samples - 1
        before = endpoint.chat_requests
        assert run(partial, endpoint.base_url).exit_code == 0
        assert endpoint.chat_requests - before == 1  # exactly the failed sample

    for name in FILES:
        expected = (tmp_path / "clean" / name).read_text()
        assert (down / name).read_text() == expected, name
        assert (partial / name).read_text() == expected, name


GOOD = "def evaluate(response):\n    return len(response) > 3\n"
CRASHING = "import os\n\n\ndef evaluate(response):\n    os._exit(0)\n"  # the worker dies mid-check
CASES = [{"input": "long enough", "output": True}, {"input": "no", "output": False}]


def test_a_sandbox_crash_is_no_verdict(tmp_path):
    out = tmp_path / "out"
    config = load_config(None, [f"paths.out={out}", "sandbox.workers=1"])
    config.sandbox.allowed_imports = ["os"]
    samples = [
        VerifierSamples(instruction_id="good", instruction="Be long.", raw=library_generation([GOOD] * 3, CASES)),
        VerifierSamples(instruction_id="bad", instruction="Be long.", raw=library_generation([GOOD, CRASHING], CASES)),
    ]
    out.mkdir()
    write_jsonl(out / "verifiers.jsonl", samples)
    with pytest.raises(WorkFailed) as err:
        Pipeline(config).run(only="crossval")
    # GOOD's copies are one distinct function: 2 checks for "good", 4 for "bad", of which CRASHING's 2 crashed.
    assert str(err.value) == (
        "2 of 6 checks in the sandbox failed: a worker died or broke the protocol during the check; rerun to retry them"
    )
    row = json.loads((out / "funnel.json").read_text())["stages"]["crossval"]
    assert row["dropped"]["sandbox_crash"] == 1 and not (out / ".work" / "crossval" / "DONE").exists()

    config.sandbox.max_crashed_share = 0.5  # tolerated: the run goes on, the crashed record stays out
    assert Pipeline(config).run(only="crossval")["stages"]["crossval"]["dropped"]["sandbox_crash"] == 1
    assert "bad" not in (out / "crossval.jsonl").read_text()
