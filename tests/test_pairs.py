"""DPO pairing, shared by the export stage and online DPO: bounds, spread, dedup and seeding."""

import random

import pytest
from pydantic import ValidationError

from autoif.config import ExportConfig
from autoif.pairs import PairBounds, pair_up
from autoif.train.online_dpo import OnlineDPOSettings, build_pairs

FOUR = PairBounds(max_pairs_per_prompt=4)


def test_pair_up_spreads_over_texts():
    pairs = pair_up(["a", "b", "c"], ["x", "y", "z"], FOUR, random.Random(0))
    assert len(set(pairs)) == 4
    assert {c for c, _ in pairs} == {"a", "b", "c"} and {r for _, r in pairs} == {"x", "y", "z"}
    assert pair_up(["a"], ["x", "y"], FOUR, random.Random(0)) in ([("a", "x"), ("a", "y")], [("a", "y"), ("a", "x")])
    assert pair_up(["a"], [], FOUR, random.Random(0)) == []
    nine = PairBounds(max_pairs_per_prompt=9)
    assert pair_up(["a", "b"], ["x", "y"], nine, random.Random(1)) == pair_up(
        ["a", "b"], ["x", "y"], nine, random.Random(1)
    )


def test_pair_up_takes_each_text_once_and_never_pairs_a_text_with_itself():
    pairs = pair_up(["a", "a", "b"], ["b", "x", "x"], FOUR, random.Random(0))
    assert sorted(pairs) == [("a", "b"), ("a", "x"), ("b", "x")]


def test_bounds_must_separate_chosen_from_rejected():
    with pytest.raises(ValidationError, match=r"rejected_max_pass_rate \(0.5\) must be below chosen_min_pass_rate"):
        PairBounds(chosen_min_pass_rate=0.5, rejected_max_pass_rate=0.5)
    with pytest.raises(ValidationError, match="must be below"):
        OnlineDPOSettings(rejected_max_pass_rate=0.75)


def test_export_and_online_dpo_share_the_bounds_and_the_pairs():
    """The same rated texts and generator give the same pairs in both, under the paper's defaults."""
    assert ExportConfig().model_dump(include=set(PairBounds.model_fields)) == PairBounds().model_dump()
    assert OnlineDPOSettings().model_dump(include=set(PairBounds.model_fields)) == PairBounds().model_dump()
    texts = ["perfect", "half", "none", "none", "quarter", "other none"]
    rates = [1.0, 0.5, 0.0, 0.0, 0.25, 0.0]
    online = build_pairs(texts, rates, OnlineDPOSettings(), random.Random(3))
    export = pair_up(["perfect", "half"], ["none", "other none"], ExportConfig(), random.Random(3))
    assert online == export and len(online) == 4
