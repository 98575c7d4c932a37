"""A recipe's results page (see `recipe.py`, whose `results` step gathers them).

`OUT/results.json` gathers every evaluated model's metrics, the comparisons with the base, the
contamination check, the data funnel, each trainer's summary (`training_summary`: steps, final
loss, runtime, from its own log history), the commands and each step's wall time;
`render_markdown` turns it into `OUT/results.md`. It knows nothing of a recipe's plan.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .evals.results import mcnemar_text, paired_test, percent, points
from .jsonl import read_jsonl
from .llm.embedded import EMBEDDED, EMBEDDED_DESCRIPTION

BASE = "base"  # the name of the untrained model in `eval.models` and under OUT/eval/


def read_json(path: Path) -> Any:
    """A JSON file's content, or None when it is missing or unreadable (a marker not written yet)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def training_summary(trainer: str, out_dir: Path) -> dict:
    """Steps, final loss and runtime of a finished train step, from the trainer's own logs."""
    if trainer == "online-dpo":
        from .train.online_dpo import LOG_FILE

        history = read_jsonl(out_dir / LOG_FILE) if (out_dir / LOG_FILE).is_file() else []
        trained = [e for e in history if "train_loss" in e]
        return {
            "iterations": len(trained),
            "final_loss": trained[-1]["train_loss"] if trained else None,
            "mean_pass_rate": [e.get("mean_pass_rate") for e in history],
            "log_history": history,
        }
    state = read_json(out_dir / "trainer_state.json") or {}
    history = state.get("log_history", [])
    losses = [h["loss"] for h in history if "loss" in h]
    end: dict = next((h for h in reversed(history) if "train_runtime" in h), {})
    return {
        "steps": state.get("global_step"),
        "final_loss": losses[-1] if losses else None,
        "train_loss": end.get("train_loss"),
        "runtime_s": end.get("train_runtime"),
        "log_history": history,
    }


def _pct(value: Any) -> str:
    return f"{100 * value:.2f}" if isinstance(value, (int, float)) else "-"


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def render_markdown(results: dict) -> str:
    lines = [f"# {results['name']}", ""]
    if results["description"]:
        lines += [results["description"].strip(), ""]
    settings = results["eval_settings"]
    base = f"`{results['base_model']}`"
    if results["base_model"] == EMBEDDED:
        base += f" ({EMBEDDED_DESCRIPTION})"
    decodings = results.get("decodings") or {}
    lines += [
        f"Base model {base}. Evaluation: {settings['max_tokens']} new tokens, "
        f"temperature {settings['temperature']} (0: greedy), chat template. Metrics in percent.",
        "",
    ]
    if decodings:
        shown = "; ".join(f"{name}: {', '.join(f'{k} {v}' for k, v in llm.items())}" for name, llm in decodings.items())
        first = next(iter(decodings))
        lines += [
            f"Every model is decoded {len(decodings)} ways ({shown}); {first} is the measure, the others check "
            "that a difference survives the decoding (each compared with the base decoded the same way, and "
            "averaged per prompt over the decodings).",
            "",
        ]
    lines += ["## Evaluations", ""]
    benches = sorted({b for per in results["evals"].values() for b in per})
    decoded = results.get("decoded") or {}
    for bench in benches:
        runs = {m: per[bench] for m, per in results["evals"].items() if bench in per}
        if decoded:  # one row per model and decoding
            runs = {f"{m} {d}": doc for m, per in decoded.items() for d, doc in per.get(bench, {}).items()}
        labels: dict = {}
        for doc in runs.values():
            labels.update(doc.get("metric_labels") or {})
        keys = list(dict.fromkeys(k for doc in runs.values() for k in (doc.get("metrics") or {})))
        lines += [f"### {bench}", ""]
        rows = [[m] + [_pct((doc.get("metrics") or {}).get(k)) for k in keys] for m, doc in runs.items()]
        lines += _table(["model"] + [labels.get(k, k) for k in keys], rows) + [""]
        counts = {m: doc.get("counts") for m, doc in runs.items() if doc.get("counts")}
        if counts:
            lines += [f"Counts: {'; '.join(f'{m}: {c}' for m, c in counts.items())}", ""]
    if results["compare"]:
        lines += ["## Comparisons with the base", ""] + _render_compare(results["compare"])
    if results.get("agreement"):
        lines += ["## Does the dev set choose as IFEval would?", ""] + _render_agreement(results["agreement"])
    contamination = results["contamination"]
    if contamination:
        lines += ["## Contamination", ""]
        limit = contamination.get("max_share")
        rows = [
            [
                name,
                str(r["overlapping_training_prompts"]),
                f"{100 * r['training_overlap_rate']:.2f}%",
                _pct(limit) + "%",
                "yes" if r.get("within_limit") else "no",
            ]
            for name, r in contamination["benchmarks"].items()
        ]
        unique = contamination["training"]["unique_prompts"]
        lines += [f"{contamination['n']}-gram overlap of the {unique} unique training prompts:", ""]
        lines += _table(["benchmark", "overlapping prompts", "share", "limit", "within"], rows) + [""]
    if results["funnel"]:
        lines += ["## Data funnel", ""] + _render_funnel(results["funnel"])
    if results["training"]:
        lines += ["## Training", ""]
        rows = [
            [
                name,
                t["trainer"],
                _num(t.get("steps", t.get("iterations"))),
                _num(t.get("final_loss")),
                _num(t.get("runtime_s")),
                f"`{t['model']}`",
            ]
            for name, t in results["training"].items()
        ]
        lines += _table(["step", "trainer", "steps (iterations)", "final loss", "runtime s", "model"], rows) + [""]
    lines += ["## Steps", ""]
    lines += _table(["step", "wall s"], [[name, _num(s["wall_s"])] for name, s in results["steps"].items()])
    lines += [
        "",
        "Commands (the recipe, then what each step ran, as commands):",
        "",
        "```",
        *results["commands"],
        "```",
        "",
    ]
    return "\n".join(lines)


