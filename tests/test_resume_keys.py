"""Resume keys come from what each stage declares it reads, and a stage can read nothing else.

The schema walk changes every config field, one at a time, and checks that exactly the stages that
read it get a new resume key (so they, and only they, run again); the view test checks that a stage
reading an undeclared path fails instead of resuming stale output.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import typing
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ValidationError

from autoif.config import Config, load_config
from autoif.config_reads import ConfigView, UndeclaredRead, field_paths, is_operational, reads_field
from autoif.pipeline import Pipeline
from autoif.records import Instruction
from autoif.stages import default_stages
from autoif.stages.base import Stage

# Fields no stage reads, and why: they are the pipeline's (where OUT is, where shards run) or
# applied at load time to the sections (a scale sets the sections' values, which the stages read).
NOT_READ_BY_STAGES = {
    "scale": "sets other sections at load",
    "paths": "the pipeline's",
    "executor": "the pipeline's",
    "prices": "the pipeline's (what the stages' requests cost, the budget): no output depends on it",
    "lengths": "`--estimate`'s (configured average token lengths): no output depends on it",
}


def _field(path: str):
    model: type[BaseModel] = Config
    *parents, leaf = path.split(".")
    for part in parents:
        model = model.model_fields[part].annotation  # type: ignore[assignment]
    return model, leaf


def _candidates(annotation: Any, value: Any, tmp: Path) -> list[Any]:
    """Values to try in place of `value` (the first one the schema accepts is used)."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is Literal:
        return [a for a in args if a != value]
    if args and typing.get_origin(annotation) is not dict and typing.get_origin(annotation) is not list:
        return [c for a in args for c in _candidates(a, value, tmp)]  # Optional[X], X | Y
    if annotation is bool:
        return [not value]
    if annotation is int:
        base = value if isinstance(value, int) else 1
        return [base + 1, base - 1, 2]
    if annotation is float:
        base = value if isinstance(value, float | int) else 0.5
        return [base * 0.5, base + 0.1, 0.25, 0.9, 2.0]
    if annotation is str:
        return [f"{value}-changed" if value else "changed"]
    if typing.get_origin(annotation) is dict:
        return [{2: 1.0}, {"top_k": 5}, {"model": "another-model"}]  # the last: a role's own `llm`
    if typing.get_origin(annotation) is list:
        return [["re"]]
    raise AssertionError(f"no candidate values for {annotation}")


def _changed(path: str, tmp: Path) -> Config:
    """The default config with the field at `path` set to another valid value."""
    model, leaf = _field(path)
    default = getattr(_section(Config(), path), leaf)
    if path == "queries.source":  # another pool: a local file (the key holds the pool's hash)
        pool = tmp / "pool.jsonl"
        pool.write_text(
            "".join(json.dumps({"prompt": f"Tell me about the river number {i}."}) + "\n" for i in range(9))
        )
        tries: list[Any] = [str(pool)]
    elif path == "seeds.file":  # another seed file (the key holds its content)
        seeds = tmp / "seeds.txt"
        seeds.write_text("Answer in exactly three sentences.\n")
        tries = [str(seeds)]
    elif path in ("queries.field", "queries.language"):  # what the built-in pool has
        tries = [{"queries.field": "query", "queries.language": "en"}[path]]
    else:
        tries = _candidates(model.model_fields[leaf].annotation, default, tmp)
    for value in tries:
        tree: dict = {}
        node = tree
        for part in path.split(".")[:-1]:
            node = node.setdefault(part, {})
        node[leaf] = value
        try:
            config = Config.model_validate(tree)
        except ValidationError:
            continue
        if getattr(_section(config, path), leaf) != default:
            return config
    raise AssertionError(f"no valid other value for {path}")


def _section(config: BaseModel, path: str) -> Any:
    node: Any = config
    for part in path.split(".")[:-1]:
        node = getattr(node, part)
    return node


STAGES = default_stages()
DEFAULT = Config()
DEFAULT_KEYS = {stage.name: stage.settings(DEFAULT) for stage in STAGES}


@pytest.mark.parametrize("path", list(field_paths(Config)))
def test_changing_a_field_reruns_exactly_the_stages_that_read_it(path, tmp_path):
    if path in NOT_READ_BY_STAGES:
        return
    config = _changed(path, tmp_path)
    rerun = {stage.name for stage in STAGES if stage.settings(config) != DEFAULT_KEYS[stage.name]}
    model, leaf = _field(path)
    readers = {stage.name for stage in STAGES if reads_field(stage.reads, path)}
    expected = set() if is_operational(model, leaf) else readers
    assert rerun == expected, f"{path}: changing it reruns {sorted(rerun)}, its readers are {sorted(expected)}"
    # Every field changes some stage's output, says how work is done (operational), or is the pipeline's.
    if not expected:
        assert is_operational(model, leaf) or path.split(".")[0] in NOT_READ_BY_STAGES, f"{path}: no stage reads it"


