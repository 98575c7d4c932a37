"""Paired statistics of two runs of one benchmark (`autoif eval compare A B`).

Both runs' prompts are paired (by id, else by prompt text) from their `<name>_responses.jsonl`, the
per-prompt scores each benchmark writes beside its responses (`Benchmark.prompt_scores`). Over the
pairs, for every metric: A, B, B - A and a paired bootstrap 95% interval of B - A (prompts are
resampled, both runs' metric recomputed on the same resample; percentile interval); for the
prompt-level metrics also an exact McNemar test (a two-sided binomial test of the discordant pairs);
and the per-instruction and per-family (the part of an instruction id before ':') follow rates of
A and B. The answer is a JSON-serialisable dict; `results.compare_table` renders it.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import AutoifError, require
from ..jsonl import read_jsonl
from .base import Benchmark, PromptScores
from .benchmarks import benchmark
from .results import load_results

log = logging.getLogger("autoif.evals")

CONFIDENCE = 0.95
# Directory levels `run_label` climbs to find where two runs' paths differ (model, then decoding).
LABEL_LEVELS = 2
# Resamples drawn at once: bounds memory (CHUNK x prompts counts) whatever `resamples` is.
CHUNK = 2000


@dataclass
class Run:
    """One side of a comparison: its results file, the dict in it, and its responses rows."""

    results_path: Path
    responses_path: Path
    results: dict
    rows: list[dict]


def results_file(path: str | Path) -> Path:
    """`path` itself, or the one `*_results.json` in the directory `path`."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return path
    found = sorted(path.glob("*_results.json"))
    if len(found) != 1:
        held = ", ".join(p.name for p in found) if found else "none"
        raise AutoifError(f"{path} must hold exactly one *_results.json to compare (it holds {held}): name the file")
    return found[0]


def load_run(path: str | Path) -> Run:
    results_path = results_file(path)
    results = load_results(results_path)
    name = results_path.name
    stem = name[: -len("_results.json")] if name.endswith("_results.json") else str(results["benchmark"])
    responses_path = results_path.with_name(f"{stem}_responses.jsonl")
    if not responses_path.is_file():
        raise AutoifError(
            f"compare needs the per-prompt scores in {responses_path} (written beside {name} by autoif eval)"
        )
    return Run(results_path, responses_path, results, unique_rows(read_jsonl(responses_path), responses_path))


def keys(run: Run, by: str) -> list[str] | None:
    """Each row's pairing key (its "id" or its "prompt"), or None when some row lacks one. Two rows
    with one key are an error naming them (`load_run` already counted exact repeats once)."""
    found = [row.get(by) for row in run.rows]
    if not all(isinstance(k, (str, int)) and not isinstance(k, bool) for k in found):
        return None
    texts = [str(k) for k in found]
    first: dict[str, int] = {}
    for n, key in enumerate(texts, 1):
        if key in first:
            shown = key if len(key) <= 60 else key[:57] + "..."
            raise AutoifError(
                f"{run.responses_path}: records {first[key]} and {n} have the same {by} ({shown!r}) but "
                "differ: keep one answer per prompt to compare"
            )
        first[key] = n
    return texts


def pair_keys(a: Run, b: Run) -> tuple[str, list[str], list[str]]:
    """How the runs' prompts pair ("id", else HumanEval's "task_id", which its published rows keep in
    place of the id, else "prompt" when those are missing or share nothing) and each run's keys."""
    for by in ("id", "task_id", "prompt"):
        ka, kb = keys(a, by), keys(b, by)
        if ka is not None and kb is not None and not set(ka).isdisjoint(kb):
            return by, ka, kb
    raise AutoifError(f"{a.responses_path} and {b.responses_path} share no prompt (by id, task_id or prompt text)")


def unique_rows(rows: list[dict], path: Path) -> list[dict]:
    """`rows` with lines that repeat an earlier line exactly counted once (a file concatenated
    with itself), with a warning saying how many."""
    seen: set[str] = set()
    kept = []
    for row in rows:
        text = json.dumps(row, sort_keys=True, ensure_ascii=False)
        if text not in seen:
            seen.add(text)
            kept.append(row)
    if len(kept) < len(rows):
        log.warning("%s: %d record(s) repeat an earlier one exactly; each is counted once", path, len(rows) - len(kept))
    return kept


