"""Training/benchmark contamination: 13-gram overlap between a run's training prompts (the user turns
of `sft.jsonl`, the prompts of `dpo.jsonl`) and each benchmark's prompts.

Overlap is `autoif.benchmark_prompts`' (the query pool's benchmark check uses the same): texts are
case-folded words, and two prompts overlap when they share a word 13-gram, or, for a text shorter
than 13 words, when one's whole word sequence equals the other's. For each benchmark the report
gives the share of unique training prompts that overlap it, the share of its prompts that are hit,
and the pairs sharing the most n-grams (with the first shared one as the example). Only benchmark
data available offline is used (packaged copies, or files named in `data_files`): a check at the end
of every run must never wait on the network.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..benchmark_prompts import NGRAM, BenchmarkPrompt, NgramIndex
from ..errors import AutoifError
from ..jsonl import atomic_write_text, read_jsonl
from ..rundir import CONTAMINATION, DPO, SFT, TRAINING_FILES
from .benchmarks import BENCHMARKS, benchmark

log = logging.getLogger("autoif.evals")

TOP_PAIRS = 10


def training_prompts(run_dir: Path) -> tuple[list[str], dict[str, int]]:
    """Unique training prompts of a run (first-seen order) and how many records each file holds."""
    prompts: dict[str, None] = {}
    counts: dict[str, int] = {}
    for name, turns in ((SFT.name, lambda r: r.get("messages")), (DPO.name, lambda r: r.get("prompt"))):
        path = run_dir / name
        if not path.is_file():
            continue
        records = read_jsonl(path)
        counts[name] = len(records)
        for n, record in enumerate(records, 1):
            messages = turns(record)
            if isinstance(messages, str):  # a plain-text prompt (TRL's standard format)
                messages = [{"role": "user", "content": messages}]
            if not isinstance(messages, list):
                raise AutoifError(f"{path} line {n}: no {'messages' if name == 'sft.jsonl' else 'prompt'} list")
            for m in messages:
                if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str):
                    prompts.setdefault(m["content"], None)
    if not counts:
        raise AutoifError(f"no training data in {run_dir}: neither sft.jsonl nor dpo.jsonl")
    return list(prompts), counts


def load_benchmark(name: str, data: str | None) -> tuple[list[BenchmarkPrompt], str]:
    """Every prompt of a registered benchmark, from offline data only, and where they came from."""
    from .data import load_records

    bench = benchmark(name)
    records, source = load_records(bench, data, offline_only=True)
    return [BenchmarkPrompt(bench.title, item.id, item.prompt) for item in bench.all_items(records, source)], source


def overlap(train: Sequence[str], bench: Sequence[BenchmarkPrompt], n: int = NGRAM, top: int = TOP_PAIRS) -> dict:
    """Overlap between training prompts and one benchmark's prompts."""
    index = NgramIndex(bench, n)
    pairs = {(i, j): grams for i, prompt in enumerate(train) for j, grams in index.shared(prompt).items()}
    hit_train = {i for i, _ in pairs}
    hit_bench = {j for _, j in pairs}
    ranked = sorted(pairs.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:top]
    return {
        "benchmark_prompts": len(bench),
        "overlapping_training_prompts": len(hit_train),
        "training_overlap_rate": len(hit_train) / len(train) if train else 0.0,
        "overlapping_benchmark_prompts": len(hit_bench),
        "benchmark_overlap_rate": len(hit_bench) / len(bench) if bench else 0.0,
        "top_pairs": [
            {
                "training_prompt": train[i],
                "benchmark_id": bench[j].id,
                "benchmark_prompt": bench[j].text,
                "shared_ngrams": len(grams),
                "example": " ".join(grams[0]),
            }
            for (i, j), grams in ranked
        ],
    }


def contamination(
    run_dir: str | Path,
    benchmarks: Sequence[str] | None = None,
    *,
    data_files: Mapping[str, str] | None = None,
    n: int = NGRAM,
) -> dict:
    """Overlap of a run's training prompts with each benchmark; written to `<run_dir>/contamination.json`.

    benchmarks: names to check (None: every registered one; those without offline data are listed
    under "skipped"). data_files: benchmark name -> a local file to use instead of the packaged copy.
    """
    run_dir = Path(run_dir).expanduser()
    if not run_dir.is_dir():
        raise AutoifError(f"no such run directory: {run_dir}")
    train, counts = training_prompts(run_dir)
    names = list(benchmarks) if benchmarks is not None else list(BENCHMARKS)
    data_files = dict(data_files or {})
    report: dict = {
        "n": n,
        "training": {"records": counts, "unique_prompts": len(train)},
        "benchmarks": {},
        "skipped": {},
    }
    for name in names:
        explicit = benchmarks is not None or name in data_files
        try:
            prompts, source = load_benchmark(name, data_files.get(name))
        except AutoifError as exc:
            if explicit:
                raise
            report["skipped"][name] = str(exc)
            continue
        report["benchmarks"][name] = {"data": source, **overlap(train, prompts, n)}
    atomic_write_text(run_dir / CONTAMINATION, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report


def warn_on_contamination(run_dir: str | Path) -> dict | None:
    """What `autoif run` calls at its end: check every benchmark available offline and log a warning
    per benchmark that the training prompts overlap. Never fails the run: a problem is logged."""
    if not any(f.exists(run_dir) for f in TRAINING_FILES):
        log.debug("contamination: no training data in %s yet", run_dir)
        return None
    try:
        report = contamination(run_dir)
    except AutoifError as exc:
        log.warning("contamination check skipped: %s", exc)
        return None
    for name, result in report["benchmarks"].items():
        if result["overlapping_training_prompts"]:
            top = result["top_pairs"][0]
            log.warning(
                "contamination: %d of %d training prompts share a %d-gram with %d %s prompts (e.g. '%s'); see %s",
                result["overlapping_training_prompts"],
                report["training"]["unique_prompts"],
                report["n"],
                result["overlapping_benchmark_prompts"],
                name,
                top["example"],
                Path(run_dir) / CONTAMINATION,
            )
    for name, reason in report["skipped"].items():
        log.debug("contamination: %s not checked: %s", name, reason)
    return report
