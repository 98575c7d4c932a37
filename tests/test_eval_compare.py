"""`autoif eval compare`: paired statistics of two runs (evals/stats.py) on results and responses files
written by `run_benchmark`, checked against computations made here from Google's own verdicts
(tests/data/ifeval_frozen_expected.json), and the one-line errors for files that are not UTF-8 JSON."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from autoif.config import load_config
from autoif.errors import AutoifError
from autoif.evals import run_benchmark
from autoif.evals.base import Responses, Scores
from autoif.evals.followbench import BENCHMARK as FOLLOWBENCH
from autoif.evals.results import write_results
from autoif.evals.stats import compare_runs

DATA = Path(__file__).parent / "data"
IFEVAL_FROZEN = DATA / "ifeval_frozen.jsonl"  # 17 prompts with responses; Google's verdicts below
IFBENCH_FROZEN = DATA / "ifbench_frozen.jsonl"
FOLLOW = json.loads((DATA / "ifeval_frozen_expected.json").read_text())["follow"]
RECORDS = [json.loads(x) for x in IFEVAL_FROZEN.read_text().splitlines()]


def score(tmp_path: Path, name: str, blank=(), records=RECORDS, bench="ifeval") -> Path:
    """Score `records` (each carries its response) with the responses of the keys in `blank` made
    empty, as `autoif eval <bench> --data ... --responses ...` does; returns the results directory."""
    text = "".join(json.dumps(r) + "\n" for r in records)
    data = tmp_path / f"data-{hashlib.sha256(text.encode()).hexdigest()[:8]}.jsonl"
    data.write_text(text)
    responses = tmp_path / f"{name}.jsonl"
    rows = [{**r, "response": "" if str(r["key"]) in set(blank) else r["response"]} for r in records]
    responses.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = load_config(None, [f"paths.out={tmp_path / 'out'}"])
    run_benchmark(bench, config, str(data), str(responses), None, tmp_path / name, show=False)
    return tmp_path / name


def passing(mode: str) -> list[str]:
    """Keys of the prompts whose frozen response follows every instruction (Google's verdicts)."""
    return [k for k, followed in FOLLOW[mode].items() if all(followed)]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "160"}  # rich wraps long metric labels in 80 columns
    return subprocess.run(
        [sys.executable, "-m", "autoif.cli", *args], capture_output=True, text=True, timeout=120, env=env
    )


# ------------------------------------------------------------------------------------- statistics
def test_identical_runs_differ_by_nothing(tmp_path):
    a, b = score(tmp_path, "a"), score(tmp_path, "b")
    report = compare_runs(a, b)
    results = json.loads((a / "ifeval_results.json").read_text())
    assert report["pairing"] == {"by": "id", "paired": 17, "only_a": 0, "only_b": 0, "excluded": {}}
    assert list(report["metrics"]) == list(results["metrics"])
    for key, m in report["metrics"].items():
        assert m["a"] == m["b"] == results["metrics"][key]
        assert m["delta"] == 0 and m["ci"] == [0.0, 0.0]
    for key in ("prompt_strict", "prompt_loose"):
        assert report["metrics"][key]["mcnemar"] == {"b_only": 0, "a_only": 0, "p": 1.0}
    assert all(f[mode]["delta"] == 0 for f in report["families"] for mode in ("loose", "strict"))


