"""The pipeline's own mechanics (sharding, resume, funnel, errors) with two small real stages."""

import json

import pytest

from autoif.config import load_config
from autoif.errors import AutoifError
from autoif.pipeline import Pipeline
from autoif.records import Instruction
from autoif.stages.base import Drop, Stage

CALLS: list[int] = []


class NumbersStage(Stage):
    name = "numbers"
    output = "numbers.jsonl"
    input = None
    output_type = Instruction
    sharded = False
    count, text = 10, "number {}"

    def run(self, records, ctx):
        for i in range(self.count):
            yield Instruction(id=f"n{i}", text=self.text.format(i), source="seed")


class EvensStage(Stage):
    """Keeps even numbers; can be told to die after some shards, like a killed process."""

    name = "evens"
    output = "evens.jsonl"
    input = "numbers"
    output_type = Instruction
    reads = ("seed",)  # its resume key: changing the seed reruns it
    die_after: int | None = None

    def run(self, records, ctx):
        if EvensStage.die_after is not None and len(CALLS) >= EvensStage.die_after:
            raise KeyboardInterrupt
        CALLS.append(len(records))
        for r in records:
            n = int(r.id[1:])
            ctx.count("seen")
            yield r if n % 2 == 0 else Drop(r, "odd")


@pytest.fixture
def stages():
    CALLS.clear()
    EvensStage.die_after = None


def make(tmp_path, *sets):
    config = load_config(None, [f"paths.out={tmp_path}", "executor.shard_size=3", *sets])
    return Pipeline(config, stages=[NumbersStage(), EvensStage()])


def test_run_writes_outputs_and_funnel(tmp_path, stages):
    funnel = make(tmp_path).run()
    assert [json.loads(line)["id"] for line in (tmp_path / "evens.jsonl").read_text().splitlines()] == [
        "n0",
        "n2",
        "n4",
        "n6",
        "n8",
    ]
    assert funnel["stages"]["evens"]["in"] == 10 and funnel["stages"]["evens"]["out"] == 5
    assert funnel["stages"]["evens"]["dropped"] == {"odd": 5}
    assert funnel["stages"]["evens"]["counts"] == {"seen": 10}
    assert json.loads((tmp_path / "funnel.json").read_text()) == funnel
    assert CALLS == [3, 3, 3, 1]


def test_interrupted_stage_resumes_from_finished_shards(tmp_path, stages):
    EvensStage.die_after = 2
    with pytest.raises(KeyboardInterrupt):
        make(tmp_path).run()
    assert not (tmp_path / "evens.jsonl").exists()
    EvensStage.die_after = None
    CALLS.clear()
    make(tmp_path).run()
    assert CALLS == [3, 1]  # only the two shards that had not finished
    assert len((tmp_path / "evens.jsonl").read_text().splitlines()) == 5


def test_finished_stage_is_skipped_until_settings_change(tmp_path, stages):
    make(tmp_path).run()
    CALLS.clear()
    make(tmp_path).run()
    assert CALLS == []
    make(tmp_path).run(force=True)
    assert CALLS == [3, 3, 3, 1]
    CALLS.clear()
    make(tmp_path, "verify.min_pass_rate=0.9").run()  # a setting no stage here reads
    assert CALLS == []
    make(tmp_path, "seed=7").run()  # a setting evens reads
    assert CALLS == [3, 3, 3, 1]


def test_only_and_until(tmp_path, stages):
    with pytest.raises(AutoifError, match=r"stage 'evens' needs .*numbers.jsonl; run `autoif run --until numbers`"):
        make(tmp_path).run(only="evens")
    make(tmp_path).run(until="numbers")
    assert not (tmp_path / "evens.jsonl").exists()
    make(tmp_path).run(only="evens")
    assert (tmp_path / "evens.jsonl").exists()
    with pytest.raises(AutoifError, match="unknown stage 'even' \\(did you mean 'evens'\\?\\)"):
        make(tmp_path).run(only="even")


def test_bad_input_record_names_file_and_line(tmp_path, stages):
    make(tmp_path).run(until="numbers")
    (tmp_path / "numbers.jsonl").write_text('{"id": "a", "text": "x", "source": "seed"}\n{"id": "b"}\n')
    with pytest.raises(AutoifError, match=r"numbers.jsonl line 2: text: Field required"):
        make(tmp_path).run(only="evens")


def test_funnel_table_shows_this_runs_llm_use_not_an_earlier_runs(tmp_path, stages):
    from rich.console import Console

    pipeline = make(tmp_path)
    funnel = pipeline.run()
    # As an earlier run with an LLM stage leaves it: funnel.json keeps the LLM counts of that run.
    funnel["llm"] = {"backend": "local", "model": "embedded", "hits": 3, "misses": 7}
    (tmp_path / "funnel.json").write_text(json.dumps(funnel))
    again = make(tmp_path)
    funnel = again.run(only="evens", force=True)
    assert funnel["llm"]["misses"] == 7  # the record of that earlier run stays in the file
    console = Console(width=200, record=True)
    console.print(again.funnel_table(funnel, ["evens"]))
    text = console.export_text()
    assert "LLM samples: none requested by this run" in text and "7 generated" not in text
    assert "numbers (earlier)" in text
