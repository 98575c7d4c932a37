"""The dataset card (README.md) of a run's exported data: what the data is, the funnel, the model
of each role with its tokens and cost, contamination figures, the config, the license field, and
how to load it with `datasets` and train on it with TRL.

Written from the files in OUT alone (funnel.json, config.yaml, contamination.json, sft.jsonl,
dpo.jsonl), into the `datasets` copy (`OUT/hf_dataset/README.md`) and, with `--push-to-hub`, to
the hub repo, where the metadata that `datasets` wrote on push (its `configs` and
`dataset_info`, which say where each split's files are) is kept under ours.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

from .cost import format_cost

CARD = "README.md"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _rows(path: Path) -> int:
    try:
        return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    except OSError:
        return 0


def _public_config(text: str) -> str:
    """config.yaml without any user:password@ in a URL (keys themselves are never in it)."""
    return re.sub(r"://[^/@\s]+@", "://", text)


def card_metadata(license_id: str) -> dict[str, Any]:
    return {
        "license": license_id,
        "task_categories": ["text-generation"],
        "language": ["en"],
        "tags": ["autoif", "instruction-following", "synthetic", "dpo", "sft"],
        "pretty_name": "AutoIF instruction-following data",
    }


def card_text(out: str | os.PathLike, repo: str | None = None, license_id: str = "other") -> str:
    """The card's markdown, with YAML front matter (`license_id` as its license field)."""
    out = Path(out)
    funnel = _read_json(out / "funnel.json")
    found = funnel.get("stages")
    stages: dict[str, Any] = found if isinstance(found, dict) else {}
    sft, dpo = _rows(out / "sft.jsonl"), _rows(out / "dpo.jsonl")
    front = yaml.safe_dump(card_metadata(license_id), sort_keys=False).strip()
    if repo:  # on the hub each split is its own config (their columns differ), with a train split
        load = "".join(f'{name} = load_dataset("{repo}", "{name}", split="train")\n' for name in ("sft", "dpo"))
    else:
        load = f'data = load_from_disk("{out / "hf_dataset"}")\nsft, dpo = data["sft"], data["dpo"]\n'
    loader = "load_dataset" if repo else "load_from_disk"
    parts = [
        f"---\n{front}\n---",
        "# AutoIF instruction-following data",
        "Instruction-following training data made by [autoif](https://github.com/) with the AutoIF method "
        "(Dong et al., 2024): instructions whose constraints are checked by generated Python verification "
        "functions, cross-validated by execution and back-translation; responses sampled for real user queries "
        "and kept or paired by how many of those functions they pass.",
        f"- `sft`: {sft} rows: `messages` (a conversation), `instruction_id`, `functions` (the verifiers), "
        "`pass_rate`\n"
        f"- `dpo`: {dpo} rows: `prompt`, `chosen`, `rejected` (conversations), `level`, `functions`",
        "## Funnel\n\nRecords in and out of each stage and why the others were dropped.\n\n"
        + _table(
            ["stage", "in", "out", "dropped"],
            [
                [name, row.get("in", ""), row.get("out", ""), _dropped(row.get("dropped") or {})]
                for name, row in stages.items()
                if isinstance(row, dict)
            ],
        ),
        "## Models\n\nThe model of each role (stage that asks an LLM), the tokens it used and what they cost at "
        "the run's configured prices.\n\n"
        + _table(
            ["stage", "backend", "model", "batch", "prompt tokens", "completion tokens", "cost"],
            [
                [
                    name,
                    line.get("backend", ""),
                    line.get("model", ""),
                    "yes" if line.get("batch") else "no",
                    line.get("prompt_tokens", 0),
                    line.get("completion_tokens", 0),
                    format_cost(line.get("cost")),
                ]
                for name, row in stages.items()
                if isinstance(row, dict) and isinstance(line := row.get("llm"), dict)
            ],
        ),
        "## Contamination\n\n" + _contamination(_read_json(out / "contamination.json")),
        "## Use\n\n```python\n"
        f"from datasets import {loader}\n\n"
        f"{load}\n"
        "from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer\n\n"
        'SFTTrainer(model="HuggingFaceTB/SmolLM2-135M-Instruct", train_dataset=sft, args=SFTConfig()).train()\n'
        'DPOTrainer(model="HuggingFaceTB/SmolLM2-135M-Instruct", train_dataset=dpo, args=DPOConfig()).train()\n'
        "```\n\nOr with autoif's own recipes: `autoif train sft --data RUN_DIR`, `autoif train dpo --data RUN_DIR`.",
        "## License\n\n"
        f"`{license_id}` (export.card_license). The responses were written by the models above and the queries "
        "come from the run's query source: their terms apply too.",
    ]
    config = out / "config.yaml"
    if config.is_file():
        parts.append(
            "## Config\n\nThe run's whole config (`autoif run -c` loads it back):\n\n```yaml\n"
            + _public_config(config.read_text(encoding="utf-8")).rstrip()
            + "\n```"
        )
    return "\n\n".join(parts) + "\n"


def _dropped(dropped: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in dropped.items()) or "-"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    if not rows:
        return "(none recorded)"
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _contamination(report: dict[str, Any]) -> str:
    benchmarks = report.get("benchmarks")
    if not isinstance(benchmarks, dict) or not benchmarks:
        return "Not checked (no contamination.json: `autoif eval contamination RUN_DIR` writes it)."
    unique = (report.get("training") or {}).get("unique_prompts", "?")
    n = report.get("n", 13)
    rows = [
        [
            name,
            f"{r.get('overlapping_training_prompts', 0)} of {unique}",
            f"{100 * r.get('training_overlap_rate', 0):.2f}%",
            f"{r.get('overlapping_benchmark_prompts', 0)} of {r.get('benchmark_prompts', 0)}",
        ]
        for name, r in benchmarks.items()
    ]
    return f"Training prompts sharing a {n}-gram with a benchmark prompt.\n\n" + _table(
        ["benchmark", "training prompts", "rate", "benchmark prompts"], rows
    )


def push_card(repo: str, text: str, token: str) -> None:
    """Replace the hub repo's README with `text`, keeping the metadata `datasets` wrote on push."""
    from huggingface_hub import DatasetCard

    pushed = DatasetCard.load(repo, token=token, repo_type="dataset")
    ours = DatasetCard(text)
    merged = {**pushed.data.to_dict(), **ours.data.to_dict()}
    body = text.split("\n---\n", 1)[1] if text.startswith("---\n") else text
    card = DatasetCard("---\n" + yaml.safe_dump(merged, sort_keys=False) + "---\n" + body)
    card.push_to_hub(repo, token=token, repo_type="dataset")
