"""Token usage and cost per stage, the budget, a model per role and `run --estimate`: the pipeline
with a real LLM stage on a real tiny model (the local backend)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from autoif.cli import cli
from autoif.config import config_from_tree, load_config
from autoif.estimate import estimate
from autoif.llm import Request
from autoif.pipeline import Pipeline
from autoif.records import Instruction, QueryRecord
from autoif.stages.base import Context, Stage

sys.path.insert(0, str(Path(__file__).parent))
import test_pipeline  # noqa: E402
from tiny_models import tiny_causal_lm  # noqa: E402


class NumbersStage(test_pipeline.NumbersStage):
    count, text = 6, "Say the number {}."


class AnswerStage(Stage):
    """An LLM stage under a real role's name, so `responses.llm` and the price table apply to it."""

    name = "responses"
    output = "answers.jsonl"
    input = "numbers"
    output_type = Instruction
    uses_llm = True
    reads = ("responses", "llm")  # its role's section (`responses.llm`) and the default model

    def run(self, records, ctx):
        requests = [Request.user(r.text, max_tokens=4, temperature=0.0, seed=1) for r in records]
        for r, (answer,) in zip(records, ctx.llm.generate(requests, progress=False)):
            yield Instruction(id=r.id, text=f"{r.text} -> {answer}", source="seed")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(tiny_causal_lm(tmp_path_factory.mktemp("tiny") / "model"))


def config(out: Path, model: str, **tree):
    base = {
        "paths": {"out": str(out)},
        "executor": {"shard_size": 2},
        "llm": {"backend": "local", "model": model, "device": "cpu"},
        # $1 per prompt token, $0.5 per completion token: costs big enough to read
        "prices": {model: {"input_per_mtok": 1e6, "output_per_mtok": 5e5}},
    }
    for key, value in tree.items():
        base[key] = {**base.get(key, {}), **value}
    return config_from_tree(base)


def run(cfg, **kwargs) -> dict:
    return Pipeline(cfg, stages=[NumbersStage(), AnswerStage()]).run(**kwargs)


@pytest.mark.slow
def test_usage_and_cost_per_stage_in_funnel_and_table(tmp_path, tiny):
    from rich.console import Console

    pipeline = Pipeline(config(tmp_path, tiny), stages=[NumbersStage(), AnswerStage()])
    funnel = pipeline.run()
    line = funnel["stages"]["responses"]["llm"]
    assert line["model"] == tiny and line["backend"] == "local" and line["batch"] is False
    assert line["misses"] == 6 and line["hits"] == 0
    assert line["prompt_tokens"] > 6 and 0 < line["completion_tokens"] <= 6 * 4
    assert line["cost"] == pytest.approx(line["prompt_tokens"] + 0.5 * line["completion_tokens"])
    assert funnel["cost"]["cost"] == pytest.approx(line["cost"])
    assert "llm" not in funnel["stages"]["numbers"]  # a stage that asks no LLM costs nothing
    assert json.loads((tmp_path / "funnel.json").read_text())["stages"]["responses"]["llm"] == line
    console = Console(width=250, record=True)
    console.print(pipeline.funnel_table(funnel, ["numbers", "responses"]))
    text = console.export_text()
    assert f"{line['prompt_tokens']}/{line['completion_tokens']}" in text and f"${line['cost']:.4f}" in text

    from autoif.report import write_report

    html = write_report(tmp_path).read_text()
    assert f"local: {tiny}" in html and f"${line['cost']:.4f}" in html  # the report's LLM section

    # A rerun generates nothing and keeps the stage's recorded usage (a skipped stage's report).
    again = run(config(tmp_path, tiny))
    assert again["stages"]["responses"]["llm"] == line