def scored_prompts(bench: Benchmark, run: Run, row_keys: list[str]) -> dict[str, PromptScores | str]:
    """{key: the prompt's scores, or the reason it has none} of a run."""
    scored: dict[str, PromptScores | str] = {}
    for n, (key, row) in enumerate(zip(row_keys, run.rows), 1):
        try:
            scored[key] = bench.prompt_scores(row)
        except (KeyError, TypeError, ValueError) as exc:
            raise AutoifError(
                f"{run.responses_path} record {n}: no per-prompt {bench.title} scores ({type(exc).__name__}: {exc}); "
                "rescore the responses with autoif eval --responses"
            ) from None
    return scored


def run_label(a_path: str | Path, b_path: str | Path) -> tuple[str, str]:
    """Short names of the two runs: their directories' names where those differ, else those of the
    directories above (`eval/base/fp32` and `eval/dpo/fp32` are "base" and "dpo"), else the paths."""
    a, b = Path(a_path), Path(b_path)
    a_dir, b_dir = (a if a.is_dir() else a.parent), (b if b.is_dir() else b.parent)
    for _ in range(LABEL_LEVELS):
        if not a_dir.name or not b_dir.name:
            break
        if a_dir.name != b_dir.name:
            return a_dir.name, b_dir.name
        a_dir, b_dir = a_dir.parent, b_dir.parent
    return str(a_path), str(b_path)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den is 0 (a resample without any prompt the ratio counts)."""
    return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _metric(sums: np.ndarray, columns: dict[str, int], terms: tuple[tuple[str, str], ...]) -> np.ndarray:
    """The metric per row of `sums` (column sums, one row per resample): the mean of its terms' ratios
    over the terms with a non-zero denominator (FollowBench averages the levels it has)."""
    ratios = np.stack([_ratio(sums[..., columns[n]], sums[..., columns[d]]) for n, d in terms], axis=-1)
    valid = ~np.isnan(ratios)
    counted = valid.sum(axis=-1)
    total = np.where(valid, ratios, 0.0).sum(axis=-1)
    return np.where(counted > 0, total / np.maximum(counted, 1), np.nan)


def bootstrap_sums(a: np.ndarray, b: np.ndarray, resamples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Column sums of both runs (prompts x columns) over `resamples` resamples of the prompts.

    numpy rather than scipy.stats.bootstrap: every metric is a ratio of column sums (or a mean of such
    ratios), so one draw of resample weights (how often each prompt is drawn) and one matrix product
    give every metric of both runs on the same resamples; scipy's bootstrap takes one statistic per
    call and redraws for each, and its default BCa interval is undefined when the runs agree on every
    prompt (the interval is then [0, 0]).
    """
    rng = np.random.default_rng(seed)
    n, k = a.shape
    both = np.hstack([a, b])
    out = []
    for start in range(0, resamples, CHUNK):
        size = min(CHUNK, resamples - start)
        drawn = rng.integers(0, n, size=(size, n))
        # One bincount over all rows of the chunk: row r's draws are offset by r * n.
        offsets = (drawn + n * np.arange(size)[:, None]).ravel()
        weights = np.bincount(offsets, minlength=size * n).reshape(size, n).astype(np.float64)
        out.append(weights @ both)
    sums = np.concatenate(out)
    return sums[:, :k], sums[:, k:]


def sign_test(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Exact sign test of paired scores: a two-sided binomial test (p = 1/2) of the prompts B scores
    higher against those A scores higher. On 0/1 outcomes this is McNemar's exact test (the prompts
    only B passes against those only A passes); on a prompt's mean over decodings, the sign test."""
    stats = require("scipy.stats", "eval", "autoif eval compare (McNemar test)")
    b_only, a_only = int(np.sum(b > a)), int(np.sum(a > b))
    discordant = b_only + a_only
    p = float(stats.binomtest(b_only, discordant, 0.5).pvalue) if discordant else 1.0
    return {"b_only": b_only, "a_only": a_only, "p": p}