def _render_compare(compare: dict) -> list[str]:
    """The comparisons with the base per model and benchmark: a single decoding's (`compare_runs`), or
    each decoding's and their per-prompt average (`compare_decodings`); the instruction families that
    moved are shown for the first (the measure)."""
    lines: list[str] = []
    for model, per in compare.items():
        for doc in per.values():
            if "per_decoding" not in doc:
                lines += _render_one(model, doc, doc["title"], families=True)
                continue
            for n, (decoding, one) in enumerate(doc["per_decoding"].items()):
                lines += _render_one(model, one, f"{doc['title']}, {decoding}", families=n == 0)
            average = doc["average"]
            shown = ", ".join(doc["decodings"])
            title = f"{doc['title']}, mean over {shown}"
            lines += _metric_rows(model, title, average, "sign test p (B higher/A higher)")
            lines += [f"A prompt's score is the mean of its verdicts over {shown}.", ""]
    return lines


def _metric_rows(model: str, title: str, doc: dict, test_header: str) -> list[str]:
    """Each metric with B - A, its paired bootstrap interval and its exact test."""
    lines = [f"### {model} vs base: {title} ({doc['pairing']['paired']} paired prompts)", ""]
    rows = [
        [
            m["label"],
            percent(m["a"]),
            percent(m["b"]),
            points(m["delta"]),
            f"[{points(m['ci'][0])}, {points(m['ci'][1])}]",
            mcnemar_text(paired_test(m)) or "-",
        ]
        for m in doc["metrics"].values()
    ]
    header = ["metric", "base %", f"{model} %", "B - A (points)", "95% interval", test_header]
    return lines + _table(header, rows) + [""]


def _render_one(model: str, doc: dict, title: str, *, families: bool) -> list[str]:
    """`compare_runs`' dict: its metrics with McNemar's test, then (first outcome mode: loose where the
    benchmark has strict and loose) the instruction families that moved."""
    lines = _metric_rows(model, title, doc, "McNemar p (B only/A only)")
    mode = doc["outcome_modes"][0]
    rows = [
        [f["name"], str(f["n"]), percent(f[mode]["a"]), percent(f[mode]["b"]), points(f[mode]["delta"])]
        for f in doc["families"]
    ]
    if families and rows:
        lines += [f"Instruction families ({mode}), largest gain first:", ""]
        lines += _table(["family", "n", "base %", f"{model} %", "B - A"], rows) + [""]
    return lines + [f"- warning: {w}" for w in doc.get("warnings", [])]


def _render_agreement(report: dict) -> list[str]:
    """`evals.agreement.rank_agreement`: each model's dev and IFEval values and ranks, and Spearman's rho."""
    rows = [
        [c["name"], _pct(c["proxy"]), f"{c['proxy_rank']:g}", _pct(c["target"]), f"{c['target_rank']:g}"]
        for c in report["configurations"]
    ]
    proxy, target = report["proxy"], report["target"]
    header = [
        "model",
        f"{proxy['benchmark']} {proxy['metric']} %",
        "rank",
        f"{target['benchmark']} {target['metric']} %",
        "rank",
    ]
    s = report["spearman"]
    rho = (
        f"Spearman's rank correlation {s['rho']:+.3f} (p {s['p']:.3g}, {s['n']} models; rank 1: best)."
        if s["rho"] is not None
        else "Spearman's rank correlation undefined: one side ranks every model equal."
    )
    return _table(header, rows) + ["", rho, ""]


def _render_funnel(funnel: dict) -> list[str]:
    stages = funnel.get("stages", funnel)
    rows = []
    for name, s in stages.items():
        if isinstance(s, dict) and "in" in s:
            dropped = s.get("dropped") or {}
            reasons = ", ".join(f"{k} {v}" for k, v in dropped.items()) if isinstance(dropped, dict) else _num(dropped)
            rows.append([name, _num(s.get("in")), _num(s.get("out")), reasons])
    return _table(["stage", "in", "out", "dropped"], rows) + [""] if rows else []
