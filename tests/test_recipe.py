"""`autoif recipe`: a real recipe end to end on tiny components (a hand-written run directory, a tiny
model built from a config, two real TRL steps per trainer, real generation and scoring of a few
IFEval and IFBench prompts), then a rerun that skips every step, then a changed train setting that
redoes that step and only what reads it; an evaluation killed mid-generation that resumes from its
response cache; the shipped recipes loaded, resolved and planned; bad input as one line, exit 2.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("transformers")

from autoif.cli import cli  # noqa: E402
from autoif.config import load_config  # noqa: E402
from autoif.evals import benchmark  # noqa: E402
from autoif.evals.base import EvalConfig, EvalContext  # noqa: E402
from autoif.evals.data import load_records, subset  # noqa: E402
from autoif.recipe import Plan, describe, load_recipe, run_plan  # noqa: E402
from tiny_models import tiny_causal_lm, write_training_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
FUNCTIONS = ["def evaluate(response):\n    return len(response) % 2 == 0\n"]
TRAIN = {
    "max_steps": 2,
    "global_batch_size": 2,
    "per_device_batch_size": 2,
    "max_length": 64,
    "logging_steps": 1,
    "save_steps": 1,
    "learning_rate": 1e-3,
    "warmup_steps": 0,
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory written by hand: what `data: {run_dir: ...}` trains on."""
    out = write_training_data(tmp_path_factory.mktemp("run"), FUNCTIONS)
    funnel = {"stages": {"export": {"in": 4, "out": 8, "dropped": {}}}}
    (out / "funnel.json").write_text(json.dumps(funnel))
    return out