@pytest.mark.slow
def test_budget_stops_before_it_would_be_passed_even_in_the_first_shard_and_a_rerun_resumes(tmp_path, tiny):
    full = run(config(tmp_path / "full", tiny))["stages"]["responses"]["llm"]
    each = full["cost"] / 6  # the six prompts are the same length: each answer costs about this
    out = tmp_path / "out"
    # One shard of all six: only the meter that pays each sample can stop it in time.
    one_shard = {"executor": {"shard_size": 6}, "llm": {"max_cost": 3.5 * each}}
    stopped = run(config(out, tiny, **one_shard))
    assert stopped["stopped"]["reason"] == "budget" and stopped["stopped"]["stage"] == "responses"
    assert 2.5 * each < stopped["stopped"]["spent"] <= 3.5 * each  # three answers paid, the fourth not sent
    assert "responses" not in stopped["stages"] and not (out / "answers.jsonl").exists()
    assert not list((out / ".work" / "responses").glob("*.done"))
    # The same budget stops a rerun at once, the three answers from the cache, nothing more sent.
    again = run(config(out, tiny, **one_shard))
    assert again["stopped"] == stopped["stopped"]
    # With shards of two, the pipeline also stops before a shard its mean shard cost would not fit.
    sharded = run(config(tmp_path / "sharded", tiny, llm={"max_cost": 3.5 * each}))
    assert sharded["stopped"]["spent"] == pytest.approx(2 * each, rel=0.2)
    assert len(list((tmp_path / "sharded" / ".work" / "responses").glob("*.done"))) == 1
    # A larger budget goes on, and the run ends as an uninterrupted one.
    done = run(config(out, tiny, executor={"shard_size": 6}, llm={"max_cost": 1e6}))
    assert "stopped" not in done
    line = done["stages"]["responses"]["llm"]
    assert line["hits"] == 3  # the three answers the stopped run paid for, from the cache, and counted as paid:
    assert {k: line[k] for k in ("misses", "prompt_tokens", "completion_tokens", "cost")} == {
        k: full[k] for k in ("misses", "prompt_tokens", "completion_tokens", "cost")
    }
    assert (out / "answers.jsonl").read_text() == (tmp_path / "full" / "answers.jsonl").read_text()


@pytest.mark.slow
def test_a_stage_with_its_own_model_gets_its_own_backend_and_cache_identity(tmp_path, tiny):
    other = str(tiny_causal_lm(tmp_path / "other", seed=1))
    cfg = config(tmp_path, tiny, responses={"llm": {"model": other}})
    funnel = run(cfg)
    line = funnel["stages"]["responses"]["llm"]
    assert line["model"] == other and line["cost"] is None  # no price for that model: counted, not priced
    ctx = Context(cfg)
    try:
        default = ctx.llm
        ctx.role = "responses"
        assert ctx.llm is not default and ctx.llm.model == other and default.model == tiny
        assert ctx.llm.cache_identity != default.cache_identity
    finally:
        ctx.close()


def test_bad_price_table_and_unknown_role_are_one_line_errors(tmp_path):
    runner = CliRunner()
    for bad in ("prices.m.input_per_mtok=-1", "prices.m.output=2", "seeds.llm.model=x", "score.llm.modle=x"):
        result = runner.invoke(cli, ["run", "--estimate", "-o", str(tmp_path), "--set", bad])
        assert result.exit_code == 2, (bad, result.output)
        assert result.output.count("\n") == 1 and "config error" in result.output, result.output
    # A budget needs a price for every model it would pay for.
    result = runner.invoke(cli, ["run", "-o", str(tmp_path / "out"), "--set", "llm.max_cost=5"])
    assert result.exit_code == 2 and "no entry for 'embedded'" in result.output and result.output.count("\n") == 1