def group_rates(
    pairs: list[tuple[PromptScores, PromptScores]], modes: tuple[str, ...], family: bool
) -> list[dict[str, Any]]:
    """A's and B's rate of each instruction (or family) per mode over the pairs, sorted by B - A of the
    first mode (largest gain first)."""
    totals: dict[str, dict[str, list[float]]] = defaultdict(lambda: {m: [0.0, 0.0] for m in modes})
    counts: dict[str, int] = defaultdict(int)
    for sa, sb in pairs:
        for (name, oa), (_, ob) in zip(sa.outcomes, sb.outcomes):
            key = name.split(":")[0] if family else name
            counts[key] += 1
            for m in modes:
                totals[key][m][0] += oa[m]
                totals[key][m][1] += ob[m]
    rows = []
    for key, n in counts.items():
        row: dict[str, Any] = {"name": key, "n": n}
        for m in modes:
            ra, rb = totals[key][m][0] / n, totals[key][m][1] / n
            row[m] = {"a": ra, "b": rb, "delta": rb - ra}
        rows.append(row)
    rows.sort(key=lambda r: (-r[modes[0]]["delta"], r["name"]))
    return rows


@dataclass
class Pairing:
    """Two runs of one benchmark paired prompt by prompt: the pairs scored in both (in A's order, by
    their keys) and what was left out."""

    bench: Benchmark
    a: Run
    b: Run
    by: str
    pairs: dict[str, tuple[PromptScores, PromptScores]]
    only_a: int
    only_b: int
    excluded: dict[str, int]
    reworded: int

    def summary(self) -> dict[str, Any]:
        return {
            "by": self.by,
            "paired": len(self.pairs),
            "only_a": self.only_a,
            "only_b": self.only_b,
            "excluded": dict(self.excluded),
        }


def pair_runs(a_path: str | Path, b_path: str | Path) -> Pairing:
    """Load two runs of one benchmark and pair their prompts (by id, else by prompt text); a prompt
    scored in only one of them (an unchecked IFBench prompt, an unjudged FollowBench answer) is left
    out with its reason."""
    a, b = load_run(a_path), load_run(b_path)
    name_a, name_b = a.results["benchmark"], b.results["benchmark"]
    if name_a != name_b:
        raise AutoifError(f"cannot compare a {name_a} run with a {name_b} run")
    bench = benchmark(name_a)
    by, keys_a, keys_b = pair_keys(a, b)
    scored_a, scored_b = scored_prompts(bench, a, keys_a), scored_prompts(bench, b, keys_b)
    text_a = {k: row.get("prompt") for k, row in zip(keys_a, a.rows)}
    text_b = {k: row.get("prompt") for k, row in zip(keys_b, b.rows)}
    shared = [k for k in keys_a if k in scored_b]
    excluded: dict[str, int] = defaultdict(int)
    pairs: dict[str, tuple[PromptScores, PromptScores]] = {}
    for key in shared:
        sa, sb = scored_a[key], scored_b[key]
        if isinstance(sa, str) or isinstance(sb, str):
            excluded[sa if isinstance(sa, str) else str(sb)] += 1
        elif sa.task != sb.task:
            excluded["different instructions"] += 1
        else:
            pairs[key] = (sa, sb)
    if not pairs:
        reasons = ", ".join(f"{v} {k}" for k, v in excluded.items())
        raise AutoifError(
            f"{a.responses_path} and {b.responses_path} have no prompt scored in both runs (paired by {by}: {reasons})"
        )
    # A published row may carry no prompt text (HumanEval's: task_id and completion): nothing to tell.
    reworded = sum(None not in (text_a[k], text_b[k]) and text_a[k] != text_b[k] for k in shared)
    return Pairing(bench, a, b, by, pairs, len(keys_a) - len(shared), len(keys_b) - len(shared), excluded, reworded)


