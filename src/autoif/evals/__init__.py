"""Benchmarks: `autoif eval ifeval|ifbench|followbench|dev|contamination|compare`.

Each benchmark sits in a registry from name to module (imported when chosen, so `autoif --help` and
`autoif eval ifeval` never import the FollowBench judge or the checkers of another benchmark).

- `run_benchmark(name, config, data, responses, limit, out_dir)`: generate (or read) one response
  per prompt, score, write `<out>/<name>_results.json` and `<out>/<name>_responses.jsonl`, print a
  table, return the results.
- `compare(a_path, b_path)`: tables of two runs of one benchmark, paired prompt by prompt: B - A per
  metric with a bootstrap interval and McNemar's p, and the instruction families that moved
  (`stats.compare_runs` gives the numbers as a dict).
- `contamination(run_dir)`: 13-gram overlap between a run's training prompts and the benchmarks'
  prompts; `warn_on_contamination(run_dir)` is what `autoif run` calls at its end.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import AutoifError
from ..llm.base import NOT_CACHED
from ..runlock import output_dir
from .base import EvalConfig, EvalContext, Responses
from .benchmarks import BENCHMARKS, benchmark
from .contamination import contamination, warn_on_contamination
from .data import load_records, read_responses, subset
from .results import compare_table, results_dict, results_table, write_results

log = logging.getLogger("autoif.evals")


def run_benchmark(
    name: str,
    config,
    data: str | None,
    responses: str | None,
    limit: int | None,
    out_dir: Path,
    settings: EvalConfig | None = None,
    *,
    show: bool = True,
) -> dict:
    """Evaluate the model of `config.llm` (or the responses in the file `responses`) on a benchmark.

    data: None (packaged copy, else the hub), a local file/directory, or a hub dataset id. limit: a
    seeded (config.seed) subset of that many prompts. settings: generation and judge settings.
    """
    bench = benchmark(name)
    settings = settings or EvalConfig()
    bench.check_settings(settings)
    out_dir = output_dir(Path(out_dir).expanduser(), "--out")  # before the work: a bad --out fails at once
    records, source = load_records(bench, data)
    items = subset(bench.evaluated_items(records, source, settings), limit, config.seed)
    if not items:
        raise AutoifError(f"{bench.title}: {source} holds no prompts")
    context = EvalContext(config, settings)
    try:
        if responses is not None:
            answered = Responses(read_responses(responses, items))
            model = {"responses_file": str(responses)}
        else:
            answered = bench.respond(items, context)
            model = context.model_info()
        texts, generation = answered.texts, answered.generation
        missing = sum(1 for c in generation or () if c.error == NOT_CACHED)
        if missing:  # a replay that is not one: no results from answers that were never generated
            raise AutoifError(f"{bench.title}: {missing} of {len(texts)} answers are {NOT_CACHED}")
        scores = bench.score(items, texts, context)
    finally:
        context.close()
    results = results_dict(
        bench,
        scores,
        source=source,
        model=model,
        limit=limit,
        seed=config.seed,
        settings=settings,
        responses_file=str(responses) if responses else None,
    )
    if generation is not None:
        results["counts"]["generation_errors"] = sum(1 for c in generation if c.error)
        results["counts"]["truncated"] = sum(1 for c in generation if c.finish_reason == "length")
    write_results(out_dir, name, results, items, answered, scores)
    if show:
        from rich.console import Console

        Console().print(results_table(results))
    log.info("wrote %s and %s", out_dir / f"{name}_results.json", out_dir / f"{name}_responses.jsonl")
    return results


def compare(a_path: str | Path, b_path: str | Path, *, resamples: int = 10_000, seed: int = 0):
    """Rich tables of two runs of one benchmark (results files, or directories holding one), paired
    prompt by prompt (`stats.compare_runs`)."""
    from .stats import compare_runs

    return compare_table(compare_runs(a_path, b_path, resamples=resamples, seed=seed))


__all__ = [
    "BENCHMARKS",
    "EvalConfig",
    "benchmark",
    "compare",
    "contamination",
    "run_benchmark",
    "warn_on_contamination",
]
