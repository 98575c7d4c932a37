"""Stage queries: K real user queries per instruction, seeded per instruction, joined by every template."""

import json

from support import config

from autoif.executors import run_shard
from autoif.records import CrossvalRecord
from autoif.stages.base import Context
from autoif.stages.queries import QueriesStage, closed, join_templates


def instruction_records(n):
    return [
        CrossvalRecord(
            instruction_id=f"i{i}", instruction=f"Answer in exactly {i + 2} sentences", functions=[], cases=[]
        )
        for i in range(n)
    ]


def test_queries_are_seeded_per_instruction_and_use_every_template(tmp_path):
    instructions = instruction_records(30)
    cfg = config(tmp_path, "queries.k=4")
    stage = QueriesStage()
    whole = run_shard(stage, instructions, Context(cfg)).records
    # Other shard boundaries and order give the same queries per instruction.
    parts = [run_shard(stage, instructions[i : i + 7], Context(cfg)).records for i in range(0, len(instructions), 7)]
    assert [r.model_dump() for part in parts for r in part] == [r.model_dump() for r in whole]
    reversed_run = run_shard(stage, instructions[::-1], Context(cfg)).records
    assert sorted(r.id for r in reversed_run) == sorted(r.id for r in whole)

    assert len(whole) == 4 * len(instructions)
    for record in instructions:
        mine = [r for r in whole if r.instruction_id == record.instruction_id]
        assert len({r.query for r in mine}) == 4
        for r in mine:
            assert closed(r.instruction) in r.prompt and closed(r.query) in r.prompt
            assert r.id.startswith("q-") and r.instruction == record.instruction
    used = {
        next(
            i
            for i, t in enumerate(join_templates())
            if r.prompt == t.format(instruction=closed(r.instruction), query=closed(r.query))
        )
        for r in whole
    }
    assert used == set(range(len(join_templates())))
    first = [r.prompt.index(closed(r.instruction)) < r.prompt.index(closed(r.query)) for r in whole]
    assert any(first) and not all(first)  # instruction before the query in some prompts, after in others

    other_seed = run_shard(stage, instructions, Context(config(tmp_path, "queries.k=4", "seed=7"))).records
    assert [r.query for r in other_seed] != [r.query for r in whole]


def test_queries_k_larger_than_the_pool(tmp_path):
    pool = tmp_path / "pool.jsonl"
    pool.write_text(
        "".join(json.dumps({"prompt": f"Question number {i} about cooking rice?"}) + "\n" for i in range(3))
    )
    result = run_shard(
        QueriesStage(), instruction_records(2), Context(config(tmp_path, f"queries.source={pool}", "queries.k=5"))
    )
    assert len(result.records) == 6 and result.counts == {"pool_smaller_than_k": 2}