def test_mcnemar_and_metrics_equal_hand_computations(tmp_path):
    """A blanks one prompt that passes, B blanks five others: the discordant prompts, the metrics and
    McNemar's exact p are computed here from Google's verdicts and math.comb."""
    ok = passing("loose")
    blank_a, blank_b = ok[-1:], ok[:5]
    report = compare_runs(score(tmp_path, "a", blank_a), score(tmp_path, "b", blank_b))
    for mode in ("strict", "loose"):
        ok_mode = set(passing(mode))
        b_only = len(ok_mode & set(blank_a) - set(blank_b))
        a_only = len(ok_mode & set(blank_b) - set(blank_a))
        n = b_only + a_only
        p = min(1.0, 2 * sum(math.comb(n, i) for i in range(min(b_only, a_only) + 1)) / 2**n)
        m = report["metrics"][f"prompt_{mode}"]
        assert m["mcnemar"] == {"b_only": b_only, "a_only": a_only, "p": pytest.approx(p)}
        assert m["a"] == pytest.approx(len(ok_mode - set(blank_a)) / 17)
        assert m["b"] == pytest.approx(len(ok_mode - set(blank_b)) / 17)
        assert m["ci"][0] <= m["delta"] <= m["ci"][1]
        # Instruction level: followed instructions over all instructions (a ratio of sums).
        followed = {k: sum(v) for k, v in FOLLOW[mode].items()}
        total = sum(len(v) for v in FOLLOW[mode].values())
        inst = report["metrics"][f"instruction_{mode}"]
        assert inst["a"] == pytest.approx(sum(v for k, v in followed.items() if k not in blank_a) / total)
        assert inst["b"] == pytest.approx(sum(v for k, v in followed.items() if k not in blank_b) / total)
    # prompt_loose: 5 prompts only A passes, 1 only B: p = 2 * (C(6,0) + C(6,1)) / 2**6.
    assert report["metrics"]["prompt_loose"]["mcnemar"]["p"] == pytest.approx(14 / 64)


def test_instruction_level_is_a_ratio_of_sums_on_every_resample(tmp_path):
    """Two prompts: one instruction (2247) and two (2395), each followed by its frozen response. A
    answers only the first, B only the second. Over the prompts, instruction accuracy is 1/3 vs 2/3
    (a mean of per-prompt ratios would say 1/2 vs 1/2). The bootstrap's resamples are {first, first}
    (B - A = -1), {second, second} (+1) and one of each (+1/3), so the interval is [-1, +1]."""
    records = [r for r in RECORDS if str(r["key"]) in ("2247", "2395")]
    report = compare_runs(
        score(tmp_path, "a", ["2395"], records), score(tmp_path, "b", ["2247"], records), resamples=2000
    )
    inst = report["metrics"]["instruction_strict"]
    assert (inst["a"], inst["b"], inst["delta"]) == pytest.approx((1 / 3, 2 / 3, 1 / 3))
    assert inst["ci"] == [-1.0, 1.0]
    prompt = report["metrics"]["prompt_strict"]
    assert (prompt["a"], prompt["b"], prompt["delta"]) == (0.5, 0.5, 0.0)
    assert prompt["mcnemar"] == {"b_only": 1, "a_only": 1, "p": 1.0}
    by_id = {i["name"]: i["strict"] for i in report["instructions"]}
    assert by_id["change_case:english_capital"] == {"a": 1.0, "b": 0.0, "delta": -1.0}
    assert by_id["keywords:forbidden_words"] == {"a": 0.0, "b": 1.0, "delta": 1.0}


def test_bootstrap_is_seeded_and_narrows_with_more_prompts(tmp_path):
    ok = passing("loose")
    a, b = score(tmp_path, "a", ok[:1]), score(tmp_path, "b", ok[1:4])
    first = compare_runs(a, b, resamples=3000, seed=7)
    assert compare_runs(a, b, resamples=3000, seed=7) == first
    assert compare_runs(a, b, resamples=3000, seed=8)["metrics"] != first["metrics"]
    # The same 17 prompts four times over (new keys): the same differences, on 68 pairs.
    many = [{**r, "key": r["key"] + 10_000 * copy} for copy in range(4) for r in RECORDS]

    def copies(keys: list[str]) -> list[str]:
        return [str(int(k) + 10_000 * copy) for copy in range(4) for k in keys]

    big = compare_runs(score(tmp_path, "a4", copies(ok[:1]), many), score(tmp_path, "b4", copies(ok[1:4]), many))
    assert big["pairing"]["paired"] == 68
    for key, m in first["metrics"].items():
        wide, narrow = m["ci"][1] - m["ci"][0], big["metrics"][key]["ci"][1] - big["metrics"][key]["ci"][0]
        assert big["metrics"][key]["delta"] == pytest.approx(m["delta"])
        assert 0 < narrow < 0.75 * wide, key