def paired_metrics(
    bench: Benchmark,
    pairs: list[tuple[PromptScores, PromptScores]],
    labels: dict[str, str],
    *,
    resamples: int,
    seed: int,
    test: str = "mcnemar",
) -> dict[str, dict[str, Any]]:
    """Per metric over the pairs: A, B, B - A, its paired bootstrap interval and, for prompt-level
    metrics, the exact sign test (`sign_test`) stored under `test`: "mcnemar" where the prompts'
    scores are 0/1, "sign_test" where they are means over decodings."""
    names = sorted({c for sa, _ in pairs for c in sa.columns})
    columns = {c: i for i, c in enumerate(names)}
    xa = np.array([[sa.columns[c] for c in names] for sa, _ in pairs], dtype=np.float64)
    xb = np.array([[sb.columns[c] for c in names] for _, sb in pairs], dtype=np.float64)
    boot_a, boot_b = bootstrap_sums(xa, xb, resamples, seed)
    alpha = (1 - CONFIDENCE) / 2
    metrics: dict[str, dict[str, Any]] = {}
    for metric, terms in bench.paired_metrics.items():
        va, vb = _metric(xa.sum(axis=0), columns, terms), _metric(xb.sum(axis=0), columns, terms)
        if np.isnan(va) or np.isnan(vb):
            continue  # no paired prompt the metric counts (a FollowBench level nobody reached)
        # The prompts the metric counts (a FollowBench level's answers; every prompt elsewhere).
        counted = np.any(xa[:, [columns[d] for _, d in terms]] > 0, axis=1)
        deltas = _metric(boot_b, columns, terms) - _metric(boot_a, columns, terms)
        low, high = np.nanquantile(deltas, [alpha, 1 - alpha])
        entry: dict[str, Any] = {
            "label": labels.get(metric, metric),
            "a": float(va),
            "b": float(vb),
            "delta": float(vb - va),
            "ci": [float(low), float(high)],
            "n": int(counted.sum()),
        }
        if metric in bench.prompt_level_metrics:
            num = columns[terms[0][0]]
            entry[test] = sign_test(xa[counted, num], xb[counted, num])
        metrics[metric] = entry
    return metrics


def _labels(pairing: Pairing) -> dict[str, str]:
    return {**(pairing.b.results.get("metric_labels") or {}), **(pairing.a.results.get("metric_labels") or {})}


def _side(name: str, run: Run) -> dict[str, Any]:
    return {
        "name": name,
        "results": str(run.results_path),
        "responses": str(run.responses_path),
        "counts": run.results["counts"],
    }


def _check_resamples(resamples: int) -> None:
    if resamples < 1:
        raise AutoifError(f"--resamples must be at least 1, got {resamples}")


def compare_runs(a_path: str | Path, b_path: str | Path, *, resamples: int = 10_000, seed: int = 0) -> dict:
    """Paired comparison of two runs of one benchmark (each a results file or a directory holding one):
    per metric A, B, B - A, a bootstrap 95% interval of B - A and, for prompt-level metrics, McNemar's
    exact p; per instruction and per family, A's and B's rates. See the module docstring."""
    _check_resamples(resamples)
    return compare_pairing(pair_runs(a_path, b_path), run_label(a_path, b_path), resamples=resamples, seed=seed)


def compare_pairing(pairing: Pairing, names: tuple[str, str], *, resamples: int, seed: int) -> dict:
    """`compare_runs`' report of runs already paired (`names`: what the tables call A and B)."""
    a, b, bench = pairing.a, pairing.b, pairing.bench
    pairs = list(pairing.pairs.values())
    metrics = paired_metrics(bench, pairs, _labels(pairing), resamples=resamples, seed=seed)
    warnings = []
    if a.results.get("data") != b.results.get("data") or a.results.get("limit") != b.results.get("limit"):
        warnings.append("the runs used different data or subsets")
    if pairing.reworded:
        warnings.append(f"{pairing.reworded} prompts paired by {pairing.by} have different text")
    modes = bench.outcome_modes
    return {
        "benchmark": bench.name,
        "title": bench.title,
        "a": _side(names[0], a),
        "b": _side(names[1], b),
        "pairing": pairing.summary(),
        "bootstrap": {"resamples": resamples, "seed": seed, "confidence": CONFIDENCE, "method": "paired percentile"},
        "metrics": metrics,
        "outcome_modes": list(modes),
        "instructions": group_rates(pairs, modes, family=False),
        "families": group_rates(pairs, modes, family=True),
        "warnings": warnings,
    }


