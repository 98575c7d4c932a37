"""Whether a selection benchmark ranks configurations as the measure does (`autoif eval agreement`).

Settings are chosen on the dev set and measured on IFEval: the dev set is a proxy only if the
configurations it ranks higher also score higher on IFEval. Over every configuration tried (each a
directory of `autoif eval` results, or a recipe's OUT/eval/<model>), this reads one metric of the
proxy (default `dev:prompt_pass`) and one of the target (default `ifeval:prompt_loose`) and reports
each configuration's value and rank (1: best; ties share the average rank) and Spearman's rank
correlation with its two-sided p (scipy.stats.spearmanr: the maintained implementation, ties
handled; None where one side ranks every configuration equal, the correlation being undefined).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import AutoifError, require
from .results import load_results
from .stats import decoding_path

# Spearman's correlation of two points is always +-1: it says something from three on.
MIN_CONFIGURATIONS = 3


def parse_measure(text: str) -> tuple[str, str]:
    """ "bench:metric" -> (bench, metric)."""
    bench, sep, metric = text.partition(":")
    if not sep or not bench or not metric:
        raise AutoifError(f"'{text}' is not BENCHMARK:METRIC (e.g. ifeval:prompt_loose)")
    return bench, metric


def results_in(run_dir: str | Path, bench: str, decoding: str | None = None) -> Path:
    """`bench`'s results file in a configuration's directory: DIR/<decoding>/ (a recipe's layout)
    when a decoding is named and its file exists there, else DIR/."""
    plain = Path(run_dir).expanduser() / f"{bench}_results.json"
    decoded = decoding_path(plain, decoding) if decoding else None
    return decoded if decoded is not None and decoded.is_file() else plain


def metric_of(path: Path, bench: str, metric: str) -> float:
    results = load_results(path)
    if results["benchmark"] != bench:
        raise AutoifError(f"{path} holds {results['benchmark']} results, not {bench}'s")
    value = results["metrics"].get(metric)
    if not isinstance(value, (int, float)):
        raise AutoifError(f"{path} has no metric '{metric}' (it has {', '.join(results['metrics'])})")
    return float(value)


def rank_agreement(
    configurations: dict[str, tuple[Path, Path]], proxy: tuple[str, str], target: tuple[str, str]
) -> dict[str, Any]:
    """Spearman's rank correlation between the proxy's and the target's metric over configurations
    ({name: (proxy results file, target results file)}), with each configuration's values and ranks."""
    stats = require("scipy.stats", "eval", "autoif eval agreement (Spearman's rank correlation)")
    if len(configurations) < MIN_CONFIGURATIONS:
        raise AutoifError(
            f"rank agreement needs at least {MIN_CONFIGURATIONS} configurations (got {len(configurations)})"
        )
    names = list(configurations)
    proxy_values = [metric_of(configurations[n][0], *proxy) for n in names]
    target_values = [metric_of(configurations[n][1], *target) for n in names]
    # Rank 1 is the best (highest) value; ties share their average rank, as Spearman's rho counts them.
    proxy_ranks = stats.rankdata([-v for v in proxy_values])
    target_ranks = stats.rankdata([-v for v in target_values])
    constant = len(set(proxy_values)) == 1 or len(set(target_values)) == 1
    rho: float | None = None
    p: float | None = None
    if not constant:
        result = stats.spearmanr(proxy_values, target_values)
        rho, p = float(result.statistic), float(result.pvalue)
    return {
        "proxy": {"benchmark": proxy[0], "metric": proxy[1]},
        "target": {"benchmark": target[0], "metric": target[1]},
        "configurations": [
            {
                "name": n,
                "proxy": pv,
                "target": tv,
                "proxy_rank": float(pr),
                "target_rank": float(tr),
                "proxy_results": str(configurations[n][0]),
                "target_results": str(configurations[n][1]),
            }
            for n, pv, tv, pr, tr in zip(names, proxy_values, target_values, proxy_ranks, target_ranks)
        ],
        "spearman": {"rho": rho, "p": p, "n": len(names)},
    }


def agreement_table(report: dict):
    """A rich table of `rank_agreement`: each configuration's values and ranks, rho in the caption."""
    from rich import box
    from rich.table import Table

    proxy, target = report["proxy"], report["target"]
    p_name, t_name = f"{proxy['benchmark']} {proxy['metric']}", f"{target['benchmark']} {target['metric']}"
    table = Table(title=f"Rank agreement: {p_name} vs {t_name}", title_justify="left", box=box.SIMPLE_HEAD)
    table.add_column("configuration")
    for header in (f"{p_name} %", "rank", f"{t_name} %", "rank"):
        table.add_column(header, justify="right", no_wrap=True)
    for c in report["configurations"]:
        table.add_row(
            c["name"],
            f"{100 * c['proxy']:.2f}",
            f"{c['proxy_rank']:g}",
            f"{100 * c['target']:.2f}",
            f"{c['target_rank']:g}",
        )
    s = report["spearman"]
    table.caption = (
        f"Spearman's rho {s['rho']:+.3f}, p {s['p']:.3g} over {s['n']} configurations (rank 1: best)"
        if s["rho"] is not None
        else f"Spearman's rho undefined: one side ranks all {s['n']} configurations equal"
    )
    return table
