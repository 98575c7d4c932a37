"""A benchmark run's results: `<name>_results.json` with `<name>_responses.jsonl`, reading them back,
and the tables of one run or two runs side by side."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import AutoifError
from ..jsonl import atomic_write_text, write_jsonl
from .base import Benchmark, EvalConfig, Item, Scores


def write_results(
    out_dir: Path,
    name: str,
    results: dict,
    items: list[Item],
    responses: list[str],
    scores: Scores,
    generation: list[Any] | None,
) -> None:
    """`<out>/<name>_results.json` and `<out>/<name>_responses.jsonl` (re-scorable with --responses)."""
    rows = []
    for i, (item, response) in enumerate(zip(items, responses)):
        row = {"id": item.id, "prompt": item.prompt, "response": response}
        if generation is not None:
            completion = generation[i]
            row["finish_reason"] = completion.finish_reason
            if completion.error:
                row["error"] = completion.error
        row.update(scores.per_item[i] if scores.per_item else {})
        rows.append(row)
    write_jsonl(out_dir / f"{name}_responses.jsonl", rows)
    atomic_write_text(out_dir / f"{name}_results.json", json.dumps(results, indent=2, ensure_ascii=False) + "\n")


def results_dict(
    benchmark: Benchmark,
    scores: Scores,
    *,
    source: str,
    model: dict,
    limit: int | None,
    seed: int,
    settings: EvalConfig,
    responses_file: str | None,
) -> dict:
    return {
        "benchmark": benchmark.name,
        "title": benchmark.title,
        "metrics": scores.metrics,
        "metric_labels": benchmark.metric_labels,
        "counts": scores.counts,
        "model": model,
        "responses_file": responses_file,
        "data": source,
        "limit": limit,
        "seed": seed,
        "settings": settings.model_dump(mode="json"),
        "details": scores.details,
        "autoif_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def load_results(path: str | Path) -> dict:
    path = Path(path).expanduser()
    if not path.is_file():
        raise AutoifError(f"no such results file: {path}")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AutoifError(f"{path} is not a JSON file: {exc}") from None
    if not isinstance(results, dict) or not isinstance(results.get("metrics"), dict) or "benchmark" not in results:
        raise AutoifError(f"{path} is not an autoif eval results file (no 'benchmark'/'metrics')")
    return results


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def results_table(results: dict):
    """A rich table of one run's metrics (percent) and counts."""
    from rich.table import Table

    who = results.get("responses_file") or " ".join(str(v) for v in results["model"].values() if v)
    table = Table(title=f"{results['title']}: {who}", title_justify="left")
    table.add_column("metric", no_wrap=True)
    table.add_column("%", justify="right")
    labels = results.get("metric_labels") or {}
    for key, value in results["metrics"].items():
        table.add_row(labels.get(key, key), percent(value))
    table.caption = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in results["counts"].items())
    return table


def compare_table(a: dict, b: dict, a_name: str, b_name: str):
    """Metrics of two runs of the same benchmark side by side, with B - A in points."""
    from rich.table import Table

    if a["benchmark"] != b["benchmark"]:
        raise AutoifError(f"cannot compare a {a['benchmark']} run with a {b['benchmark']} run")
    table = Table(title=f"{a['title']}: {a_name} vs {b_name}", title_justify="left")
    table.add_column("metric", no_wrap=True)
    table.add_column(f"A % ({a_name})", justify="right")
    table.add_column(f"B % ({b_name})", justify="right")
    table.add_column("B - A (points)", justify="right")
    labels = {**(b.get("metric_labels") or {}), **(a.get("metric_labels") or {})}
    keys = list(a["metrics"]) + [k for k in b["metrics"] if k not in a["metrics"]]
    for key in keys:
        va, vb = a["metrics"].get(key), b["metrics"].get(key)
        if va is None or vb is None:
            delta = "-"
        else:
            d = 100 * (vb - va)
            delta = f"[green]{d:+.2f}[/green]" if d > 0 else f"[red]{d:+.2f}[/red]" if d < 0 else "0.00"
        table.add_row(labels.get(key, key), percent(va), percent(vb), delta)
    notes = [f"{name}: {r['counts']}" for name, r in ((a_name, a), (b_name, b))]
    if a.get("data") != b.get("data") or a.get("limit") != b.get("limit"):
        notes.append("warning: the runs used different data or subsets")
    table.caption = "; ".join(notes)
    return table
