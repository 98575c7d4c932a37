"""`autoif eval dev`: the dev set's content and ids, and scoring through the real sandbox, with the
dev instances' own test cases as responses (every function of an instance agrees with its cases, so
the expected verdicts are known)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from autoif.config import load_config
from autoif.devsplit import is_dev, query_key
from autoif.evals import EvalConfig, run_benchmark
from autoif.evals.dev import BENCHMARK, DEV_INSTANCES, DEV_SEED, PROMPTS_PER_CONSTRAINT, dev_records
from autoif.stages.library import CONSTRAINTS, build_library
from autoif.stages.queries import closed


def config(tmp_path: Path):
    return load_config(None, [f"paths.out={tmp_path / 'out'}"])


def test_the_dev_set_covers_every_constraint_with_held_out_parts():
    records = dev_records()
    assert len(records) == PROMPTS_PER_CONSTRAINT * len(CONSTRAINTS) == 315  # an interval of about +-5 points
    assert [r["id"] for r in records] == [f"{cid}/{n}" for cid in CONSTRAINTS for n in range(PROMPTS_PER_CONSTRAINT)]
    assert dev_records() == records  # the same set every time
    instances = {e.id: e for e in build_library(DEV_SEED, DEV_INSTANCES, split="dev")}
    for r in records:
        assert is_dev(query_key(r["query"])), r["id"]
        instance = instances[r["instance"]]
        assert r["functions"] == instance.functions and r["instruction"] == instance.instruction
        assert closed(r["instruction"]) in r["prompt"] and closed(r["query"]) in r["prompt"]
    # Two prompts of a constraint never ask the same query.
    for cid in CONSTRAINTS:
        queries = [r["query"] for r in records if r["constraint"] == cid]
        assert len(set(queries)) == len(queries), cid
    # Prompts of a constraint spread over its distinct dev instances (two at least for each).
    for cid in CONSTRAINTS:
        assert len({r["instance"] for r in records if r["constraint"] == cid}) >= 2, cid
    _, source = BENCHMARK.builtin_records()
    assert source.startswith(f"built-in dev set (seed {DEV_SEED}, 315 prompts, sha256 ")


def write_case_responses(path: Path) -> list[bool]:
    """Each prompt's response: its instance's first passing case (even prompts) or first failing case
    (odd prompts). Returns whether each should pass."""
    cases = {e.id: e.cases for e in build_library(DEV_SEED, DEV_INSTANCES, split="dev")}
    rows, expected = [], []
    for i, r in enumerate(dev_records()):
        want = i % 2 == 0
        text = next(c["input"] for c in cases[r["instance"]] if c["output"] is want)
        rows.append({"id": r["id"], "response": text})
        expected.append(want)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return expected


def test_scoring_known_responses_in_the_sandbox(tmp_path):
    expected = write_case_responses(tmp_path / "cases.jsonl")
    results = run_benchmark(
        "dev", config(tmp_path), None, str(tmp_path / "cases.jsonl"), None, tmp_path / "res", show=False
    )
    share = sum(expected) / len(expected)  # 158 of 315
    assert results["metrics"] == {"prompt_pass": share, "mean_pass_rate": share}
    assert results["counts"]["prompts"] == 315 and results["counts"]["function_errors"] == 0
    assert results["details"]["constraint"]["length:max_words"] == {"prompt_pass": 4 / 7, "n": 7}
    assert set(results["details"]["constraint"]) == set(CONSTRAINTS)
    assert results["data"].startswith("built-in dev set")
    rows = [json.loads(x) for x in (tmp_path / "res" / "dev_responses.jsonl").read_text().splitlines()]
    assert [r["passed"] for r in rows] == expected
    assert all(all(r["followed"]) if r["passed"] else not any(r["followed"]) for r in rows)

    # Our own responses file rescored gives the same numbers; a seeded subset keeps its ids.
    again = run_benchmark(
        "dev", config(tmp_path), None, str(tmp_path / "res" / "dev_responses.jsonl"), 10, tmp_path / "sub", show=False
    )
    sub = [json.loads(x) for x in (tmp_path / "sub" / "dev_responses.jsonl").read_text().splitlines()]
    assert again["counts"]["prompts"] == 10
    assert [r["passed"] for r in sub] == [r["passed"] for r in rows if r["id"] in {s["id"] for s in sub}]


def test_a_blank_response_follows_nothing(tmp_path):
    """'Do not use commas' holds for an empty text, as the functions say; the dev set, like IFEval,
    counts a blank response as not following."""
    records = [r for r in dev_records() if r["constraint"] == "punctuation:no_commas"]
    (tmp_path / "blank.jsonl").write_text("".join(json.dumps({"id": r["id"], "response": " "}) + "\n" for r in records))
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    results = run_benchmark(
        "dev", config(tmp_path), str(tmp_path / "data.jsonl"), str(tmp_path / "blank.jsonl"), None, tmp_path / "r"
    )
    assert results["metrics"] == {"prompt_pass": 0.0, "mean_pass_rate": 0.0}
    assert results["counts"]["blank_responses"] == len(records) == PROMPTS_PER_CONSTRAINT


def test_cli_scores_a_responses_file_and_refuses_bad_data(tmp_path):
    expected = write_case_responses(tmp_path / "cases.jsonl")
    run = [sys.executable, "-m", "autoif.cli", "eval", "dev", "--responses", str(tmp_path / "cases.jsonl")]
    ok = subprocess.run([*run, "--out", str(tmp_path / "res")], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "res" / "dev_results.json").read_text())["metrics"]["prompt_pass"] == sum(
        expected
    ) / len(expected)
    bad = subprocess.run([*run, "--data", str(tmp_path / "cases.jsonl")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].endswith(
        "record 1: expected 'id', 'prompt', 'constraint' and 'functions'"
    )


@pytest.mark.slow
def test_dev_with_the_embedded_model(tmp_path):
    """The real path: the embedded model answers 2 dev prompts greedily, the sandbox scores them."""
    results = run_benchmark(
        "dev", config(tmp_path), None, None, 2, tmp_path / "res", EvalConfig(max_tokens=16), show=False
    )
    assert results["model"] == {"backend": "local", "model": "embedded"}
    assert results["settings"]["temperature"] == 0.0
    assert results["counts"]["prompts"] == 2 and 0 <= results["metrics"]["prompt_pass"] <= 1
    rows = [json.loads(x) for x in (tmp_path / "res" / "dev_responses.jsonl").read_text().splitlines()]
    assert all(r["response"] and r["finish_reason"] in ("stop", "length") for r in rows)
    assert all(
        len(r["followed"]) == len(next(d for d in dev_records() if d["id"] == r["id"])["functions"]) for r in rows
    )
