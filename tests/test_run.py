"""`autoif run` end to end with the embedded SmolLM2: every stage, then kill -9 and resume.

One small run is made twice: once uninterrupted (A), once killed with SIGKILL while stage 2 is
generating and then rerun (B). B's files must equal A's, no finished LLM sample may be generated
again, and every exported record must pass its own functions when re-checked in the sandbox. While
B is live, a second run on its OUT is refused; the lock the kill leaves behind does not stop the rerun.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from autoif.sandbox import Sandbox, pass_rate
from small_run import OUTPUTS, cache_rows, finish, kill_during_responses, start, wait_for_lock, write_config

pytestmark = pytest.mark.slow


@dataclass
class Runs:
    a: Path  # uninterrupted
    b: Path  # killed in stage 2, then rerun
    rows_at_kill: int  # cache rows when B was killed
    rerun_log: str
    refused: subprocess.CompletedProcess  # a second run started on B while B was live
    refused_s: float  # how long it took to be refused
    killed_pid: int
    lock_after_kill: str  # OUT/.lock as the kill left it


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    # B first, from a config of its own, and A (the shared small run) only then: under xdist another
    # worker makes A meanwhile (tests/conftest.py), so neither core waits for the other's run.
    b = tmp_path_factory.mktemp("run-b") / "b"
    config = write_config(b.parent / "small.yaml")
    # B: killed while stage 2 samples responses (some samples cached, the stage unfinished).
    live = start(b, config)
    wait_for_lock(live, b)
    # A second run on the same OUT meanwhile is refused at once, naming the live one.
    started = time.monotonic()
    second = subprocess.run(
        [sys.executable, "-m", "autoif.cli", "run", "-c", str(config), "-o", str(b)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    refused_s = time.monotonic() - started
    kill_during_responses(live, b)
    lock_after_kill = (b / ".lock").read_text().strip()
    rows_at_kill = cache_rows(b)
    rerun_log = finish(start(b, config))
    _, a = request.getfixturevalue("small_run")
    return Runs(a, b, rows_at_kill, rerun_log, second, refused_s, live.pid, lock_after_kill)


def test_a_second_run_on_a_live_out_is_refused_at_once(runs):
    lines = runs.refused.stderr.strip().splitlines()
    assert runs.refused.returncode == 2 and len(lines) == 1, runs.refused.stderr
    assert f"{runs.b} is in use by another autoif run (pid {runs.killed_pid}" in lines[0]
    assert runs.refused_s < 60  # refused at its start, not after waiting for the live run


def test_the_lock_of_a_killed_run_is_taken_over(runs):
    assert runs.lock_after_kill == str(runs.killed_pid)  # SIGKILL left the dead run's PID: the rerun ran anyway
    assert (runs.b / ".lock").read_text() == ""  # released by the rerun when it ended


def test_resumed_run_equals_uninterrupted_run(runs):
    a, b = runs.a, runs.b
    for name in OUTPUTS:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_no_finished_request_is_repeated(runs):
    a, b, rows_at_kill, rerun_log = runs.a, runs.b, runs.rows_at_kill, runs.rerun_log
    funnel_a = json.loads((a / "funnel.json").read_text())
    funnel_b = json.loads((b / "funnel.json").read_text())
    generated_in_a = funnel_a["llm"]["misses"]
    # Every sample A generated, B generated exactly once: before the kill or after it.
    assert cache_rows(b) == cache_rows(a) == generated_in_a
    assert rows_at_kill > 0 and funnel_b["llm"]["misses"] == generated_in_a - rows_at_kill
    # What the rerun did not regenerate came from the cache or from the shards finished before the kill.
    assert f"LLM samples: {funnel_b['llm']['misses']} generated" in rerun_log  # this invocation's own


def test_every_stage_counted_in_the_funnel(runs):
    a = runs.a
    stages = json.loads((a / "funnel.json").read_text())["stages"]
    assert list(stages) == [
        "seeds",
        "augment",
        "verifiers",
        "crossval",
        "backtranslate",
        "compose",
        "queries",
        "responses",
        "verify",
        "score",
        "export",
    ]
    # SmolLM2 writes no working function: its instructions drop at crossval, the library's survive.
    crossval_in = stages["crossval"]["in"]
    assert stages["crossval"]["out"] <= crossval_in and stages["crossval"]["out"] >= 1
    assert (a / "report.html").is_file() and (a / "llamafactory").is_dir() and (a / "hf_dataset").is_dir()


def test_exported_records_pass_their_own_functions_again(runs):
    a = runs.a
    sft = [json.loads(line) for line in (a / "sft.jsonl").read_text().splitlines()]
    dpo = [json.loads(line) for line in (a / "dpo.jsonl").read_text().splitlines()]
    assert dpo, "no DPO pair at all"
    with Sandbox() as sandbox:
        for record in sft:
            grid = sandbox.check(record["functions"], [record["messages"][-1]["content"]])
            rate = pass_rate([row[0] for row in grid])
            assert rate == pytest.approx(record["pass_rate"]) and rate > 0.5
        for pair in dpo:
            texts = [pair["chosen"][0]["content"], pair["rejected"][0]["content"]]
            grid = sandbox.check(pair["functions"], texts)
            assert pass_rate([row[0] for row in grid]) >= 0.5
            assert pass_rate([row[1] for row in grid]) == 0.0


def test_no_exported_text_was_cut_off_or_degenerate(runs):
    """Every SFT answer and every DPO chosen of the real run is a verified response without a drop
    reason (not truncated, not dropped by the quality gate), and the gate, run again on it, still
    finds nothing; the funnel counts the drops verify made."""
    from autoif.config import load_config
    from autoif.quality import drop_reasons, waived_rules

    a = runs.a
    config = load_config(a / "config.yaml")
    verified = [json.loads(line) for line in (a / "verified.jsonl").read_text().splitlines()]
    queries = {q["prompt"]: q for q in map(json.loads, (a / "queries.jsonl").read_text().splitlines())}
    instructions = {
        i["instruction_id"]: i for i in map(json.loads, (a / "backtranslate.jsonl").read_text().splitlines())
    }
    drop_of = {r["text"]: r.get("drop") for line in verified for r in line["responses"]}
    sft = [json.loads(line) for line in (a / "sft.jsonl").read_text().splitlines()]
    chosen = [
        pair["chosen"][0]["content"]
        for pair in map(json.loads, (a / "dpo.jsonl").read_text().splitlines())
        if pair["level"] == "query"
    ]
    exported = [r["messages"][-1]["content"] for r in sft] + chosen
    assert sft, "the small run exports no SFT record: nothing to check"
    assert all(text in drop_of and drop_of[text] is None for text in exported)
    for record in sft:
        query = queries[record["messages"][0]["content"]]
        instruction = instructions[record["instruction_id"]]
        accepted = [c["input"] for c in instruction["cases"] if c["output"]]
        waived = waived_rules(accepted, instruction["instruction"], config.quality)
        answer = record["messages"][-1]["content"]
        assert drop_reasons([answer], ["stop"], query["query"], query["prompt"], config.quality, waived) == [None]
    drops = {r.get("drop") for line in verified for r in line["responses"]} - {None}
    counts = json.loads((a / "funnel.json").read_text())["stages"]["verify"]["counts"]
    assert all(counts[reason] >= 1 for reason in drops)


def test_report_of_the_real_run_renders_in_chromium(runs):
    """The report `autoif run` wrote for a real (small) run: every section, no console error."""
    from test_report import ARTIFACTS, CHROMIUM, SECTION_STATES, SECTIONS, Chromium, Page

    if CHROMIUM is None:
        pytest.skip("headless Chromium not installed (`make test` installs Debian's `chromium`)")
    a = runs.a
    browser = Chromium(a.parent / "chromium-profile")
    try:
        page = Page(browser, a / "report.html")
        assert page.console_errors() == [] and page.fetched() == []
        states = json.loads(page.evaluate(SECTION_STATES))
        assert list(states) == list(SECTIONS)
        for section in ("summary", "funnel", "distributions", "instructions", "dpo", "config", "llm-cache"):
            assert states[section] == "present", (section, states)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(ARTIFACTS / "report-real-run.png")
    finally:
        browser.close()


def test_estimate_of_the_runs_own_config_counts_its_requests(small_run):
    """`autoif run --estimate` over a finished run of the same config: each LLM stage's samples are
    exactly those the run asked (cache hits included), and its tokens the run's."""
    from autoif.config import load_config
    from autoif.estimate import estimate

    config, a = small_run
    stages = json.loads((a / "funnel.json").read_text())["stages"]
    rows = estimate(load_config(config, [f"paths.out={a}"]))
    assert [r.stage for r in rows] == ["augment", "verifiers", "backtranslate", "compose", "responses", "score"]
    for row in rows:
        line = stages[row.stage].get("llm") or {}
        assert row.samples == pytest.approx(line.get("hits", 0) + line.get("misses", 0)), row.stage
        if line.get("misses"):
            assert row.measured and row.completion_tokens == pytest.approx(
                row.samples * line["completion_tokens"] / line["misses"]
            )
