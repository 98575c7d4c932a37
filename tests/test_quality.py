"""The quality gate's rules on real SmolLM2-135M-Instruct outputs (tests/fixtures/quality/).

Each fixture line is a real answer of the embedded model with the verdict a careful reader gives
it: a reason code for degenerate text (repetition, too short, echo, wrong language, garbage), None
for an answer that must be kept. The gate must agree on every line, and every rule must be seen
firing on real text, not only on strings written for the test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autoif.quality import (
    QualityConfig,
    quality_issue,
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
