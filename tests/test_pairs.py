"""DPO pairing, shared by the export stage and online DPO: bounds, spread, dedup, seeding and the
truncation rule."""

import random

import pytest
from pydantic import ValidationError

from autoif.config import ExportConfig
from autoif.pairs import TRUNCATED, PairBounds, pair_sides, pair_up, truncation
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
    sides = pair_sides(texts, rates, ExportConfig())
    assert sides == (["perfect", "half"], ["none", "none", "other none"])
    export = pair_up(*sides, ExportConfig(), random.Random(3))
    assert online == export and len(online) == 4
    # Export keeps a text from the chosen side for its own reasons (a low relevance score): not a chosen,
    # still a rejected where its pass rate allows.
    assert pair_sides(texts, rates, ExportConfig(), choosable=[False, True, False, True, True, True]) == (
        ["half"],
        ["none", "none", "other none"],
    )


def test_a_truncated_text_is_never_chosen_and_rejected_only_when_asked():
    bounds, asked = PairBounds(), PairBounds(truncated_rejected=True)
    assert bounds.may_choose(1.0) and not bounds.may_choose(1.0, "truncated")
    assert bounds.may_reject(0.0) and not bounds.may_reject(0.0, "truncated")
    assert asked.may_reject(0.0, "truncated") and not asked.may_choose(1.0, "truncated")
    assert not asked.may_reject(0.5, "truncated")  # the pass-rate bound still holds
    # Any other drop reason (e.g. a quality rule's) is neither side, whatever is asked.
    assert not asked.may_choose(1.0, "dup_line_frac") and not asked.may_reject(0.0, "dup_line_frac")
    assert truncation("length") == TRUNCATED and truncation("stop") is None and truncation(None) is None


def test_online_dpo_pairs_apply_the_truncation_rule():
    texts = ["whole and right", "cut off but passing", "whole and wrong", "cut off and wrong"]
    rates = [1.0, 1.0, 0.0, 0.0]
    drops = [None, TRUNCATED, None, TRUNCATED]
    pairs = build_pairs(texts, rates, OnlineDPOSettings(), random.Random(0), drops)
    assert pairs == [("whole and right", "whole and wrong")]
    asked = build_pairs(texts, rates, OnlineDPOSettings(truncated_rejected=True), random.Random(0), drops)
    assert sorted(asked) == [("whole and right", "cut off and wrong"), ("whole and right", "whole and wrong")]
    # The same texts through the export's config pair the same way.
    export = ExportConfig(truncated_rejected=True)
    assert pair_up(*pair_sides(texts, rates, export, drops), export, random.Random(0)) == asked
