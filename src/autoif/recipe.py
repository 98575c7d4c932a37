"""Recipes: one whole experiment from one YAML file, `autoif recipe FILE.yaml -o OUT`.

A recipe names the data (a pipeline run, or an existing run directory), a chain of trainers (each
starts from the model the one before it saved; the first from `base_model`), the benchmarks every
model is evaluated on, and what is reported. `plan()` turns it into steps, run in order:

    data -> train.<name>... -> eval.<model>.<benchmark>... -> contamination -> compare -> results -> publish

Each step's key is its resolved settings plus the digests of the steps it reads, and its digest
(a hash of the key) goes into `OUT/.steps/<step>.done` when it finishes. A step whose marker holds
its current digest, and whose outputs exist, is skipped; a changed setting changes the digest of
that step and of every step that reads it, and those are redone (their old outputs removed first:
a checkpoint or a response cache of other settings must not be resumed). A step cut off mid-way
(its `.started` marker holds the current digest) resumes: the pipeline by content, a trainer from
its last checkpoint (TRL's `resume_from_checkpoint`; online DPO from its last iteration), an
evaluation from its response cache (every finished response is in `OUT/eval/<model>/<benchmark>_cache.sqlite`).

Relative paths in a recipe (`data.config`, `data.run_dir`, `launch.accelerate_config`, `publish`)
are relative to the recipe file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .config import Config, LLMConfig, Section, config_from_tree, format_overrides, read_yaml_tree
from .errors import AutoifError, ConfigError
from .evals import BENCHMARKS, benchmark
from .evals.base import EvalConfig
from .jsonl import atomic_write_text, read_jsonl, write_jsonl
from .recipe_results import BASE, read_json, render_markdown, training_summary
from .registry import unknown_name
from .rundir import (
    COMPARE,
    CONTAMINATION,
    FUNNEL,
    RECIPE_DATA,
    RECIPE_EVAL,
    RECIPE_TRAIN,
    RECIPE_YAML,
    RESULTS_JSON,
    RESULTS_MD,
    STEPS,
    TRAINING_FILES,
)
from .train import TRAINERS, trainer

log = logging.getLogger("autoif.recipe")

STEP_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"


# ------------------------------------------------------------------------------------- the recipe
class DataSpec(Section):
    """The training data: a pipeline run into OUT/data, or an existing run directory."""

    config: str | dict[str, Any] | None = Field(
        None, description="the pipeline's config: a YAML file (relative to the recipe) or the config inline"
    )
    set: dict[str, Any] = Field(default_factory=dict, description="config keys set on top (dotted or nested)")
    run_dir: str | None = Field(
        None, description="train on this existing run directory instead of running the pipeline"
    )

    @model_validator(mode="after")
    def _one_source(self) -> DataSpec:
        if self.run_dir is not None and (self.config is not None or self.set):
            raise ValueError("give either run_dir or a pipeline config (config/set), not both")
        return self


class LaunchSpec(Section):
    """Run a trainer under `accelerate launch` (multi-GPU) instead of in this process."""

    accelerate_config: str = Field(
        ..., description="'zero3' or 'fsdp' (the configs shipped in autoif/train/accelerate/), or a file"
    )
    num_processes: int = Field(8, ge=1, description="processes (GPUs) over all machines")
    num_machines: int = Field(1, ge=1, description="machines")
    main_process_ip: str | None = Field(
        None, description="several machines: machine 0's address as the others reach it (needed when num_machines > 1)"
    )
    main_process_port: int = Field(29500, ge=1, le=65535, description="several machines: the port machine 0 listens on")
    machine_rank: int = Field(
        0, ge=0, description="several machines: this machine's rank (0 runs the recipe; run the others with 1, 2, ...)"
    )

    @model_validator(mode="after")
    def _machines(self) -> LaunchSpec:
        # Without an address accelerate launches anyway, with the master address "None": no machine connects.
        if self.num_machines > 1 and not self.main_process_ip:
            raise ValueError("num_machines > 1 needs main_process_ip (machine 0's address as the others reach it)")
        if self.machine_rank >= self.num_machines:
            raise ValueError(f"machine_rank {self.machine_rank} is not below num_machines {self.num_machines}")
        if self.num_processes % self.num_machines:
            raise ValueError(
                f"num_processes {self.num_processes} is not a multiple of num_machines {self.num_machines}"
            )
        return self


class TrainStep(Section):
    """One trainer of the chain."""

    name: str = Field(..., pattern=STEP_NAME, description="the step's name: OUT/train/<name>, OUT/eval/<name>")
    trainer: str = Field(..., description="sft, dpo, online-dpo or grpo")
    set: dict[str, Any] = Field(
        default_factory=dict, description="the trainer's settings (`autoif train <trainer> --print-config`)"
    )
    launch: LaunchSpec | None = Field(None, description="multi-GPU launch (None: in this process)")

    @field_validator("trainer")
    @classmethod
    def _known_trainer(cls, value: str) -> str:
        return TRAINERS.check(value)

    @field_validator("name")
    @classmethod
    def _not_base(cls, value: str) -> str:
        if value == BASE:
            raise ValueError(f"'{BASE}' names the untrained model; call the step something else")
        return value


class RecipeEvalSettings(EvalConfig):
    """Generation and judge settings of every evaluation (greedy; the backend applies the chat template)."""

    max_tokens: int = Field(512, ge=1, description="longest response generated for a benchmark prompt")


class DecodingSpec(Section):
    """One way every evaluated model is decoded (its weights' dtype, its batch): its files go to
    OUT/eval/<model>/<name>/ and are compared with the base decoded the same way."""

    name: str = Field(..., pattern=STEP_NAME, description="the decoding's name, e.g. fp32: OUT/eval/<model>/<name>/")
    llm: dict[str, Any] = Field(
        default_factory=dict, description="llm settings of this decoding, on top of eval.llm (dtype, batch_size, ...)"
    )
    benchmarks: list[str] | None = Field(
        None, description="the benchmarks decoded this way (None: every one of eval.benchmarks)"
    )


class EvalSpec(Section):
    """Which models are evaluated on which benchmarks, and how."""

    benchmarks: list[str] | None = Field(
        None, description="benchmark names (None: ifeval and ifbench, and followbench when a judge is set)"
    )
    models: list[str] | None = Field(
        None, description=f"'{BASE}' and train step names to evaluate (None: the base and every trained model)"
    )
    limit: int | dict[str, int] | None = Field(
        None,
        description="a seeded subset of this many prompts per benchmark, or per named benchmark ({mmlu: 2048}: "
        "the others whole)",
    )
    settings: RecipeEvalSettings = Field(default_factory=RecipeEvalSettings)
    llm: dict[str, Any] = Field(
        default_factory=dict,
        description="llm settings of the evaluated models (backend, batch_size, dtype, ...; `model` is set per model)",
    )
    decodings: list[DecodingSpec] = Field(
        default_factory=list,
        description="decode every model several ways, the first one the measure (its families are shown); "
        "compared per decoding and averaged per prompt over them (empty: once, with eval.llm, in OUT/eval/<model>/)",
    )
    base_cache: str | None = Field(
        None,
        description="the response cache the base model's evaluations read and write (relative to OUT; None: "
        "each evaluation's own): the base decodes deterministically, so a shipped cache serves its answers",
    )

    @field_validator("benchmarks")
    @classmethod
    def _known_benchmarks(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [BENCHMARKS.check(name) for name in value]

    @model_validator(mode="after")
    def _limits(self) -> EvalSpec:
        limits = self.limit.values() if isinstance(self.limit, dict) else [self.limit]
        if any(n is not None and n < 1 for n in limits):
            raise ValueError(f"eval.limit must be at least 1: {self.limit}")
        for name in self.limit if isinstance(self.limit, dict) else ():
            if name not in self.names():
                raise unknown_name("benchmark of eval.limit", name, self.names(), ConfigError)
        return self

    def limit_of(self, bench: str) -> int | None:
        """The size of the seeded subset of `bench` (None: the whole benchmark)."""
        return self.limit.get(bench) if isinstance(self.limit, dict) else self.limit

    @model_validator(mode="after")
    def _decodings(self) -> EvalSpec:
        names = [d.name for d in self.decodings]
        if len(set(names)) != len(names):
            raise ValueError(f"eval.decodings names must differ: {names}")
        for decoding in self.decodings:
            for name in decoding.benchmarks or ():
                if name not in self.names():
                    raise unknown_name(f"benchmark of decoding {decoding.name}", name, self.names(), ConfigError)
        return self

    def names(self) -> list[str]:
        if self.benchmarks is not None:
            return list(self.benchmarks)
        return ["ifeval", "ifbench"] + (["followbench"] if self.settings.judge is not None else [])

    def decoded(self) -> list[tuple[str | None, dict[str, Any], list[str]]]:
        """(decoding name, its llm settings, its benchmarks) of each decoding; one unnamed decoding
        with eval.llm when none is listed."""
        if not self.decodings:
            return [(None, dict(self.llm), self.names())]
        return [(d.name, {**self.llm, **d.llm}, d.benchmarks or self.names()) for d in self.decodings]

    def decodings_of(self, bench: str) -> list[str | None]:
        """The decodings a benchmark is evaluated in, the measure first."""
        return [name for name, _, benches in self.decoded() if bench in benches]


class CompareSpec(Section):
    """The base against each trained model, per benchmark (`autoif.evals.compare_runs`)."""

    enabled: bool = Field(True, description="compare the base with every evaluated trained model")
    resamples: int = Field(10_000, ge=100, description="paired bootstrap resamples")


class ContaminationSpec(Section):
    """13-gram overlap of every training prompt with the benchmarks' prompts."""

    enabled: bool = Field(True, description="check the training prompts")
    benchmarks: list[str] = Field(default_factory=lambda: ["ifeval", "ifbench"], description="benchmarks checked")
    max_share: float = Field(0.01, ge=0, le=1, description="the most overlapping training prompts allowed (share)")

    @field_validator("benchmarks")
    @classmethod
    def _known_benchmarks(cls, value: list[str]) -> list[str]:
        return [BENCHMARKS.check(name) for name in value]


class Recipe(Section):
    """One experiment: data, a training chain, evaluations, comparisons and the results page."""

    name: str = Field(..., pattern=STEP_NAME, description="the experiment's name (default OUT: runs/<name>)")
    description: str = Field("", description="what the experiment is, for the results page")
    base_model: str = Field("embedded", description="the model the chain starts from and is compared with")
    seed: int = Field(42, description="seed of evaluation subsets and of the bootstrap")
    data: DataSpec = Field(default_factory=DataSpec)
    train: list[TrainStep] = Field(default_factory=list, description="trainers, in order")
    eval: EvalSpec = Field(default_factory=EvalSpec)
    compare: CompareSpec = Field(default_factory=CompareSpec)
    contamination: ContaminationSpec = Field(default_factory=ContaminationSpec)
    publish: str | None = Field(
        None, description="copy responses, comparisons, funnel, training logs and results.md into this directory"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        names = [step.name for step in self.train]
        if len(set(names)) != len(names):
            raise ValueError(f"train step names must differ: {names}")
        models = [BASE] + names
        for name in self.eval.models or ():
            if name not in models:
                raise unknown_name("model in eval.models", name, models, ConfigError)
        benchmarks = self.eval.names()
        if "followbench" in benchmarks and self.eval.settings.judge is None:
            raise ValueError("followbench needs a judge: set eval.settings.judge (an llm section, or 'self')")
        evaluated = self.evaluated_models()
        if self.publish is not None and (BASE not in evaluated or not names or names[-1] not in evaluated):
            raise ValueError("publish copies the base's and the final model's responses: evaluate both")
        return self

    def evaluated_models(self) -> list[str]:
        return list(self.eval.models) if self.eval.models is not None else [BASE] + [s.name for s in self.train]


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """A recipe file + `key=value` overrides -> a validated Recipe, or a one-line AutoifError.

    `train.<step>.<key>=value` sets a key of that step's trainer settings (train is a list, so a
    plain dotted path cannot reach into it); other keys are the recipe's own (`eval.limit=5`).
    """
    tree = read_yaml_tree(path)
    steps = {s.get("name"): s for s in tree.get("train") or [] if isinstance(s, dict)}
    plain = []
    for item in overrides:
        key, _, value = item.partition("=")
        parts = key.strip().split(".", 2)
        if parts[0] == "train" and len(parts) == 3:
            if parts[1] not in steps:
                raise unknown_name("train step", parts[1], [n for n in steps if n], ConfigError)
            step = steps[parts[1]]  # a copy of `set`: YAML anchors may share it with another step
            step["set"] = {**(step.get("set") or {}), parts[2]: config_from_tree({}, [f"v={value}"], _Value).v}
        else:
            plain.append(item)
    return config_from_tree(tree, plain, Recipe)


class _Value(Section):
    """One override's value, parsed by the rules of every `--set`."""

    v: Any = None


# ------------------------------------------------------------------------------------------ steps
@dataclass
class Step:
    """One unit of work: its key (resolved settings and upstream digests), where its markers and
    outputs are, what it runs, and the equivalent command line."""

    name: str
    key: dict
    action: Callable[[], dict]
    render: Callable[[], str]  # the equivalent command line, with the paths known when it is asked
    outputs: tuple[Path, ...]  # must exist for the step to count as done
    owned: tuple[Path, ...] = ()  # removed before a (re)run with other settings
    markers: Path = Path(STEPS)
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        blob = json.dumps(self.key, sort_keys=True, ensure_ascii=False, default=str)
        self.digest = hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def command(self) -> str:
        return self.render()

    @property
    def done_file(self) -> Path:
        return self.markers / f"{self.name}.done"

    @property
    def started_file(self) -> Path:
        return self.markers / f"{self.name}.started"

    def marker(self) -> dict | None:
        return read_json(self.done_file)

    def state(self) -> Literal["done", "resume", "redo", "run"]:
        """done: finished with these settings; resume: cut off with these settings; redo: finished or
        started with other settings; run: never started."""
        done = self.marker()
        if done and done.get("hash") == self.digest and all(p.exists() for p in self.outputs):
            return "done"
        started = read_json(self.started_file)
        if started and started.get("hash") == self.digest:
            return "resume"
        return "redo" if done or started else "run"


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _cmd(*parts: str | Path) -> str:
    """The command line, with paths under the working directory written relative to it: the
    published `commands.sh` then runs from any checkout, not only from the machine that made it."""
    here = str(Path.cwd()).rstrip("/") + "/"
    return shlex.join(str(p).replace(here, "") for p in parts)


def _sets(items: list[str]) -> list[str]:
    return [a for item in items for a in ("--set", item)]


def _under(base: Path, path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


class Plan:
    """A recipe's steps for one output directory."""

    def __init__(self, recipe: Recipe, recipe_path: str | Path, out: str | Path, command: str = "") -> None:
        self.recipe = recipe
        self.recipe_path = Path(recipe_path).resolve()
        self.base = self.recipe_path.parent
        self.out = Path(out).expanduser().resolve()
        self.command = command or _cmd("autoif", "recipe", recipe_path, "-o", out)
        self.markers = self.out / STEPS
        self.steps: list[Step] = []
        self.models: dict[str, Step | None] = {BASE: None}  # model name -> the train step that made it
        self.last_train: Step | None = None
        self.model_of: dict[str, str] = {}  # train step name -> model name
        self._data()
        for spec in recipe.train:
            self._train(spec)
        for model in recipe.evaluated_models():
            for decoding, llm, benches in recipe.eval.decoded():
                for bench in benches:
                    self._eval(model, bench, decoding, llm)
        if recipe.contamination.enabled:
            self._contamination()
        if recipe.compare.enabled and BASE in recipe.evaluated_models() and len(recipe.evaluated_models()) > 1:
            self._compare()
        self._results()
        if recipe.publish is not None:
            self._publish()

    def _add(self, name: str, key: dict, action, render: Callable[[], str], outputs, owned=()) -> Step:
        step = Step(name, key, action, render, tuple(outputs), tuple(owned), self.markers)
        self.steps.append(step)
        return step

    def step(self, name: str) -> Step:
        return next(s for s in self.steps if s.name == name)

    # ---------------------------------------------------------------------------------------- data
    def _data(self) -> None:
        spec = self.recipe.data
        if spec.run_dir is not None:
            run_dir = _under(self.base, spec.run_dir)
            files = {f.name: _file_digest(f.path(run_dir)) for f in TRAINING_FILES if f.exists(run_dir)}
            if not files:
                raise AutoifError(f"data.run_dir: no sft.jsonl or dpo.jsonl in {run_dir}")
            self.data_dir = run_dir
            self.data = self._add(
                "data",
                {"run_dir": str(run_dir), "files": files},
                lambda: {"run_dir": str(run_dir)},
                lambda: f"# existing run directory {run_dir}",
                [run_dir / name for name in files],
            )
            return
        self.data_dir = self.out / RECIPE_DATA
        config_file = _under(self.base, spec.config) if isinstance(spec.config, str) else None
        overrides = format_overrides(spec.config) if isinstance(spec.config, dict) else []
        overrides += format_overrides(spec.set)
        tree = read_yaml_tree(config_file) if config_file else {}
        config = config_from_tree(tree, overrides + [f"paths.out={self.data_dir}"], Config)
        settings = config.model_dump(mode="json", exclude={"paths"})

        def run() -> dict:
            from .runner import run_pipeline

            run_pipeline(config)
            return {"run_dir": str(self.data_dir)}

        parts: list[str | Path] = ["autoif", "run"]
        if config_file:
            parts += ["-c", config_file]
        self.data = self._add(
            "data",
            {"config": settings},
            run,
            lambda: _cmd(*parts, "-o", self.data_dir, *_sets(overrides)),
            [*(f.path(self.data_dir) for f in TRAINING_FILES), self.data_dir / FUNNEL],
        )

    # --------------------------------------------------------------------------------------- train
    def _train(self, spec: TrainStep) -> None:
        settings_class, train = trainer(spec.trainer)
        out_dir = self.out / RECIPE_TRAIN / spec.name
        previous = self.last_train
        where = [f"data={self.data_dir}", f"output_dir={out_dir}"]
        overrides = format_overrides(spec.set)
        # Validated now (a bad key is one line before anything runs); `model` is known only once
        # the previous step has run, so the base model stands in.
        settings = config_from_tree({}, overrides + where + [f"model={self.recipe.base_model}"], settings_class)
        key = {
            "trainer": spec.trainer,
            "settings": settings.model_dump(mode="json", exclude={"model", "data", "output_dir", "resume"}),
            # Where the machines meet is no part of the result.
            "launch": spec.launch.model_dump(
                mode="json", include={"accelerate_config", "num_processes", "num_machines"}
            )
            if spec.launch
            else None,
            "data": self.data.digest,
            "from": previous.digest if previous else self.recipe.base_model,
        }

        def argv(model: str) -> list[str | Path]:
            return ["train", spec.trainer, "--model", model, "--data", self.data_dir, "--output", out_dir]

        def run() -> dict:
            model = self.model_path(self.model_of[previous.name]) if previous else self.recipe.base_model
            resume = ["resume=latest"] if any(out_dir.glob("checkpoint-*")) else []
            if spec.launch is not None:
                launch = self._launch(spec.launch)
                subprocess.run(
                    [*launch, *map(str, argv(model)), *_sets(overrides + resume)], check=True, stdout=sys.stderr
                )
                return {"model": str(launched_model(spec.trainer, out_dir)), "resumed": bool(resume)}
            trained = train(config_from_tree({}, overrides + where + [f"model={model}"] + resume, settings_class))
            return {"model": str(trained), "resumed": bool(resume)}

        launch = self._launch(spec.launch) if spec.launch else ["autoif"]
        source = self.model_of[previous.name] if previous else BASE
        step = self._add(
            f"train.{spec.name}",
            key,
            run,
            lambda: _cmd(*launch, *argv(self.model_label(source)), *_sets(overrides)),
            [out_dir],
            [out_dir],
        )
        self.last_train = step
        self.models[spec.name] = step
        self.model_of[step.name] = spec.name

    def _launch(self, launch: LaunchSpec) -> list[str]:
        config = launch.accelerate_config
        shipped = Path(__file__).parent / "train" / "accelerate" / f"{config}.yaml"
        path = shipped if shipped.is_file() else _under(self.base, config)
        return [
            "accelerate",
            "launch",
            "--config_file",
            str(path),
            "--num_processes",
            str(launch.num_processes),
            "--num_machines",
            str(launch.num_machines),
            *(
                [
                    "--machine_rank",
                    str(launch.machine_rank),
                    "--main_process_ip",
                    launch.main_process_ip,
                    "--main_process_port",
                    str(launch.main_process_port),
                ]
                if launch.num_machines > 1 and launch.main_process_ip
                else []
            ),
            "-m",
            "autoif.cli",
        ]

    def model_label(self, name: str) -> str:
        """The model's path when known (the base, or a finished step's), else `<name model>`."""
        step = self.models[name]
        return self.model_path(name) if step is None or step.state() == "done" else f"<{name} model>"

    def model_path(self, name: str) -> str:
        """The saved model of a finished train step (the base model for 'base')."""
        step = self.models[name]
        if step is None:
            return self.recipe.base_model
        marker = step.marker()
        if not marker or "model" not in marker.get("info", {}):
            raise AutoifError(f"{step.name} has not finished: no model to use")
        return marker["info"]["model"]

    # ---------------------------------------------------------------------------------------- eval
    def eval_dir(self, model: str, decoding: str | None = None) -> Path:
        """OUT/eval/<model>/, or OUT/eval/<model>/<decoding>/ when the recipe names its decodings."""
        return self.out / RECIPE_EVAL / model / (decoding or "")

    @staticmethod
    def eval_step(model: str, bench: str, decoding: str | None = None) -> str:
        return ".".join(["eval", model, *([decoding] if decoding else []), bench])

    def _eval(self, model: str, bench: str, decoding: str | None, decoding_llm: dict[str, Any]) -> None:
        spec = self.recipe.eval
        out_dir = self.eval_dir(model, decoding)
        own_cache = model != BASE or spec.base_cache is None
        limit = spec.limit_of(bench)
        # The base's shared cache, written relative to the evaluation's directory (llm.cache_path's
        # rule): the key stays the same wherever OUT is.
        cache = f"{bench}_cache.sqlite" if own_cache else os.path.relpath(self.out / str(spec.base_cache), out_dir)
        llm = {**decoding_llm, "cache": True, "cache_path": cache}
        # Validated now; `llm.model` is the trained model's path, known once its step has run.
        config_from_tree({"llm": llm}, (), Config)
        made_by = self.models[model]
        key = {
            "benchmark": bench,
            "model": made_by.digest if made_by else self.recipe.base_model,
            "limit": limit,
            "seed": self.recipe.seed,
            "settings": spec.settings.model_dump(mode="json"),
            "llm": llm,
        }

        def run() -> dict:
            from .evals import run_benchmark

            config = config_from_tree(
                {
                    "seed": self.recipe.seed,
                    "paths": {"out": str(out_dir)},
                    "llm": {**llm, "model": self.model_path(model)},
                },
                (),
                Config,
            )
            results = run_benchmark(bench, config, None, None, limit, out_dir, spec.settings, show=False)
            return {"metrics": results["metrics"]}

        flags = ["--limit", str(limit)] if limit else []
        judge = spec.settings.judge
        if bench == "followbench" and judge == "self":
            flags += ["--judge", "self"]
        elif bench == "followbench" and isinstance(judge, LLMConfig):
            flags += [
                a for item in format_overrides(judge.model_dump(exclude_defaults=True)) for a in ("--judge-set", item)
            ]
        sets = format_overrides({"seed": self.recipe.seed, "paths": {"out": str(out_dir)}, "llm": llm})

        def command() -> str:
            return _cmd(
                "autoif",
                "eval",
                bench,
                "--model",
                self.model_label(model),
                "--max-tokens",
                str(spec.settings.max_tokens),
                *flags,
                "--out",
                out_dir,
                *_sets(sets),
            )

        files = [out_dir / f"{bench}_results.json", out_dir / f"{bench}_responses.jsonl"]
        # A shared cache is never removed with an evaluation: it holds other steps' answers.
        owned = files + ([out_dir / f"{bench}_cache.sqlite"] if own_cache else [])
        self._add(self.eval_step(model, bench, decoding), key, run, command, files, owned)

    def results_file(self, model: str, bench: str, decoding: str | None = None) -> Path:
        return self.eval_dir(model, decoding) / f"{bench}_results.json"

    # ------------------------------------------------------------------------------ contamination
    def _contamination(self) -> None:
        spec = self.recipe.contamination
        path = self.out / CONTAMINATION

        def run() -> dict:
            from .evals import contamination

            report = contamination(self.data_dir, spec.benchmarks)
            report["max_share"] = spec.max_share
            for result in report["benchmarks"].values():
                result["within_limit"] = result["training_overlap_rate"] <= spec.max_share
            atomic_write_text(path, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
            return {}

        key = {"data": self.data.digest, **spec.model_dump(mode="json")}
        self._add(
            "contamination", key, run, lambda: _cmd("autoif", "eval", "contamination", self.data_dir), [path], [path]
        )

    # ------------------------------------------------------------------------------------ compare
    def compared(self) -> list[tuple[str, str]]:
        """(trained model, benchmark) pairs compared with the base."""
        return [(m, b) for m in self.recipe.evaluated_models() if m != BASE for b in self.recipe.eval.names()]

    def _compare(self) -> None:
        path = self.out / COMPARE
        spec = self.recipe.compare
        decodings = self.recipe.eval.decodings_of

        def run() -> dict:
            from .evals.stats import compare_decodings, compare_runs

            report: dict = {}
            for model, bench in self.compared():
                named = decodings(bench)
                if len(named) == 1:
                    report.setdefault(model, {})[bench] = compare_runs(
                        self.results_file(BASE, bench, named[0]),
                        self.results_file(model, bench, named[0]),
                        resamples=spec.resamples,
                        seed=self.recipe.seed,
                    )
                    continue
                report.setdefault(model, {})[bench] = compare_decodings(
                    [self.results_file(BASE, bench, d) for d in named],
                    [self.results_file(model, bench, d) for d in named],
                    [str(d) for d in named],
                    names=(BASE, model),
                    resamples=spec.resamples,
                    seed=self.recipe.seed,
                )
            atomic_write_text(path, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
            return {}

        evals = [
            self.step(self.eval_step(m, b, d)).digest
            for m in self.recipe.evaluated_models()
            for b in self.recipe.eval.names()
            for d in decodings(b)
        ]

        def command(model: str, bench: str) -> str:
            named = decodings(bench)
            if len(named) == 1:
                return _cmd(
                    "autoif",
                    "eval",
                    "compare",
                    self.results_file(BASE, bench, named[0]),
                    self.results_file(model, bench, named[0]),
                )
            return _cmd(
                "autoif",
                "eval",
                "compare",
                self.results_file(BASE, bench),
                self.results_file(model, bench),
                "--decodings",
                ",".join(str(d) for d in named),
            )

        commands = "; ".join(command(m, b) for m, b in self.compared())
        key = {"evals": evals, "resamples": spec.resamples, "seed": self.recipe.seed}
        self._add("compare", key, run, lambda: commands, [path], [path])

    # ---------------------------------------------------------------------------- results, publish
    def _results(self) -> None:
        files = [self.out / RESULTS_MD, self.out / RESULTS_JSON]
        key = {"after": [s.digest for s in self.steps], "recipe": self.recipe.model_dump(mode="json")}
        self._add(
            "results", key, lambda: write_results(self), lambda: "# OUT/results.md, OUT/results.json", files, files
        )

    def _publish(self) -> None:
        assert self.recipe.publish is not None
        target = _under(self.base, self.recipe.publish)
        key = {"results": self.step("results").digest, "to": str(target)}
        self._add("publish", key, lambda: publish(self, target), lambda: f"# copy to {target}", [target / RESULTS_MD])


# ------------------------------------------------------------------------------ results, publish
def collect_results(plan: Plan) -> dict:
    recipe = plan.recipe
    steps = {s.name: s.marker() or {} for s in plan.steps if s.name not in ("results", "publish")}
    # evals[model][bench]: the measure (the first decoding); decoded[model][bench][decoding]: each one.
    evals: dict = {}
    decoded: dict = {}
    for model in recipe.evaluated_models():
        for bench in recipe.eval.names():
            for decoding in recipe.eval.decodings_of(bench):
                doc = read_json(plan.results_file(model, bench, decoding)) or {}
                summary = {k: doc.get(k) for k in ("metrics", "metric_labels", "counts", "limit", "data")}
                evals.setdefault(model, {}).setdefault(bench, summary)
                if decoding:
                    decoded.setdefault(model, {}).setdefault(bench, {})[decoding] = summary
    training = {
        s.name: {
            "trainer": s.trainer,
            "model": plan.model_path(s.name),
            **training_summary(s.trainer, plan.out / RECIPE_TRAIN / s.name),
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
        "decoded": decoded,
        "decodings": {name: llm for name, llm, _ in recipe.eval.decoded() if name},
        "compare": read_json(plan.out / COMPARE),
        "agreement": dev_agreement(plan),
        "contamination": read_json(plan.out / CONTAMINATION),
        "funnel": read_json(plan.data_dir / FUNNEL),
        "training": training,
        "commands": [plan.command] + [s.command for s in plan.steps if not s.command.startswith("#")],
        "steps": {name: {"wall_s": m.get("wall_s"), "command": m.get("command")} for name, m in steps.items()},
    }


def dev_agreement(plan: Plan) -> dict | None:
    """How the dev set ranks the evaluated models against IFEval's ranking (prompt-level loose, the
    measure's decoding): Spearman's rho (`evals.agreement`), where both were evaluated for at least
    three models; None otherwise."""
    from .evals.agreement import MIN_CONFIGURATIONS, rank_agreement

    recipe = plan.recipe
    models = recipe.evaluated_models()
    if not {"dev", "ifeval"} <= set(recipe.eval.names()) or len(models) < MIN_CONFIGURATIONS:
        return None
    dev, ifeval = recipe.eval.decodings_of("dev")[0], recipe.eval.decodings_of("ifeval")[0]
    files = {m: (plan.results_file(m, "dev", dev), plan.results_file(m, "ifeval", ifeval)) for m in models}
    return rank_agreement(files, ("dev", "prompt_pass"), ("ifeval", "prompt_loose"))


def write_results(plan: Plan) -> dict:
    results = collect_results(plan)
    atomic_write_text(plan.out / RESULTS_JSON, json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(plan.out / RESULTS_MD, render_markdown(results))
    if plan.data_dir == plan.out / RECIPE_DATA:  # its report links ../results.md now that it exists
        from .runner import write_report_or_warn

        write_report_or_warn(plan.data_dir)
    return {}


def publish(plan: Plan, target: Path) -> dict:
    """Copy what lets anyone check the result into `target`: each benchmark's responses of the base and
    of the final model, in each decoding (`<bench>_<base|trained>[_<decoding>]_responses.jsonl`, its
    `published_row` a line: for IFEval and IFBench {"prompt", "response", "finish_reason", "strict",
    "loose"}, the prompt as in the benchmark file; MMLU's choices, HumanEval's completions), the
    comparisons, the funnel, the training logs, results.md/json and the commands."""
    target.mkdir(parents=True, exist_ok=True)
    final = plan.recipe.train[-1].name
    for bench in plan.recipe.eval.names():
        published = benchmark(bench)
        for decoding in plan.recipe.eval.decodings_of(bench):
            for model, label in ((BASE, "base"), (final, "trained")):
                rows = read_jsonl(plan.eval_dir(model, decoding) / f"{bench}_responses.jsonl")
                name = "_".join([bench, label, *([decoding] if decoding else []), "responses.jsonl"])
                write_jsonl(target / name, [published.published_row(r) for r in rows])
    for name, source in (
        (COMPARE, plan.out / COMPARE),
        (FUNNEL, plan.data_dir / FUNNEL),
        (CONTAMINATION, plan.out / CONTAMINATION),
        (RESULTS_MD, plan.out / RESULTS_MD),
        (RESULTS_JSON, plan.out / RESULTS_JSON),
    ):
        if source.is_file():
            shutil.copyfile(source, target / name)
    results = read_json(plan.out / RESULTS_JSON)
    for name, summary in results["training"].items():
        atomic_write_text(target / f"training_{name}_log.json", json.dumps(summary["log_history"], indent=2) + "\n")
    atomic_write_text(target / "commands.sh", "\n".join(results["commands"]) + "\n")
    return {"to": str(target)}


def launched_model(trainer: str, out_dir: Path) -> Path:
    """Where a trainer run by `accelerate launch` saved its model (in process, `train()` returns it):
    online DPO's last saved iteration, the others' `final`."""
    if trainer == "online-dpo":
        from .train.online_dpo import LOG_FILE

        saved = [e["saved"] for e in read_jsonl(out_dir / LOG_FILE) if e.get("saved")]
        if not saved:
            raise AutoifError(f"online-dpo saved no model in {out_dir}")
        return Path(saved[-1])
    return out_dir / "final"


# --------------------------------------------------------------------------------------- running
STATE_WORDS = {
    "done": "done, skipped",
    "resume": "would resume",
    "redo": "would redo (settings changed)",
    "run": "would run",
}


def describe(plan: Plan) -> list[str]:
    """The dry run: each step, whether it is done or what would happen, and its command."""
    total = len(plan.steps)
    return [
        f"[{i}/{total}] {step.name}: {STATE_WORDS[step.state()]}\n    {step.command}"
        for i, step in enumerate(plan.steps, 1)
    ]


def run_plan(plan: Plan) -> None:
    """Run every step that is not done, in order."""
    from .runlock import RunLock

    plan.markers.mkdir(parents=True, exist_ok=True)
    with RunLock(plan.out):
        atomic_write_text(plan.out / RECIPE_YAML, _recipe_yaml(plan.recipe))
        for i, step in enumerate(plan.steps, 1):
            _run_step(step, i, len(plan.steps))


def _run_step(step: Step, i: int, total: int) -> None:
    state = step.state()
    if state == "done":
        log.info("recipe [%d/%d] %s: done, skipped", i, total, step.name)
        return
    if state != "resume":
        for path in step.owned:  # another setting's outputs (a checkpoint, a response cache)
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        step.done_file.unlink(missing_ok=True)
    log.info("recipe [%d/%d] %s: %s", i, total, step.name, "resuming" if state == "resume" else "running")
    atomic_write_text(step.started_file, json.dumps({"hash": step.digest}) + "\n")
    start = time.monotonic()
    info = step.action()
    wall = time.monotonic() - start
    marker = {
        "hash": step.digest,
        "wall_s": round(wall, 1),
        "command": step.command,
        "info": info,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_text(step.done_file, json.dumps(marker, indent=2, ensure_ascii=False) + "\n")
    step.started_file.unlink(missing_ok=True)
    log.info("recipe [%d/%d] %s: done in %.1f s", i, total, step.name, wall)


def _recipe_yaml(recipe: Recipe) -> str:
    import yaml

    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False, allow_unicode=True)