def test_families_sorted_by_change(tmp_path):
    """B blanks the prompts carrying a keywords instruction: the keywords family moves most."""
    keywords = [str(r["key"]) for r in RECORDS if any(i.startswith("keywords:") for i in r["instruction_id_list"])]
    report = compare_runs(score(tmp_path, "a"), score(tmp_path, "b", keywords))
    deltas = [f["loose"]["delta"] for f in report["families"]]
    assert deltas == sorted(deltas, reverse=True)
    kw = next(f for f in report["families"] if f["name"] == "keywords")
    followed = [
        ok
        for r in RECORDS
        for i, ok in zip(r["instruction_id_list"], FOLLOW["loose"][str(r["key"])])
        if i.startswith("keywords:")
    ]
    assert kw == {
        "name": "keywords",
        "n": len(followed),
        "loose": {"a": sum(followed) / len(followed), "b": 0.0, "delta": -sum(followed) / len(followed)},
        "strict": kw["strict"],
    }
    assert report["families"][-1]["name"] == "keywords"


# ---------------------------------------------------------------------------------------- pairing
def test_pairing_by_id_counts_the_unpaired_and_falls_back_to_prompt_text(tmp_path):
    a = score(tmp_path, "a")
    subset = score(tmp_path, "sub", records=RECORDS[:10])
    report = compare_runs(a, subset)
    assert report["pairing"] == {"by": "id", "paired": 10, "only_a": 7, "only_b": 0, "excluded": {}}
    assert report["warnings"] == ["the runs used different data or subsets"]
    ok = set(passing("strict"))
    first10 = {str(r["key"]) for r in RECORDS[:10]}
    assert report["metrics"]["prompt_strict"]["a"] == pytest.approx(len(ok & first10) / 10)
    # New keys for the same prompts: no id is shared, the prompt text pairs them.
    rekeyed = score(tmp_path, "rekeyed", records=[{**r, "key": r["key"] + 100_000} for r in RECORDS])
    assert compare_runs(a, rekeyed)["pairing"]["by"] == "prompt"
    other = score(
        tmp_path, "other", records=[{**r, "key": r["key"] + 100_000, "prompt": r["prompt"] + "!"} for r in RECORDS]
    )
    with pytest.raises(AutoifError, match="share no prompt"):
        compare_runs(a, other)


def test_unchecked_ifbench_prompts_are_left_out_of_the_pairs(tmp_path, offline_nltk):
    records = [json.loads(x) for x in IFBENCH_FROZEN.read_text().splitlines()]
    a = score(tmp_path, "a", records=records, bench="ifbench")
    b = score(tmp_path, "b", [str(records[0]["key"])], records=records, bench="ifbench")
    report = compare_runs(a, b)
    results = json.loads((a / "ifbench_results.json").read_text())
    assert report["pairing"]["excluded"] == {"nltk:stopwords": 1, "nltk:averaged_perceptron_tagger_eng": 1}
    assert report["pairing"]["paired"] == results["counts"]["prompts"] == 7
    assert {k: m["a"] for k, m in report["metrics"].items()} == results["metrics"]


