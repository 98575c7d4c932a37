"""The quality gate's rules on real SmolLM2-135M-Instruct outputs (tests/fixtures/quality/).

Each fixture line is a real answer of the embedded model with the verdict a careful reader gives
it: a reason code for degenerate text (repetition, too short, echo, wrong language, garbage), None
for an answer that must be kept. The gate must agree on every line, and every rule must be seen
firing on real text, not only on strings written for the test.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from autoif.config import load_config
from autoif.errors import ConfigError
from autoif.quality import (
    GOPHER_CODES,
    RULES,
    QualityConfig,
    RepetitionConfig,
    drop_reasons,
    quality_issue,
    quality_issues,
    repetition_fractions,
    training_drops,
    waived_rules,
)

FIXTURES = Path(__file__).parent / "fixtures" / "quality"
CASES = [json.loads(line) for path in sorted(FIXTURES.glob("*.jsonl")) for line in path.read_text().splitlines()]
DEFAULT = QualityConfig()


def verdict(case: dict, config: QualityConfig = DEFAULT, skip=None) -> str | None:
    return quality_issue(
        case["response"], case["query"], case["prompt"], config, case.get("skip", ()) if skip is None else skip
    )


def cases_expecting(*codes: str | None) -> list[dict]:
    return [case for case in CASES if case["expected"] in codes]


@pytest.mark.parametrize("case", CASES, ids=[f"{i}-{c['expected']}" for i, c in enumerate(CASES)])
def test_verdict_on_real_smollm2_output(case):
    assert verdict(case) == case["expected"], case["note"]


def test_fixtures_hold_every_kind_of_degenerate_text_and_good_answers():
    found = Counter("repetition" if c["expected"] in GOPHER_CODES else c["expected"] for c in CASES)
    assert {"too_short", "echo", "repetition", "other_language", None} <= set(found), found
    assert found[None] >= 10  # answers that must be kept: the false-positive check


@pytest.mark.parametrize("rule", GOPHER_CODES)
def test_each_gopher_rule_alone_keeps_every_good_answer(rule):
    # Only `rule` on (every other threshold at 1, which no fraction exceeds): at its published
    # threshold it never fires on an answer a careful reader keeps.
    alone = RepetitionConfig(**{code: 1.0 for code in GOPHER_CODES if code != rule})
    kept = cases_expecting(None)
    fired = [c["note"] for c in kept if repetition_fractions(c["response"], 20).get(rule, 0.0) > getattr(alone, rule)]
    assert fired == []


def test_the_gopher_rules_together_catch_every_repetitive_answer():
    repetitive = cases_expecting(*GOPHER_CODES)
    assert repetitive
    missed = [c["note"] for c in repetitive if verdict(c, skip=set(RULES) - {"repetition"}) is None]
    assert missed == []


def test_published_thresholds_are_the_defaults():
    # Rae et al. 2021, Appendix A, Table A1 (the numbers datatrove's GopherRepetitionFilter uses).
    r = load_config().quality.repetition
    assert (r.dup_line_frac, r.dup_para_frac, r.dup_line_char_frac, r.dup_para_char_frac) == (0.3, 0.3, 0.2, 0.2)
    assert (r.top_2gram_char_frac, r.top_3gram_char_frac, r.top_4gram_char_frac) == (0.2, 0.18, 0.16)
    assert [getattr(r, f"dup_{n}gram_char_frac") for n in range(5, 11)] == [0.15, 0.14, 0.13, 0.12, 0.11, 0.10]


def test_thresholds_are_config_and_bad_values_are_one_line(tmp_path):
    config = load_config(None, ["quality.min_words=3", "quality.repetition.dup_line_frac=0.5"])
    assert config.quality.min_words == 3 and config.quality.repetition.dup_line_frac == 0.5
    with pytest.raises(ConfigError) as info:
        load_config(None, ["quality.repetition.dup_line_frac=2"])
    assert "dup_line_frac" in str(info.value) and "\n" not in str(info.value)


def test_the_gate_switched_off_keeps_everything():
    off = QualityConfig(enabled=False)
    assert all(verdict(c, off) is None for c in CASES)


def test_unknown_rule_to_skip_is_refused():
    with pytest.raises(ValueError, match="unknown quality rule"):
        quality_issues(["text"], "q", "p", DEFAULT, skip=["too_shrot"])


def test_a_rule_the_instructions_own_cases_break_is_waived():
    short = ["Paris is the capital.", "It is Paris."]
    assert waived_rules(short, "Answer in at most five words.", DEFAULT) == {"too_short"}
    restated = ["Tell me what I should do first. Tell me what I should do first."]
    assert "echo" in waived_rules(restated, "Start by restating 'Tell me what I should do first.'", DEFAULT)
    prose = [" ".join(["A plain sentence that says something useful about the topic."] * 1)]
    assert waived_rules(prose, "Answer plainly.", DEFAULT) == frozenset()


def test_truncation_comes_first_and_training_leaves_waivable_rules_to_verify():
    good = next(c for c in CASES if c["expected"] is None)
    short = "Paris."
    reasons = drop_reasons(
        [good["response"], good["response"], short], ["length", "stop", "stop"], good["query"], good["prompt"], DEFAULT
    )
    assert reasons == ["truncated", None, "too_short"]
    # A training prompt has no test cases: too short and echo are verify's to judge.
    assert training_drops([short, good["response"]], [None, "length"], [good["prompt"]] * 2, DEFAULT) == [
        None,
        "truncated",
    ]
    repetitive = next(c for c in CASES if c["expected"] in GOPHER_CODES)
    assert training_drops([repetitive["response"]], [None], [repetitive["prompt"]], DEFAULT) == [repetitive["expected"]]