def test_the_reported_misses_are_in_the_keys():
    """Export's instruction-level pairs use verify's threshold; responses' answers depend on llm.dtype."""
    export, responses = (next(s for s in STAGES if s.name == n) for n in ("export", "responses"))
    threshold = load_config(None, ["verify.min_pass_rate=0.9"])
    assert export.settings(threshold) != DEFAULT_KEYS["export"]
    bf16 = load_config(None, ["llm.dtype=bfloat16"])
    assert responses.settings(bf16) != DEFAULT_KEYS["responses"]


def test_a_changed_library_or_seed_file_reruns_the_seeds_stage(tmp_path, monkeypatch):
    """The library's content is code, not config: a rewording of one phrasing must not resume on the
    old instructions (it did, and a run resumed 182 stale seeds after the library grew to 540)."""
    from autoif.stages import library

    seeds = next(s for s in STAGES if s.name == "seeds")
    embedded = load_config(None, ["seeds.builtin_library=on"])
    before = seeds.settings(embedded)
    entries = library.build_library(embedded.seed)
    reworded = [dataclasses.replace(entries[0], instruction="Reworded."), *entries[1:]]
    monkeypatch.setattr(library, "build_library", lambda *a, **k: reworded)
    assert seeds.settings(embedded) != before
    monkeypatch.undo()
    file = tmp_path / "seeds.txt"
    file.write_text("Answer in one word.\n")
    assert seeds.settings(load_config(None, ["seeds.builtin_library=on", f"seeds.file={file}"])) != before


def test_declared_reads_name_fields_and_cover_the_resources_used():
    for stage in STAGES:
        ConfigView(DEFAULT, stage.reads)  # an unknown path raises ValueError
        if stage.uses_llm:
            assert "llm" in stage.reads, stage.name
        if stage.uses_sandbox:
            assert "sandbox" in stage.reads, stage.name


def test_the_view_lets_through_only_what_is_declared():
    view: Any = ConfigView(DEFAULT, ("verify", "score.enabled", "llm.backend", "llm.model"))
    assert view.verify.threshold() == 0.5
    assert view.score.active(view.llm) is False  # a method runs on the view: its reads are checked
    assert view.llm.model == "embedded"
    for read in (lambda: view.seed, lambda: view.score.min_score, lambda: view.llm.dtype, lambda: view.export):
        with pytest.raises(UndeclaredRead):
            read()
    with pytest.raises(ValueError, match="not a config path"):
        ConfigView(DEFAULT, ("verify.nonsense",))


class _Source(Stage):
    name, output, input, output_type, sharded = "numbers", "numbers.jsonl", None, Instruction, False
    reads = ("seed",)

    def run(self, records, ctx):
        yield Instruction(id=f"n{ctx.rng('n').randrange(9)}", text="a number", source="seed")


class _Sneaky(Stage):
    """Reads verify's threshold and opens the sandbox without declaring either."""

    name, output, input, output_type = "sneaky", "sneaky.jsonl", "numbers", Instruction
    reads = ("seed",)
    touch = "config"

    def run(self, records, ctx):
        if self.touch == "config":
            ctx.config.verify.threshold()
        else:
            ctx.sandbox  # noqa: B018 (opening it is the point)
        yield from records


@pytest.mark.parametrize("touch", ["config", "sandbox"])
def test_a_stage_reading_undeclared_config_fails_instead_of_resuming_stale_output(tmp_path, touch):
    sneaky = _Sneaky()
    sneaky.touch = touch
    config = load_config(None, [f"paths.out={tmp_path}"])
    with pytest.raises(UndeclaredRead, match="verify" if touch == "config" else "sandbox"):
        Pipeline(config, stages=[_Source(), sneaky]).run()


@pytest.mark.slow
def test_changing_min_pass_rate_reexports(small_run, tmp_path, caplog):
    """The small run redone with only `verify.min_pass_rate` changed and verified.jsonl kept as it
    is (`--only export`): export runs again, at the new threshold."""
    config_file, made = small_run
    out = tmp_path / "out"
    shutil.copytree(made, out, ignore=shutil.ignore_patterns(".lock"))
    assert json.loads(config_file.read_text()).get("verify") is None  # the run used the preset's 0.5
    caplog.set_level("INFO", logger="autoif.pipeline")
    Pipeline(load_config(config_file, [f"paths.out={out}"])).run(only="export")
    assert "export: up to date" in caplog.text  # nothing changed: resumed whole
    caplog.clear()
    Pipeline(load_config(config_file, [f"paths.out={out}", "verify.min_pass_rate=0.99"])).run(only="export")
    assert "export: up to date" not in caplog.text
    assert re.search(r"export: \d+ records in 1 shard\(s\), 1 to run", caplog.text)