def test_followbench_levels_and_averages(tmp_path):
    """FollowBench rows as its `score` writes them (a judge is a model; the verdicts are given here):
    HSR/SSR per level over the judged answers, averaged over levels; unparsed and rule-based answers
    are left out."""
    levels = [1, 1, 2, 1, 2, 3]
    verdicts = {
        "a": [(1, 1.0), (0, 0.0), (1, 1.0), "rule", (0, 0.5), None],
        "b": [(1, 1.0), (1, 1.0), (0, 0.5), "rule", (0, 0.5), (1, 1.0)],
    }
    items = FOLLOWBENCH.items(
        [
            {"example_id": n, "category": "style", "level": lv, "instruction": f"i{n}.{lv}"}
            for n, top in enumerate([1, 2, 3])
            for lv in range(top + 1)
        ],
        "test",
    )
    dirs = {}
    for side, rows in verdicts.items():
        per_item = []
        for item, v in zip(items, rows):
            row = {"level": item.record["level"], "category": "style"}
            row.update(
                {"rule_based": True}
                if v == "rule"
                else {"unparsed": True}
                if v is None
                else {"hard": v[0], "soft": v[1]}
            )
            per_item.append(row)
        scores = Scores(metrics={}, counts={"prompts": len(items)}, per_item=per_item)
        results = {"benchmark": "followbench", "title": "FollowBench", "metrics": {}, "counts": scores.counts}
        write_results(tmp_path / side, "followbench", results, items, Responses(["answer"] * len(items)), scores)
        dirs[side] = tmp_path / side
    assert [int(i.record["level"]) for i in items] == levels
    report = compare_runs(dirs["a"], dirs["b"])
    assert report["pairing"]["excluded"] == {"unparsed": 1, "rule_based": 1}
    m = report["metrics"]
    assert set(m) == {"hsr_level1", "hsr_level2", "hsr_avg", "ssr_level1", "ssr_level2", "ssr_avg"}
    assert (m["hsr_level1"]["a"], m["hsr_level1"]["b"], m["hsr_level1"]["n"]) == (0.5, 1.0, 2)
    assert (m["ssr_level2"]["a"], m["ssr_level2"]["b"]) == (0.75, 0.5)
    assert m["hsr_avg"]["a"] == pytest.approx((0.5 + 0.5) / 2) and m["hsr_avg"]["b"] == pytest.approx((1 + 0) / 2)
    assert m["hsr_level1"]["mcnemar"] == {"b_only": 1, "a_only": 0, "p": 1.0}
    assert [f["name"] for f in report["families"]] == ["style"]


def test_dev_runs_compare_per_constraint(tmp_path):
    """Dev-set runs scored in the real sandbox, each prompt answered by one of its instance's own
    cases (a passing one, or a failing one): the constraints and namespaces that moved are those."""
    from autoif.evals.dev import DEV_INSTANCES, DEV_SEED, dev_records
    from autoif.stages.library import build_library

    records = [r for r in dev_records() if r["constraint"].startswith(("punctuation:", "length:"))]
    cases = {e.id: e.cases for e in build_library(DEV_SEED, DEV_INSTANCES, split="dev")}
    data = tmp_path / "dev.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    config = load_config(None, [f"paths.out={tmp_path / 'out'}"])
    for name, fail in (("a", ()), ("b", {"punctuation:no_commas"})):
        rows = [
            {
                "id": r["id"],
                "response": next(
                    c["input"] for c in cases[r["instance"]] if c["output"] is (r["constraint"] not in fail)
                ),
            }
            for r in records
        ]
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        run_benchmark("dev", config, str(data), str(tmp_path / f"{name}.jsonl"), None, tmp_path / name, show=False)
    report = compare_runs(tmp_path / "a", tmp_path / "b")
    assert report["metrics"]["prompt_pass"]["a"] == 1.0
    # The seven no-comma prompts (PROMPTS_PER_CONSTRAINT) flip: exact McNemar p = 2 / 2**7.
    assert report["metrics"]["prompt_pass"]["mcnemar"] == {"b_only": 0, "a_only": 7, "p": 2 / 2**7}
    assert report["instructions"][-1] == {
        "name": "punctuation:no_commas",
        "n": 7,
        "pass": {"a": 1.0, "b": 0.0, "delta": -1.0},
    }
    assert [f["name"] for f in report["families"]] == ["length", "punctuation"]