# ------------------------------------------------------------------------------ several decodings
def decoding_path(path: str | Path, decoding: str) -> Path:
    """Where a run's results of one decoding are: the decoding is a directory level, so
    `DIR/NAME_results.json` becomes `DIR/<decoding>/NAME_results.json` and a directory `DIR` becomes
    `DIR/<decoding>` (the layout of a recipe's `OUT/eval/<model>/<decoding>/`)."""
    path = Path(path).expanduser()
    return path.parent / decoding / path.name if path.suffix == ".json" else path / decoding


def mean_scores(scores: list[PromptScores]) -> PromptScores:
    """One prompt's scores averaged over decodings: every column and every instruction's outcome is
    the mean of its decodings' (a prompt passing in one of two decodings scores 0.5)."""
    columns = {c: float(np.mean([s.columns[c] for s in scores])) for c in scores[0].columns}
    outcomes = [
        (name, {m: float(np.mean([s.outcomes[i][1][m] for s in scores])) for m in modes})
        for i, (name, modes) in enumerate(scores[0].outcomes)
    ]
    return PromptScores(task=scores[0].task, columns=columns, outcomes=outcomes)


def compare_decodings(
    a_paths: list[str | Path],
    b_paths: list[str | Path],
    decodings: list[str],
    *,
    names: tuple[str, str] | None = None,
    resamples: int = 10_000,
    seed: int = 0,
) -> dict:
    """Two models each decoded several ways (A's and B's results of decoding i are `a_paths[i]` and
    `b_paths[i]`), paired prompt by prompt: each decoding's `compare_runs`, and the comparison of the
    per-prompt average over the decodings (a prompt's score is the mean of its verdicts; the
    prompts scored in every decoding of both models), with its paired bootstrap interval and the
    exact sign test of the prompts whose average differs (`sign_test`). `names`: what the tables call
    A and B (default: from the first decoding's paths)."""
    _check_resamples(resamples)
    if not decodings or len(set(decodings)) != len(decodings):
        raise AutoifError(f"name each decoding once (got {', '.join(decodings) or 'none'})")
    if not len(a_paths) == len(b_paths) == len(decodings):
        raise AutoifError(
            f"{len(decodings)} decodings need as many results a side (got {len(a_paths)} and {len(b_paths)})"
        )
    pairings = [pair_runs(a, b) for a, b in zip(a_paths, b_paths)]
    benches = {p.bench.name for p in pairings}
    if len(benches) > 1:
        raise AutoifError(f"the decodings compared are runs of different benchmarks ({', '.join(sorted(benches))})")
    names = names or run_label(a_paths[0], b_paths[0])
    per = {d: compare_pairing(p, names, resamples=resamples, seed=seed) for d, p in zip(decodings, pairings)}
    first = pairings[0]
    keys = [
        k for k in first.pairs if all(k in p.pairs and p.pairs[k][0].task == first.pairs[k][0].task for p in pairings)
    ]
    if not keys:
        raise AutoifError("no prompt is scored in every decoding of both runs")
    pairs = [
        (mean_scores([p.pairs[k][0] for p in pairings]), mean_scores([p.pairs[k][1] for p in pairings])) for k in keys
    ]
    bench, modes = first.bench, first.bench.outcome_modes
    metrics = paired_metrics(bench, pairs, _labels(first), resamples=resamples, seed=seed, test="sign_test")
    head = per[decodings[0]]
    return {
        "benchmark": bench.name,
        "title": bench.title,
        "decodings": list(decodings),
        "a": names[0],
        "b": names[1],
        "per_decoding": per,
        "average": {
            "pairing": {"paired": len(keys), "left_out": len(first.pairs) - len(keys)},
            "bootstrap": head["bootstrap"],
            "metrics": metrics,
            "outcome_modes": list(modes),
            "families": group_rates(pairs, modes, family=True),
        },
    }
