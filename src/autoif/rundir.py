"""The run directory (OUT): every file a run writes there, the stage that writes it, the record type
of its lines, and typed readers. The pipeline, the stages, the report, recipes, evaluations,
trainers and the export copies name run files only through this table (and a recipe's
directory through the names at the end).

    seeds.jsonl ... dpo.jsonl   each stage's records (RECORD_FILES, in run order)
    config.yaml                 the config the last run used, as commented YAML
    funnel.json                 records in, out and dropped per stage; what the LLM cost
    contamination.json          13-gram overlap of the training prompts with the benchmarks
    report.html                 the report
    llm_cache.sqlite            the LLM response cache (`llm.cache_path`, relative to OUT)
    .work/<stage>/              finished shards and the stage's DONE marker (the pipeline's)
    .lock                       held by the live run (runlock.py)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from .jsonl import read_jsonl
from .records import (
    CrossvalRecord,
    DPORecord,
    Instruction,
    QueryRecord,
    Record,
    ResponsesRecord,
    SFTRecord,
    VerifiedRecord,
    VerifierSamples,
)

R = TypeVar("R", bound=Record)


@dataclass(frozen=True)
class RunFile(Generic[R]):
    """One jsonl file of a run: its name under OUT, the stage that writes it, its record type."""

    name: str
    stage: str
    record: type[R]

    def path(self, out: str | os.PathLike) -> Path:
        return Path(out) / self.name

    def exists(self, out: str | os.PathLike) -> bool:
        return self.path(out).is_file()

    def read(self, out: str | os.PathLike) -> list[R]:
        """Its records, each validated as `record` (a bad line is an AutoifError naming file and line)."""
        return read_jsonl(self.path(out), self.record)


SEEDS = RunFile("seeds.jsonl", "seeds", Instruction)
INSTRUCTIONS = RunFile("instructions.jsonl", "augment", Instruction)
VERIFIERS = RunFile("verifiers.jsonl", "verifiers", VerifierSamples)
CROSSVAL = RunFile("crossval.jsonl", "crossval", CrossvalRecord)
BACKTRANSLATE = RunFile("backtranslate.jsonl", "backtranslate", CrossvalRecord)
COMPOSE = RunFile("compose.jsonl", "compose", CrossvalRecord)
QUERIES = RunFile("queries.jsonl", "queries", QueryRecord)
RESPONSES = RunFile("responses.jsonl", "responses", ResponsesRecord)
VERIFIED = RunFile("verified.jsonl", "verify", VerifiedRecord)
SCORED = RunFile("scored.jsonl", "score", VerifiedRecord)
SFT = RunFile("sft.jsonl", "export", SFTRecord)
DPO = RunFile("dpo.jsonl", "export", DPORecord)

# Every stage's files, in run order (a stage's first file is its `output`).
RECORD_FILES: tuple[RunFile[Any], ...] = (
    SEEDS,
    INSTRUCTIONS,
    VERIFIERS,
    CROSSVAL,
    BACKTRANSLATE,
    COMPOSE,
    QUERIES,
    RESPONSES,
    VERIFIED,
    SCORED,
    SFT,
    DPO,
)
STAGE_NAMES: tuple[str, ...] = tuple(dict.fromkeys(f.stage for f in RECORD_FILES))
TRAINING_FILES = (SFT, DPO)  # what trainers, recipes and the contamination check read

CONFIG = "config.yaml"
FUNNEL = "funnel.json"
CONTAMINATION = "contamination.json"
REPORT = "report.html"
WORK = ".work"
RESULTS_SUFFIX = "_results.json"  # `<benchmark>_results.json`, written by `autoif eval` (read by the report)


def stage_files(stage: str) -> tuple[RunFile[Any], ...]:
    """The files `stage` writes, its output first."""
    return tuple(f for f in RECORD_FILES if f.stage == stage)


# A recipe's directory (recipe.py): the data step's run directory, each step's folder, the results.
RECIPE_DATA = "data"  # the run directory of the data step
RECIPE_TRAIN = "train"  # train/<step>/: that trainer's output_dir
RECIPE_EVAL = "eval"  # eval/<model>/: the files of `autoif eval` for that model
STEPS = ".steps"  # <step>.done and <step>.started markers
RECIPE_YAML = "recipe.yaml"
COMPARE = "compare.json"
RESULTS_MD = "results.md"
RESULTS_JSON = "results.json"