# --------------------------------------------------------------------------------- CLI and errors
def test_cli_prints_the_tables_and_writes_json(tmp_path):
    ok = passing("loose")
    a, b = score(tmp_path, "base", ok[:1]), score(tmp_path, "sft", ok[1:])
    proc = cli(
        "eval",
        "compare",
        str(a),
        str(b / "ifeval_results.json"),
        "--json",
        str(tmp_path / "c.json"),
        "--resamples",
        "500",
        "--seed",
        "3",
    )
    assert proc.returncode == 0, proc.stderr
    saved = json.loads((tmp_path / "c.json").read_text())
    assert saved == compare_runs(a, b / "ifeval_results.json", resamples=500, seed=3)
    assert saved["a"]["name"] == "base" and saved["bootstrap"]["resamples"] == 500
    assert "prompt-level loose accuracy" in proc.stdout and "McNemar" in proc.stdout
    assert saved["warnings"] == [] and "warning" not in proc.stdout
    assert "Instruction families that moved most" in proc.stdout


def test_cli_refuses_bad_pairs_in_one_line(tmp_path):
    a = score(tmp_path, "a")
    (tmp_path / "two").mkdir()
    for name in ("ifeval_results.json", "ifbench_results.json"):
        (tmp_path / "two" / name).write_text((a / "ifeval_results.json").read_text())
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "ifeval_results.json").write_text((a / "ifeval_results.json").read_text())
    for args, fragment in [
        ((str(a), str(tmp_path / "two")), "must hold exactly one *_results.json"),
        ((str(a), str(lonely)), f"compare needs the per-prompt scores in {lonely / 'ifeval_responses.jsonl'}"),
    ]:
        proc = cli("eval", "compare", *args)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert fragment in proc.stderr


def not_utf8(path: Path, prefix: bytes = b"") -> int:
    """Write `prefix` and seeded random bytes to `path`; the line of the first byte that is not UTF-8."""
    raw = prefix + random.Random(0).randbytes(400)
    path.write_bytes(raw)
    with pytest.raises(UnicodeDecodeError) as err:
        raw.decode("utf-8")
    return raw.count(b"\n", 0, err.value.start) + 1


def test_files_that_are_not_utf8_are_one_line_with_file_and_line(tmp_path):
    a, b = score(tmp_path, "a"), score(tmp_path, "b")
    good_row = (b / "ifeval_responses.jsonl").read_text().splitlines()[0].encode() + b"\n"
    line = not_utf8(b / "ifeval_responses.jsonl", good_row)
    assert line >= 2
    garbage = tmp_path / "garbage.jsonl"
    results_line = not_utf8(a / "ifeval_results.json", b'{\n  "benchmark": "ifeval",\n')
    cases = [
        (("eval", "compare", str(tmp_path / "b"), str(tmp_path / "b")), b / "ifeval_responses.jsonl", line),
        (("eval", "compare", str(a), str(b)), a / "ifeval_results.json", results_line),
        (
            ("eval", "ifeval", "--data", str(IFEVAL_FROZEN), "--responses", str(garbage), "--out", str(tmp_path / "x")),
            garbage,
            not_utf8(garbage),
        ),
    ]
    for args, path, lineno in cases:
        proc = cli(*args)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
        assert f"{path} line {lineno}: not UTF-8 text" in proc.stderr


