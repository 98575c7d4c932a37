"""GSM8K (Cobbe et al. 2021): 1,319 grade-school math word problems (`autoif eval gsm8k`), zero-shot,
greedy, scored as lm-evaluation-harness's `gsm8k` task scores them:

- the prompt is its "Question: {question}\\nAnswer:", asked in one user turn (the chat template
  applies; lm-eval's default is 5-shot on a base model, so numbers differ from its headline ones);
- strict: the number after the first "#### " of the answer (the dataset's own answer format);
  flexible: the last number in the answer (lm-eval's "flexible-extract" regex);
- both, and the reference (the number after "#### " in the dataset's solution), lose commas, "$",
  a leading "...#### " and a trailing "." and are compared case-insensitively (its exact_match).

No package ships GSM8K: the data is the hub's openai/gsm8k ("main", test split) or a local file of
{"question", "answer"} records (the hub's format).
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import AutoifError
from .base import Benchmark, EvalContext, Item, PromptScores, Scores

STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")
IGNORED = [re.compile(p) for p in (",", r"\$", r"(?s).*#### ", r"\.$")]
INVALID = "[invalid]"


def normalize(text: str) -> str:
    for pattern in IGNORED:
        text = pattern.sub("", text)
    return text.strip().lower()


def strict_answer(response: str) -> str:
    found = STRICT.search(response)
    return found.group(1) if found else INVALID


def flexible_answer(response: str) -> str:
    found = FLEXIBLE.findall(response)
    if not found:
        return INVALID
    return next((group for group in found[-1] if group), INVALID)


class GSM8K(Benchmark):
    name = "gsm8k"
    title = "GSM8K"
    hub_id = "openai/gsm8k"
    hub_split = "test"
    metric_labels = {"exact_match_strict": "exact match, strict", "exact_match_flexible": "exact match, flexible"}
    paired_metrics = {
        "exact_match_strict": (("strict", "problem"),),
        "exact_match_flexible": (("flexible", "problem"),),
    }
    prompt_level_metrics = frozenset({"exact_match_strict", "exact_match_flexible"})
    outcome_modes = ("flexible", "strict")
    published_fields = ("prompt", "response", "target", "strict", "flexible")

    def offline_hint(self) -> str:
        return "no package ships GSM8K: pass --data FILE ({question, answer} records) or the hub id openai/gsm8k"

    def hub_records(self, datasets: Any, dataset_id: str) -> list[dict]:
        return [dict(r) for r in datasets.load_dataset(dataset_id, "main", split=self.hub_split)]

    def items(self, records: list[dict], source: str) -> list[Item]:
        items = []
        for n, r in enumerate(records, 1):
            if (
                not isinstance(r.get("question"), str)
                or not isinstance(r.get("answer"), str)
                or "####" not in r["answer"]
            ):
                raise AutoifError(f"{source} record {n}: expected 'question' and an 'answer' ending in '#### <number>'")
            items.append(Item(id=str(r.get("id", n - 1)), prompt=f"Question: {r['question']}\nAnswer:", record=r))
        return items

    def score(self, items: list[Item], responses: list[str], context: EvalContext) -> Scores:
        per_item: list[dict[str, Any]] = []
        for item, response in zip(items, responses):
            target = normalize(item.record["answer"].split("####")[-1])
            strict, flexible = strict_answer(response), flexible_answer(response)
            per_item.append(
                {
                    "target": target,
                    "strict_answer": strict,
                    "flexible_answer": flexible,
                    "strict": int(normalize(strict) == target),
                    "flexible": int(normalize(flexible) == target),
                }
            )
        n = len(items)
        return Scores(
            metrics={
                "exact_match_strict": sum(r["strict"] for r in per_item) / n,
                "exact_match_flexible": sum(r["flexible"] for r in per_item) / n,
            },
            counts={"problems": n, "no_strict_answer": sum(r["strict_answer"] == INVALID for r in per_item)},
            per_item=per_item,
        )

    def prompt_scores(self, row: dict) -> PromptScores:
        strict, flexible = float(int(row["strict"])), float(int(row["flexible"]))
        return PromptScores(
            task=str(row["target"]),
            columns={"problem": 1.0, "strict": strict, "flexible": flexible},
            outcomes=[("gsm8k", {"strict": strict, "flexible": flexible})],
        )


BENCHMARK = GSM8K()
