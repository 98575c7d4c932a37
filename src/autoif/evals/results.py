"""A benchmark run's results: `<name>_results.json` with `<name>_responses.jsonl`, reading them back,
the table of one run, and the tables of a paired comparison of two (`stats.compare_runs`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from .. import __version__
from ..errors import AutoifError
from ..jsonl import atomic_write_text, read_json, write_jsonl
from .base import Benchmark, EvalConfig, Item, Responses, Scores


def write_results(
    out_dir: Path, name: str, results: dict, items: list[Item], answered: Responses, scores: Scores
) -> None:
    """`<out>/<name>_results.json` and `<out>/<name>_responses.jsonl` (re-scorable with --responses)."""
    rows = []
    for i, (item, response) in enumerate(zip(items, answered.texts)):
        row = {"id": item.id, "prompt": item.prompt, "response": response}
        if answered.generation is not None:
            completion = answered.generation[i]
            row["finish_reason"] = completion.finish_reason
            if completion.error:
                row["error"] = completion.error
        row.update(answered.per_item[i] if answered.per_item else {})
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
    results = read_json(path)
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


def points(value: float) -> str:
    return f"{100 * value:+.2f}"


def paired_test(metric: dict) -> dict | None:
    """A metric's exact paired test: McNemar's (0/1 verdicts) or the sign test (means over decodings)."""
    return metric.get("mcnemar") or metric.get("sign_test")


def mcnemar_text(test: dict | None) -> str:
    """A McNemar (or sign) test of `stats.compare_runs` as "p (B only/A only)"; empty for a metric without one."""
    return f"{test['p']:.3g} ({test['b_only']}/{test['a_only']})" if test else ""


# Families shown at each end of the "moved most" table (all of them when there are at most twice this).
MOVED_MOST = 5


def _metrics_table(title: str, report: dict, test_header: str, caption: str):
    """Per metric A, B, B - A with its 95% interval and the paired test; a difference is coloured only
    when its interval excludes zero."""
    from rich import box
    from rich.table import Table

    # No vertical rules and no wrapped numbers: in 80 columns only a long metric label wraps.
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("metric")
    for header in ("A %", "B %", "B-A", f"{100 * report['bootstrap']['confidence']:.0f}% CI", test_header):
        table.add_column(header, justify="right", no_wrap=True)
    for m in report["metrics"].values():
        low, high = m["ci"]
        colour = "green" if low > 0 else "red" if high < 0 else None
        delta = f"[{colour}]{points(m['delta'])}[/{colour}]" if colour else points(m["delta"])
        interval = f"[{points(low)}, {points(high)}]"
        table.add_row(m["label"], percent(m["a"]), percent(m["b"]), delta, interval, mcnemar_text(paired_test(m)))
    table.caption = caption
    return table


def _families_table(report: dict, title: str):
    """The instruction families that moved most (first outcome mode), largest gain first."""
    from rich import box
    from rich.table import Table

    mode = report["outcome_modes"][0]
    families = report["families"]
    moved = Table(title=f"{title} ({mode} rate)", title_justify="left", box=box.SIMPLE_HEAD)
    moved.add_column("family", no_wrap=True)
    for header in ("n", "A %", "B %", "B-A"):
        moved.add_column(header, justify="right", no_wrap=True)
    shown = [families] if len(families) <= 2 * MOVED_MOST else [families[:MOVED_MOST], families[-MOVED_MOST:]]
    for part in shown:
        for f in part:
            r = f[mode]
            moved.add_row(f["name"], str(f["n"]), percent(r["a"]), percent(r["b"]), points(r["delta"]))
        moved.add_section()
    if len(shown) > 1:
        moved.caption = f"{len(families) - 2 * MOVED_MOST} families in between; every instruction in --json"
    return moved


def _notes(report: dict) -> list[str]:
    boot, pairing = report["bootstrap"], report["pairing"]
    notes = [
        f"B-A and its interval in points (paired bootstrap over prompts, {boot['resamples']:,} resamples, "
        f"seed {boot['seed']}); McNemar: exact p (prompts only B passes/only A passes); paired by {pairing['by']}"
    ]
    if pairing["only_a"] or pairing["only_b"]:
        notes.append(f"unpaired: {pairing['only_a']} only in A, {pairing['only_b']} only in B")
    if pairing["excluded"]:
        notes.append("not scored in both: " + ", ".join(f"{k} {v}" for k, v in pairing["excluded"].items()))
    return notes + [f"warning: {w}" for w in report["warnings"]]


def compare_table(report: dict):
    """Rich tables of a paired comparison (`stats.compare_runs`): per metric A, B, B - A with its 95%
    interval and McNemar's p; then the instruction families that moved most."""
    from rich.console import Group

    a, b, pairing = report["a"], report["b"], report["pairing"]
    title = f"{report['title']}: A = {a['name']}, B = {b['name']} ({pairing['paired']} paired prompts)"
    table = _metrics_table(title, report, "McNemar p", "; ".join(_notes(report)))
    return Group(table, _families_table(report, "Instruction families that moved most"))


def decodings_table(report: dict):
    """Rich tables of a comparison over several decodings (`stats.compare_decodings`): each decoding's
    metrics (the first one's instruction families too), then the per-prompt average over them."""
    from rich.console import Group

    parts = []
    for n, (decoding, one) in enumerate(report["per_decoding"].items()):
        title = (
            f"{report['title']}, {decoding}: A = {report['a']}, B = {report['b']} "
            f"({one['pairing']['paired']} paired prompts)"
        )
        parts.append(_metrics_table(title, one, "McNemar p", "; ".join(_notes(one))))
        if n == 0:
            parts.append(_families_table(one, f"Instruction families that moved most, {decoding}"))
    average = report["average"]
    shown = ", ".join(report["decodings"])
    left_out = average["pairing"]["left_out"]
    caption = (
        f"a prompt's score is the mean of its verdicts over {shown}; B-A and its interval in points (paired "
        f"bootstrap over prompts); sign test: exact p (prompts B scores higher/A scores higher)"
        + (f"; {left_out} prompts not scored in every decoding left out" if left_out else "")
    )
    title = (
        f"{report['title']}, mean over {shown}: A = {report['a']}, B = {report['b']} "
        f"({average['pairing']['paired']} paired prompts)"
    )
    parts.append(_metrics_table(title, average, "sign test p", caption))
    return Group(*parts)