def test_duplicated_lines_count_once_and_conflicting_ones_are_one_line(tmp_path, caplog):
    """A responses file concatenated with itself pairs all its prompts (with a warning); two
    different records of one prompt are refused naming both."""
    a = score(tmp_path, "a")
    doubled = tmp_path / "doubled"
    doubled.mkdir()
    (doubled / "ifeval_results.json").write_text((a / "ifeval_results.json").read_text())
    rows = (a / "ifeval_responses.jsonl").read_text()
    (doubled / "ifeval_responses.jsonl").write_text(rows + rows)
    report = compare_runs(a, doubled, resamples=50)
    assert report["pairing"]["paired"] == len(RECORDS) and report["pairing"]["only_b"] == 0
    assert f"{len(RECORDS)} record(s) repeat an earlier one exactly" in caplog.text
    first = json.loads(rows.splitlines()[0])
    (doubled / "ifeval_responses.jsonl").write_text(rows + json.dumps({**first, "response": "another"}) + "\n")
    proc = cli("eval", "compare", str(a), str(doubled))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f"records 1 and {len(RECORDS) + 1} have the same id" in proc.stderr


def test_an_unwritable_json_path_fails_before_the_table(tmp_path):
    a = score(tmp_path, "a")
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for target, fragment in [
        (blocker / "c.json", f"--json {blocker / 'c.json'} cannot be written: {blocker} is not a writable directory"),
        (tmp_path, f"--json {tmp_path} is a directory"),
        ("", "--json is empty"),
    ]:
        proc = cli("eval", "compare", str(a), str(a), "--json", str(target), "--resamples", "10")
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert fragment in proc.stderr and proc.stdout == ""


# ------------------------------------------------------------------------------ several decodings
SMOLLM2 = Path(__file__).resolve().parents[1] / "results" / "smollm2-135m-selfalign"
# The published SmolLM2 experiment's IFEval answers (issue 29): the base and DPO model decoded with
# fp32 weights (selection/base, selection/c2-dpo-greedy) and with bf16 weights (the recipe's files).
DECODED = {
    ("base", "fp32"): SMOLLM2 / "selection" / "base" / "ifeval_responses.jsonl",
    ("dpo", "fp32"): SMOLLM2 / "selection" / "c2-dpo-greedy" / "ifeval_responses.jsonl",
    ("base", "bf16"): SMOLLM2 / "ifeval_base_responses.jsonl",
    ("dpo", "bf16"): SMOLLM2 / "ifeval_trained_responses.jsonl",
}


@pytest.fixture(scope="module")
def decoded(tmp_path_factory) -> Path:
    """The first 80 IFEval prompts of each published answer file, scored as `autoif eval ifeval --data
    SUBSET --responses FILE --out DIR/<model>/<decoding>` does: a recipe's eval layout."""
    from autoif.evals import benchmark

    root = tmp_path_factory.mktemp("decoded")
    source = benchmark("ifeval").packaged_file()
    if source is None:
        pytest.skip("the IFEval prompts are not installed (make test installs them)")
    data = root / "ifeval_80.jsonl"
    data.write_text("".join(source.read_text(encoding="utf-8").splitlines(keepends=True)[:80]))
    config = load_config(None, [f"paths.out={root / 'out'}"])
    for (model, decoding), answers in DECODED.items():
        run_benchmark("ifeval", config, str(data), str(answers), None, root / model / decoding, show=False)
    return root


def verdicts(run: Path, mode: str) -> dict[str, int]:
    rows = [json.loads(x) for x in (run / "ifeval_responses.jsonl").read_text().splitlines()]
    return {r["id"]: int(all(r[f"follow_{mode}"])) for r in rows}


