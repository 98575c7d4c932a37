"""The dev hold-out (devsplit.py): a stable hash rule, a library whose training side never holds a
dev phrasing or dev parameters, a queries stage that never draws a dev query from the built-in pool,
and training prompts that share no 13-gram with the dev set."""

from __future__ import annotations

import json

import pytest

from autoif.config import QueriesConfig, load_config
from autoif.devsplit import DEV_SHARE, dev_score, is_dev, params_key, phrasing_key, query_key
from autoif.evals import contamination
from autoif.evals.dev import dev_records
from autoif.executors import run_shard
from autoif.records import CrossvalRecord
from autoif.stages.base import Context
from autoif.stages.library import CONSTRAINTS, build_library, params_held_out, split_phrasings
from autoif.stages.queries import QueriesStage
from autoif.stages.querypool import load_queries

SEEDS = (0, 7, 42)


def config(tmp_path, *sets):
    return load_config(None, [f"paths.out={tmp_path}", *sets])


def test_the_rule_is_a_fixed_hash_of_the_key():
    # Pinned: a change of the rule would move data between training and the dev set unnoticed.
    assert dev_score("query\x00how do i x") == pytest.approx(0.34013, abs=1e-5)
    assert [is_dev(f"k{i}") for i in range(12)] == [dev_score(f"k{i}") < DEV_SHARE for i in range(12)]
    share = sum(is_dev(f"key {i}") for i in range(20_000)) / 20_000
    assert share == pytest.approx(DEV_SHARE, abs=0.01)
    # One query, however it is spaced or cased, is on one side.
    assert query_key("  How DO  I\n x ") == query_key("how do i x")
    # Canonical JSON: key order does not matter, values do.
    assert params_key("c:x", {"a": 1, "b": "y"}) == params_key("c:x", {"b": "y", "a": 1})
    assert params_key("c:x", {"a": 1}) != params_key("c:y", {"a": 1}) != phrasing_key("c:x", '{"a":1}')


def test_every_constraint_has_train_and_dev_phrasings():
    for cid, constraint in CONSTRAINTS.items():
        train, dev = split_phrasings(cid, "train"), split_phrasings(cid, "dev")
        assert train and dev and not set(train) & set(dev), cid
        assert set(train) | set(dev) == set(constraint.phrasings), cid
    # Parameters are held out wherever the space allows: about half the constraints have parameter
    # spaces large enough (the others have none, or one or two values).
    assert sum(map(params_held_out, CONSTRAINTS)) >= 20


def phrasing_of(entry) -> str:
    """The phrasing an entry's instruction was formatted from."""
    constraint = CONSTRAINTS[entry.constraint]
    fields = {**entry.params, **constraint.fields(entry.params)}
    (phrasing,) = [p for p in constraint.phrasings if p.format(**fields) == entry.instruction]
    return phrasing


@pytest.mark.parametrize("split", ["train", "dev"])
def test_the_library_yields_one_side_only(split):
    for seed in SEEDS:
        entries = build_library(seed, per_constraint=12, split=split)
        assert {e.constraint for e in entries} == set(CONSTRAINTS)
        for e in entries:
            assert phrasing_of(e) in split_phrasings(e.constraint, split), e.id
            if params_held_out(e.constraint):
                assert is_dev(params_key(e.constraint, e.params)) == (split == "dev"), e.id
    with pytest.raises(ValueError, match="split must be one of train, dev"):
        build_library(0, split="test")


def instruction_records(entries):
    return [
        CrossvalRecord(instruction_id=f"lib-{e.id}", instruction=e.instruction, functions=[], cases=[]) for e in entries
    ]


def test_queries_stage_never_draws_a_dev_query_from_the_builtin_pool(tmp_path):
    pool = load_queries(QueriesConfig())
    dev = {q for q in pool if is_dev(query_key(q))}
    assert len(dev) >= 40  # the dev set's queries
    records = run_shard(
        QueriesStage(),
        instruction_records(build_library(42, per_constraint=3)),
        Context(config(tmp_path, "queries.k=8")),
    ).records
    drawn = {r.query for r in records}
    assert not drawn & dev
    assert len(drawn) >= 0.9 * (len(pool) - len(dev))  # ... and the training side is all in use

    # Another pool (ShareGPT holds real queries too) loses the dev set's queries, in any spelling.
    others = [f"Tell me a story about a robot number {i} who learns to paint." for i in range(8)]
    spelled = [" ".join(q.upper().split()) + "  " for q in sorted(dev)]
    file = tmp_path / "pool.jsonl"
    file.write_text("".join(json.dumps({"prompt": q}) + "\n" for q in spelled + others))
    other = run_shard(
        QueriesStage(),
        instruction_records(build_library(42)[:5]),
        Context(config(tmp_path, f"queries.source={file}", "queries.k=4")),
    ).records
    assert {r.query for r in other} <= set(others) and len(other) == 20


def test_training_prompts_share_no_ngram_with_the_dev_set(tmp_path):
    """A run's training prompts made from the built-in library and pool, as the queries stage joins
    them, checked by the contamination test every run ends with: no overlap; a leaked dev prompt is
    found."""
    records = run_shard(
        QueriesStage(),
        instruction_records(build_library(42, per_constraint=2)),
        Context(config(tmp_path, "queries.k=4")),
    ).records
    leaked = dev_records()[7]["prompt"]
    run = tmp_path / "run"
    run.mkdir()
    for name, prompts in (("clean", [r.prompt for r in records]), ("leaky", [r.prompt for r in records] + [leaked])):
        (run / "sft.jsonl").write_text(
            "".join(
                json.dumps({"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": "ok"}]})
                + "\n"
                for p in prompts
            )
        )
        report = contamination(run, ["dev"])["benchmarks"]["dev"]
        assert report["overlapping_training_prompts"] == (name == "leaky"), report["top_pairs"][:1]
