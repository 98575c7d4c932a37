"""A recipe's results page and what it publishes (see `recipe.py`).

`OUT/results.json` gathers every evaluated model's metrics, the comparisons with the base, the
contamination check, the data funnel, each trainer's summary (steps, final loss, runtime, from its
own log history), the commands and each step's wall time; `OUT/results.md` renders it. `publish`
copies what lets anyone check the result into a directory of the repository.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .evals.results import mcnemar_text, percent, points
from .jsonl import atomic_write_text, read_jsonl, write_jsonl

if TYPE_CHECKING:
    from .recipe import Plan

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


def collect_results(plan: Plan) -> dict:
    recipe = plan.recipe
    steps = {s.name: s.marker() or {} for s in plan.steps if s.name not in ("results", "publish")}
    evals: dict = {}
    for model in recipe.evaluated_models():
        for bench in recipe.eval.names():
            doc = read_json(plan.results_file(model, bench)) or {}
            evals.setdefault(model, {})[bench] = {
                k: doc.get(k) for k in ("metrics", "metric_labels", "counts", "limit", "data")
            }
    training = {
        s.name: {
            "trainer": s.trainer,
            "model": plan.model_path(s.name),
            **training_summary(s.trainer, plan.out / "train" / s.name),
        }
        for s in recipe.train
    }
    return {
        "name": recipe.name,
        "description": recipe.description,
        "recipe": str(plan.recipe_path),
        "out": str(plan.out),
        "base_model": recipe.base_model,
        "eval_settings": recipe.eval.settings.model_dump(mode="json"),
        "evals": evals,
        "compare": read_json(plan.out / "compare.json"),
        "contamination": read_json(plan.out / "contamination.json"),
        "funnel": read_json(plan.data_dir / "funnel.json"),
        "training": training,
        "commands": [plan.command] + [s.command for s in plan.steps if not s.command.startswith("#")],
        "steps": {name: {"wall_s": m.get("wall_s"), "command": m.get("command")} for name, m in steps.items()},
    }


def write_results(plan: Plan) -> dict:
    results = collect_results(plan)
    atomic_write_text(plan.out / "results.json", json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(plan.out / "results.md", render_markdown(results))
    if plan.data_dir == plan.out / "data":  # its report links ../results.md now that it exists
        from .runner import write_report_or_warn

        write_report_or_warn(plan.data_dir)
    return {}


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
    lines += [
        f"Base model `{results['base_model']}`. Evaluation: {settings['max_tokens']} new tokens, "
        f"temperature {settings['temperature']} (0: greedy), chat template. Metrics in percent.",
        "",
        "## Evaluations",
        "",
    ]
    benches = sorted({b for per in results["evals"].values() for b in per})
    for bench in benches:
        runs = {m: per[bench] for m, per in results["evals"].items() if bench in per}
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
    """`compare_runs`' dict per model and benchmark: each metric with B - A, its paired bootstrap
    interval and the McNemar test (prompt-level metrics), then the instruction families that moved
    (first outcome mode: loose where the benchmark has strict and loose)."""
    lines: list[str] = []
    for model, per in compare.items():
        for doc in per.values():
            paired = doc["pairing"]["paired"]
            lines += [f"### {model} vs base: {doc['title']} ({paired} paired prompts)", ""]
            rows = [
                [
                    m["label"],
                    percent(m["a"]),
                    percent(m["b"]),
                    points(m["delta"]),
                    f"[{points(m['ci'][0])}, {points(m['ci'][1])}]",
                    mcnemar_text(m.get("mcnemar")) or "-",
                ]
                for m in doc["metrics"].values()
            ]
            header = ["metric", "base %", f"{model} %", "B - A (points)", "95% interval", "McNemar p (B only/A only)"]
            lines += _table(header, rows) + [""]
            mode = doc["outcome_modes"][0]
            families = [
                [f["name"], str(f["n"]), percent(f[mode]["a"]), percent(f[mode]["b"]), points(f[mode]["delta"])]
                for f in doc["families"]
            ]
            if families:
                lines += [f"Instruction families ({mode}), largest gain first:", ""]
                lines += _table(["family", "n", "base %", f"{model} %", "B - A"], families) + [""]
            lines += [f"- warning: {w}" for w in doc.get("warnings", [])]
    return lines


def _render_funnel(funnel: dict) -> list[str]:
    stages = funnel.get("stages", funnel)
    rows = []
    for name, s in stages.items():
        if isinstance(s, dict) and "in" in s:
            dropped = s.get("dropped") or {}
            reasons = ", ".join(f"{k} {v}" for k, v in dropped.items()) if isinstance(dropped, dict) else _num(dropped)
            rows.append([name, _num(s.get("in")), _num(s.get("out")), reasons])
    return _table(["stage", "in", "out", "dropped"], rows) + [""] if rows else []


def publish(plan: Plan, target: Path) -> dict:
    """Copy what lets anyone check the result into `target`: each benchmark's responses of the base and
    of the final model (its `published_fields` a line: {"prompt", "response"} for the instruction
    benchmarks, the prompt as in the benchmark file; MMLU's choices, HumanEval's completions), the
    comparisons, the funnel, the training logs, results.md/json and the commands."""
    from .evals import benchmark

    target.mkdir(parents=True, exist_ok=True)
    final = plan.recipe.train[-1].name
    for bench in plan.recipe.eval.names():
        fields = benchmark(bench).published_fields
        for model, label in ((BASE, "base"), (final, "trained")):
            rows = read_jsonl(plan.eval_dir(model) / f"{bench}_responses.jsonl")
            write_jsonl(target / f"{bench}_{label}_responses.jsonl", [{k: r[k] for k in fields} for r in rows])
    for name, source in (
        ("compare.json", plan.out / "compare.json"),
        ("funnel.json", plan.data_dir / "funnel.json"),
        ("contamination.json", plan.out / "contamination.json"),
        ("results.md", plan.out / "results.md"),
        ("results.json", plan.out / "results.json"),
    ):
        if source.is_file():
            shutil.copyfile(source, target / name)
    results = read_json(plan.out / "results.json")
    for name, summary in results["training"].items():
        atomic_write_text(target / f"training_{name}_log.json", json.dumps(summary["log_history"], indent=2) + "\n")
    atomic_write_text(target / "commands.sh", "\n".join(results["commands"]) + "\n")
    return {"to": str(target)}