def test_estimate_is_exact_where_the_config_decides_and_offline_at_paper_scale(tmp_path):
    cfg = load_config(None, [f"paths.out={tmp_path}", "scale=small", "augment.k=7", "seeds.builtin_library=off"])
    rows = {row.stage: row for row in estimate(cfg)}
    assert rows["augment"].records_in == 36 and rows["augment"].samples == 36 * 7  # the paper's 36 seeds
    assert rows["verifiers"].samples == (36 + 36 * 7) * 4
    assert rows["compose"].samples == 0  # off by default
    assert not any(row.measured for row in rows.values())
    assert {row.tokens_from for row in rows.values()} == {"assumed"}
    # Compose on: without the library every combination has an LLM-written instruction, so each
    # one's conflict check is asked; configured lengths take the place of the assumed ones.
    composed = load_config(
        None,
        [f"paths.out={tmp_path}", "scale=small", "seeds.builtin_library=off", "compose.enabled=true"]
        + ["compose.count=10", "lengths.compose.prompt_tokens=300", "lengths.responses.completion_tokens=50"],
    )
    rows = {row.stage: row for row in estimate(composed)}
    assert rows["compose"].samples == 10 and rows["compose"].tokens_from == "configured"
    assert rows["compose"].prompt_tokens == 10 * 300
    assert rows["compose"].completion_tokens == 10 * composed.compose.max_tokens / 2  # not configured: assumed
    assert rows["responses"].completion_tokens == rows["responses"].samples * 50
    result = CliRunner().invoke(
        cli,
        ["run", "--estimate", "-o", str(tmp_path), "--set", "scale=paper", "--set", "llm.model=m"]
        + ["--set", "prices.m.input_per_mtok=0.15", "--set", "prices.m.output_per_mtok=0.6"],
    )
    assert result.exit_code == 0, result.output
    assert "responses" in result.output and "$" in result.output
    assert not any(tmp_path.iterdir())  # nothing written, nothing asked


@pytest.mark.slow
def test_estimate_scales_an_earlier_runs_measured_counts(tmp_path, tiny):
    """After a run, the estimate for its own config is the samples it asked; for larger K's it scales."""
    from autoif.stages.responses import ResponsesStage
    from autoif.stages.seeds import SeedsStage

    cfg = config(tmp_path, tiny, seeds={"limit": 2, "builtin_library": "off"}, responses={"k": 2, "max_tokens": 16})
    # The real seeds stage, then the real responses stage over them as queries stand-in.
    funnel = Pipeline(cfg, stages=[SeedsStage(), _AsQueries(), ResponsesStage()]).run()
    asked = funnel["stages"]["responses"]["llm"]["misses"] + funnel["stages"]["responses"]["llm"]["hits"]
    rows = {row.stage: row for row in estimate(cfg)}
    assert rows["responses"].measured and rows["responses"].samples == pytest.approx(asked)
    bigger = config(tmp_path, tiny, seeds={"limit": 2, "builtin_library": "off"}, responses={"k": 6, "max_tokens": 16})
    assert {r.stage: r for r in estimate(bigger)}["responses"].samples == pytest.approx(3 * asked)


class _AsQueries(Stage):
    """Each seed as a query record for the responses stage (the real queries stage needs the chain)."""

    name = "queries"
    output = "queries.jsonl"
    input = "seeds"
    output_type = QueryRecord
    sharded = False

    def run(self, records, ctx):
        for r in records:
            yield QueryRecord(
                id=f"q-{r.id}", instruction_id=r.id, instruction=r.text, query="Hi.", prompt=f"{r.text} Hi."
            )


@pytest.mark.slow
def test_a_reached_budget_exits_0_from_the_cli_with_the_reason_in_the_funnel(tmp_path, tiny):
    """`autoif run` stopped by llm.max_cost is not a failure: exit 0, the reason recorded, resumable."""
    out = tmp_path / "out"
    sets = [
        "seeds.limit=2",
        "seeds.builtin_library=off",
        "augment.k=1",
        "llm.backend=local",
        f"llm.model={tiny}",
        "llm.device=cpu",
        "llm.max_cost=1.0",  # $1 buys one prompt token at these prices: not one request
    ]
    prices = tmp_path / "config.yaml"
    prices.write_text(json.dumps({"prices": {tiny: {"input_per_mtok": 1e6, "output_per_mtok": 5e5}}}))
    args = ["run", "-c", str(prices), "-o", str(out), "--until", "augment"]
    result = CliRunner().invoke(cli, [*args, *(a for s in sets for a in ("--set", s))])
    assert result.exit_code == 0, result.output
    assert "STOPPED in augment: budget" in " ".join(result.output.split())  # the funnel table says so
    stopped = json.loads((out / "funnel.json").read_text())["stopped"]
    assert stopped["reason"] == "budget" and stopped["stage"] == "augment" and stopped["spent"] == 0
    assert not (out / "instructions.jsonl").exists()  # augment's output waits for a rerun with more budget