def test_decodings_compare_each_and_their_per_prompt_average(decoded):
    from autoif.evals.stats import compare_decodings, decoding_path

    a, b = decoded / "base" / "ifeval_results.json", decoded / "dpo" / "ifeval_results.json"
    names = ["fp32", "bf16"]
    report = compare_decodings(
        [decoding_path(a, d) for d in names], [decoding_path(b, d) for d in names], names, resamples=2000, seed=5
    )
    assert (report["a"], report["b"], report["decodings"]) == ("base", "dpo", names)
    for d in names:  # each decoding: exactly `compare_runs` of its two results files
        alone = compare_runs(decoded / "base" / d, decoded / "dpo" / d, resamples=2000, seed=5)
        assert report["per_decoding"][d]["metrics"] == alone["metrics"]
        assert report["per_decoding"][d]["families"] == alone["families"]
    average = report["average"]
    assert average["pairing"] == {"paired": 80, "left_out": 0}
    for mode in ("strict", "loose"):
        # A prompt's score: the mean of its verdicts over the two decodings; computed here from the files.
        mean = {
            m: {
                k: (verdicts(decoded / m / "fp32", mode)[k] + v) / 2
                for k, v in verdicts(decoded / m / "bf16", mode).items()
            }
            for m in ("base", "dpo")
        }
        assert any(v == 0.5 for v in mean["base"].values())  # the decodings disagree on some prompt
        m = average["metrics"][f"prompt_{mode}"]
        assert m["a"] == pytest.approx(sum(mean["base"].values()) / 80)
        assert m["b"] == pytest.approx(sum(mean["dpo"].values()) / 80)
        assert m["ci"][0] <= m["delta"] <= m["ci"][1]
        higher = sum(mean["dpo"][k] > mean["base"][k] for k in mean["base"])
        lower = sum(mean["dpo"][k] < mean["base"][k] for k in mean["base"])
        n = higher + lower
        p = min(1.0, 2 * sum(math.comb(n, i) for i in range(min(higher, lower) + 1)) / 2**n)
        assert m["sign_test"] == {"b_only": higher, "a_only": lower, "p": pytest.approx(p)}
        # The average of the two decodings' metrics (every prompt scored in both).
        per = [report["per_decoding"][d]["metrics"][f"prompt_{mode}"]["delta"] for d in names]
        assert m["delta"] == pytest.approx(sum(per) / 2)


def test_cli_compares_decodings_by_layout_or_by_listed_files(decoded, tmp_path):
    from autoif.evals.stats import compare_decodings

    base, dpo = decoded / "base", decoded / "dpo"
    by_layout = cli(
        "eval",
        "compare",
        str(base / "ifeval_results.json"),
        str(dpo / "ifeval_results.json"),
        "--decodings",
        "fp32,bf16",
        "--resamples",
        "300",
        "--json",
        str(tmp_path / "layout.json"),
    )
    assert by_layout.returncode == 0, by_layout.stderr
    for heading in ("IFEval, fp32: A = base, B = dpo", "IFEval, bf16:", "IFEval, mean over fp32, bf16", "sign test p"):
        assert heading in by_layout.stdout
    assert by_layout.stdout.count("Instruction families that moved most") == 1  # the first decoding's
    saved = json.loads((tmp_path / "layout.json").read_text())
    paths = {m: [decoded / m / d / "ifeval_results.json" for d in ("fp32", "bf16")] for m in ("base", "dpo")}
    expected = compare_decodings(paths["base"], paths["dpo"], ["fp32", "bf16"], names=("base", "dpo"), resamples=300)
    assert saved == json.loads(json.dumps(expected))
    listed = cli(
        "eval",
        "compare",
        ",".join(map(str, paths["base"])),
        ",".join(map(str, paths["dpo"])),
        "--resamples",
        "300",
        "--json",
        str(tmp_path / "listed.json"),
    )
    assert listed.returncode == 0, listed.stderr
    again = json.loads((tmp_path / "listed.json").read_text())
    assert again["decodings"] == ["#1", "#2"] and again["average"] == saved["average"]
    from click.testing import CliRunner

    from autoif.cli import cli as autoif_cli

    for args, fragment in [
        ((",".join(map(str, paths["base"])), str(dpo)), "one results path for each of the 2 decodings"),
        ((str(base), str(dpo), "--decodings", "fp32,fp16"), f"no such results file: {base / 'fp16'}"),
        ((str(base), str(dpo), "--decodings", "fp32,fp32"), "name each decoding once"),
    ]:
        result = CliRunner().invoke(autoif_cli, ["eval", "compare", *args])
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
        assert fragment in result.output