def _recipe_file(tmp_path: Path, tiny: Path, run_dir: Path) -> Path:
    recipe = {
        "name": "tiny",
        "base_model": str(tiny),
        "data": {"run_dir": str(run_dir)},
        "train": [
            {"name": "sft", "trainer": "sft", "set": TRAIN},
            {"name": "dpo", "trainer": "dpo", "set": TRAIN},
        ],
        "eval": {
            "benchmarks": ["ifeval", "ifbench"],
            "limit": 2,
            "settings": {"max_tokens": 8},
            "llm": {"backend": "local", "batch_size": 2},
        },
        "compare": {"resamples": 200},
        "publish": "published",
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _states(plan: Plan) -> dict[str, str]:
    return {step.name: step.state() for step in plan.steps}


def _ran(caplog) -> list[str]:
    """Steps the recipe ran (not skipped), from its progress lines."""
    lines = [r.getMessage() for r in caplog.records if r.name == "autoif.recipe"]
    return [line.split("] ", 1)[1].split(":")[0] for line in lines if line.endswith("running")]


def test_recipe_runs_skips_and_redoes_what_a_changed_setting_reaches(tiny, run_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="autoif.recipe")
    path, out = _recipe_file(tmp_path, tiny, run_dir), tmp_path / "out"
    plan = Plan(load_recipe(path), path, out)
    every = [s.name for s in plan.steps]
    assert all(state == "run" for state in _states(plan).values())

    run_plan(plan)
    assert _ran(caplog) == every
    results = json.loads((out / "results.json").read_text())
    sft, dpo = results["training"]["sft"], results["training"]["dpo"]
    assert sft["steps"] == dpo["steps"] == 2 and sft["final_loss"] > 0 and sft["runtime_s"] > 0
    assert dpo["model"] == str(out / "train" / "dpo" / "final")
    for model in ("base", "sft", "dpo"):
        for bench in ("ifeval", "ifbench"):
            assert set(results["evals"][model][bench]["metrics"]) >= {"prompt_loose"}
    contamination = json.loads((out / "contamination.json").read_text())
    assert contamination["max_share"] == 0.01
    assert contamination["benchmarks"]["ifeval"]["within_limit"] is True
    page = (out / "results.md").read_text()
    for heading in ("### ifeval", "### ifbench", "## Contamination", "## Data funnel", "## Training"):
        assert heading in page
    assert results["commands"][0].startswith("autoif recipe") and any(
        c.startswith("autoif train dpo --model " + str(out / "train" / "sft" / "final")) for c in results["commands"]
    )
    assert all(results["steps"][name]["wall_s"] >= 0 for name in every if name not in ("results", "publish"))

    # Published: each benchmark's responses of the base and the final model, the prompt exactly as
    # the benchmark file has it, with the logs and the page.
    published = tmp_path / "published"
    for bench in ("ifeval", "ifbench"):
        bench_prompts = {item.prompt for item in benchmark(bench).items(*load_records(benchmark(bench), None))}
        for label in ("base", "trained"):
            rows = [
                json.loads(line) for line in (published / f"{bench}_{label}_responses.jsonl").read_text().splitlines()
            ]
            assert len(rows) == 2 and all(
                set(r) == {"prompt", "response", "finish_reason", "strict", "loose"} for r in rows
            )
            assert all(r["prompt"] in bench_prompts for r in rows)
            # Per-prompt verdicts (None: a prompt left unchecked) and why generation stopped (8 tokens).
            assert all(r["strict"] in (True, False, None) and r["finish_reason"] in ("length", "stop") for r in rows)
    assert json.loads((published / "training_dpo_log.json").read_text())[-1]["train_runtime"] > 0
    for name in ("funnel.json", "contamination.json", "results.md", "commands.sh"):
        assert (published / name).is_file()

    # The same recipe again: every step is done and skipped, nothing is written.
    caplog.clear()
    stamp = (out / "train" / "sft" / "final" / "model.safetensors").stat().st_mtime_ns
    again = Plan(load_recipe(path), path, out)
    assert all(line.split(": ", 1)[1].startswith("done, skipped") for line in describe(again))
    run_plan(again)
    assert _ran(caplog) == []
    assert (out / "train" / "sft" / "final" / "model.safetensors").stat().st_mtime_ns == stamp

    # One DPO setting changed: DPO, the evaluations of its model and what reads them are redone; the
    # SFT model and the base's and SFT's evaluations are kept.
    caplog.clear()
    changed = Plan(load_recipe(path, ["train.dpo.learning_rate=5e-4"]), path, out)
    redo = {"train.dpo", "eval.dpo.ifeval", "eval.dpo.ifbench", "compare", "results", "publish"}
    assert {n for n, s in _states(changed).items() if s != "done"} == redo
    assert all(s == "redo" for n, s in _states(changed).items() if n in redo)
    run_plan(changed)
    assert set(_ran(caplog)) == redo
    assert (out / "train" / "sft" / "final" / "model.safetensors").stat().st_mtime_ns == stamp
    assert json.loads((out / "train" / "dpo" / "trainer_state.json").read_text())["log_history"][0]["learning_rate"] > 0


def test_training_step_cut_off_resumes_from_its_checkpoint(tiny, run_dir, tmp_path, caplog):
    """A train step that was cut off after its first checkpoint (its `.started` marker holds the
    step's hash) goes on from that checkpoint instead of starting over."""
    from autoif.train import trainer

    caplog.set_level(logging.INFO, logger="autoif.recipe")
    recipe = {
        "name": "cut",
        "base_model": str(tiny),
        "data": {"run_dir": str(run_dir)},
        "train": [{"name": "sft", "trainer": "sft", "set": TRAIN}],
        "eval": {"models": []},
        "contamination": {"enabled": False},
    }
    path, out = tmp_path / "cut.yaml", tmp_path / "out"
    path.write_text(yaml.safe_dump(recipe))
    plan = Plan(load_recipe(path), path, out)
    step = plan.step("train.sft")
    # What a run killed after its first optimizer step leaves: checkpoint-1 and the started marker.
    settings_class, train = trainer("sft")
    first = {
        **TRAIN,
        "max_steps": 1,
        "model": str(tiny),
        "data": str(run_dir),
        "output_dir": str(out / "train" / "sft"),
    }
    train(settings_class(**first))
    step.started_file.parent.mkdir(parents=True)
    step.started_file.write_text(json.dumps({"hash": step.digest}))
    checkpoint = out / "train" / "sft" / "checkpoint-1" / "trainer_state.json"
    stamp = checkpoint.stat().st_mtime_ns

    assert step.state() == "resume"
    run_plan(plan)
    assert "recipe [2/3] train.sft: resuming" in caplog.text
    assert step.marker()["info"]["resumed"] is True
    assert checkpoint.stat().st_mtime_ns == stamp  # step 1 was not trained again
    assert json.loads((out / "train" / "sft" / "trainer_state.json").read_text())["global_step"] == 2


def test_decodings_are_compared_each_and_averaged_and_published_per_decoding(tiny, run_dir, tmp_path):
    """Two decodings (fp32 and bf16 weights): every model is evaluated in each, into
    OUT/eval/<model>/<decoding>/; compare.json holds each decoding's comparison and their per-prompt
    average; the page shows both; the published files are named per decoding. The base's answers go
    to the shared cache (eval.base_cache), which then serves them to a fresh output directory."""
    path, out = _recipe_file(tmp_path, tiny, run_dir), tmp_path / "out"
    decodings = [
        "eval.decodings=[{name: fp32, llm: {dtype: float32}},"
        " {name: bf16, llm: {dtype: bfloat16}, benchmarks: [ifeval]}]",
        "eval.base_cache=shared_cache.sqlite",
    ]
    sets = ["train.sft.max_steps=1", "eval.limit=2", *decodings]
    plan = Plan(load_recipe(path, sets), path, out)
    evals = [s.name for s in plan.steps if s.name.startswith("eval.base.")]
    assert evals == ["eval.base.fp32.ifeval", "eval.base.fp32.ifbench", "eval.base.bf16.ifeval"]
    run_plan(plan)
    for model in ("base", "sft", "dpo"):
        assert (out / "eval" / model / "bf16" / "ifeval_results.json").is_file()
        assert not (out / "eval" / model / "bf16" / "ifbench_results.json").exists()
    assert not (out / "eval" / "base" / "fp32" / "ifeval_cache.sqlite").exists()

    compare = json.loads((out / "compare.json").read_text())
    ifeval, ifbench = compare["dpo"]["ifeval"], compare["dpo"]["ifbench"]
    assert ifeval["decodings"] == ["fp32", "bf16"] and set(ifeval["per_decoding"]) == {"fp32", "bf16"}
    assert "prompt_loose" in ifeval["average"]["metrics"] and "per_decoding" not in ifbench
    page = (out / "results.md").read_text()
    for heading in ("### dpo vs base: IFEval, fp32", "### dpo vs base: IFEval, bf16", "IFEval, mean over fp32, bf16"):
        assert heading in page
    assert "| base fp32 |" in page and "| dpo bf16 |" in page
    assert "--decodings fp32,bf16" in page
    published = tmp_path / "published"
    names = {p.name for p in published.glob("*_responses.jsonl")}
    assert names == {
        f"{bench}_{label}_{d}_responses.jsonl"
        for bench, ds in (("ifeval", ("fp32", "bf16")), ("ifbench", ("fp32",)))
        for d in ds
        for label in ("base", "trained")
    }

    # A fresh output directory given the shared cache: the base's evaluations generate nothing.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    shutil.copyfile(out / "shared_cache.sqlite", fresh / "shared_cache.sqlite")
    again = Plan(load_recipe(path, sets), path, fresh)
    for step in (s for s in again.steps if s.name.startswith("eval.base.")):
        step.action()
    for decoding, bench in (("fp32", "ifeval"), ("fp32", "ifbench"), ("bf16", "ifeval")):
        first, second = (o / "eval" / "base" / decoding / f"{bench}_responses.jsonl" for o in (out, fresh))
        assert first.read_text() == second.read_text()
    with sqlite3.connect(fresh / "shared_cache.sqlite") as db:
        assert db.execute("select count(*) from responses").fetchone()[0] == 6  # 2 + 2 + 2: none added


@pytest.mark.slow
def test_general_benchmarks_are_published_and_compared(tiny, run_dir, tmp_path):
    """MMLU and HumanEval in a recipe: the base's and the final model's per-item files published with
    their fields, and the paired comparison (bootstrap interval, McNemar) in compare.json and the page."""
    path, out = _recipe_file(tmp_path, tiny, run_dir), tmp_path / "out"
    tree = yaml.safe_load(path.read_text())
    tree["train"] = tree["train"][1:]  # one trainer is enough here
    tree["eval"]["benchmarks"] = ["mmlu", "humaneval"]
    path.write_text(yaml.safe_dump(tree))
    run_plan(Plan(load_recipe(path, ["train.dpo.max_steps=1", "eval.limit=3"]), path, out))
    published = tmp_path / "published"
    for bench in ("mmlu", "humaneval"):
        fields = set(benchmark(bench).published_fields)
        for label in ("base", "trained"):
            rows = [
                json.loads(line) for line in (published / f"{bench}_{label}_responses.jsonl").read_text().splitlines()
            ]
            assert len(rows) == 3 and all(set(r) == fields for r in rows)
    compare = json.loads((published / "compare.json").read_text())["dpo"]
    assert compare["mmlu"]["pairing"]["paired"] == compare["humaneval"]["pairing"]["paired"] == 3
    for bench, metric in (("mmlu", "accuracy"), ("humaneval", "pass_at_1")):
        assert {"delta", "ci", "mcnemar"} <= set(compare[bench]["metrics"][metric])
    page = (published / "results.md").read_text()
    assert "### dpo vs base: MMLU (3 paired" in page and "### dpo vs base: HumanEval (3 paired" in page


def test_killed_evaluation_resumes_from_its_response_cache(tiny, tmp_path):
    """An evaluation killed mid-generation (SIGKILL, as a session's end does) keeps every finished
    response in its cache; the rerun generates only the others and writes the usual files."""
    out, n = tmp_path / "eval", 6
    sets = [f"paths.out={out}", "llm.cache_path=ifeval_cache.sqlite", "llm.batch_size=1", "seed=42"]
    argv = [sys.executable, "-m", "autoif.cli", "eval", "ifeval", "--model", str(tiny), "--limit", str(n)]
    argv += ["--max-tokens", "64", "--out", str(out)] + [a for s in sets for a in ("--set", s)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache, kept = out / "ifeval_cache.sqlite", 0
    deadline = time.monotonic() + 120
    while kept < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        if cache.is_file():
            with sqlite3.connect(f"file:{cache}?mode=ro", uri=True) as db:
                try:
                    kept = db.execute("select count(*) from responses").fetchone()[0]
                except sqlite3.OperationalError:  # the table is not made yet
                    continue
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the evaluation finished before it could be killed"
    assert 2 <= kept < n and not (out / "ifeval_results.json").exists()

    config = load_config(None, [*sets, f"llm.model={tiny}"])
    bench = benchmark("ifeval")
    items = subset(bench.items(*load_records(bench, None)), n, config.seed)
    context = EvalContext(config, EvalConfig(max_tokens=64))
    try:  # the same requests `autoif eval` makes: the finished ones come from the cache
        context.generate([item.prompt for item in items], max_tokens=64, desc="rerun")
        stats = context.backend().stats
    finally:
        context.close()
    assert stats.hits >= kept and stats.hits + stats.misses == n

    # The rerun of the command itself now finds every response and writes the usual files.
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = [json.loads(line) for line in (out / "ifeval_responses.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == [item.prompt for item in items]
    assert json.loads((out / "ifeval_results.json").read_text())["counts"]["prompts"] == n


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_shipped_recipes_load_resolve_and_plan(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(path)
    plan = Plan(recipe, path, recipe.name)
    names = [s.name for s in plan.steps]
    assert names[0] == "data" and [n for n in names if n.startswith("train.")] == [
        f"train.{s.name}" for s in recipe.train
    ]
    measure = {b: recipe.eval.decodings_of(b)[0] for b in ("ifeval", "ifbench", "mmlu", "humaneval")}
    assert {plan.eval_step("base", b, d) for b, d in measure.items()} <= set(names)
    for bench, decoding in measure.items():  # a per-benchmark limit reaches that benchmark's command only
        limit = recipe.eval.limit_of(bench)
        command = plan.step(plan.eval_step("base", bench, decoding)).command
        assert (f"--limit {limit}" in command) if limit else ("--limit" not in command), command
    assert "contamination" in names and "results" in names
    lines = describe(plan)
    assert len(lines) == len(names) and all("would run" in line for line in lines)
    # Paths under the working directory are written relative to it: the commands run from any checkout.
    commands = [s.command for s in plan.steps if not s.command.startswith("#")]
    assert f"-o {recipe.name}/data" in plan.step("data").command
    assert not any(str(tmp_path) in c for c in commands), commands
    if recipe.publish:
        assert plan.step("publish").command.endswith(str(ROOT / "results" / recipe.name))
    for spec in recipe.train:
        if spec.launch:
            assert plan.step(f"train.{spec.name}").command.startswith("accelerate launch --config_file")


@pytest.mark.parametrize(
    ("text", "sets", "message"),
    [
        ("name: x\nevals: {}\n", [], "unknown key 'evals'"),
        ("name: x\ntrain: [{name: a, trainer: spt}]\n", [], "unknown trainer 'spt' (did you mean 'sft'?)"),
        ("name: x\neval: {benchmarks: [ifevel]}\n", [], "unknown benchmark 'ifevel' (did you mean 'ifeval'?)"),
        ("name: x\ntrain: [{name: a, trainer: sft, set: {lr: 1}}]\n", [], "unknown key 'lr'"),
        ("name: x\ntrain: [{name: a, trainer: sft}]\n", ["train.b.learning_rate=1"], "unknown train step 'b'"),
        ("name: x\neval: {benchmarks: [followbench]}\n", [], "followbench needs a judge"),
        ("name: x\neval: {benchmarks: [mmlu], limit: {mmlo: 5}}\n", [], "unknown benchmark of eval.limit 'mmlo'"),
        ("name: x\neval: {limit: {ifeval: 0}}\n", [], "eval.limit must be at least 1"),
        ("name: x\n", ["eval.limit=0"], "eval.limit must be at least 1"),
        ("name: x\ndata: {config: missing.yaml}\n", [], "no such config file"),
    ],
)
def test_bad_recipe_is_one_line_exit_2(tmp_path, text, sets, message):
    from click.testing import CliRunner

    path = tmp_path / "r.yaml"
    path.write_text(text)
    args = ["recipe", str(path), "-o", str(tmp_path / "out"), "--dry-run"] + [a for s in sets for a in ("--set", s)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_missing_recipe_file_is_one_line_exit_2(tmp_path):
    from click.testing import CliRunner

    result = CliRunner().invoke(cli, ["recipe", str(tmp_path / "nope.yaml"), "--dry-run"])
    assert result.exit_code == 2 and "no such config file" in result.output


def test_data_report_links_the_results_page(tmp_path):
    from autoif.report import render_report

    (tmp_path / "data").mkdir()
    assert "results.md" not in render_report(tmp_path / "data")
    (tmp_path / "results.md").write_text("# results\n")
    assert '<a href="../results.md">experiment results</a>' in render_report(tmp_path / "data")


def test_results_page_shows_the_paired_comparison(tmp_path):
    """compare_runs' dict, computed on two real dev-set runs, becomes a table per model and benchmark:
    each metric with B - A, its interval and McNemar p, and the families that moved."""
    from autoif.evals.stats import compare_runs
    from autoif.recipe_results import render_markdown

    rows = [
        {"id": f"p{i}", "prompt": f"q{i}", "response": "x", "constraint": "case:lowercase", "followed": [ok]}
        for i, ok in enumerate([True, False, False, True])
    ]
    for name, passed in (("base", [1, 0, 0, 1]), ("dpo", [1, 1, 1, 0])):
        (tmp_path / name).mkdir()
        lines = [{**r, "followed": [bool(p)], "pass_rate": float(p), "passed": bool(p)} for r, p in zip(rows, passed)]
        (tmp_path / name / "dev_responses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
        metrics = {"prompt_pass": sum(passed) / 4, "mean_pass_rate": sum(passed) / 4}
        results = {"benchmark": "dev", "title": "autoif dev", "metrics": metrics, "counts": {"prompts": 4}}
        results["metric_labels"] = benchmark("dev").metric_labels
        (tmp_path / name / "dev_results.json").write_text(json.dumps(results))
    compare = compare_runs(tmp_path / "base", tmp_path / "dpo", resamples=200, seed=1)
    results = {
        "name": "x",
        "description": "",
        "base_model": "embedded",
        "eval_settings": {"max_tokens": 512, "temperature": 0.0},
        "evals": {},
        "compare": {"dpo": {"dev": compare}},
        "contamination": None,
        "funnel": None,
        "training": {},
        "steps": {},
        "commands": ["autoif recipe r.yaml -o out"],
    }
    page = render_markdown(results)
    ci = compare["metrics"]["prompt_pass"]["ci"]
    assert "### dpo vs base: autoif dev (4 paired prompts)" in page
    interval = f"[{100 * ci[0]:+.2f}, {100 * ci[1]:+.2f}]"
    assert f"| prompts passing every function | 50.00 | 75.00 | +25.00 | {interval} | 1 (2/1) |" in page
    assert "| case | 4 | 50.00 | 75.00 | +25.00 |" in page
