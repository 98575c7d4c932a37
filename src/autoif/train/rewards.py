"""Verification functions as a reward: the pass rate of each completion over its prompt's functions.

`verifier_reward` has the signature TRL's GRPOTrainer (and RLOO, online trainers) expects from a
reward function: it receives the batch's completions and every dataset column as keyword lists,
here `functions` (the sources carried in autoif's sft.jsonl/dpo.jsonl records). Use it in your own
TRL script:

    from autoif.train.rewards import verifier_reward
    trainer = GRPOTrainer(model=..., reward_funcs=verifier_reward, train_dataset=ds_with_functions_column)

Functions run in autoif's sandbox (never in the training process); an error counts as a failure.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Sequence
from typing import Any

_lock = threading.Lock()
_default_sandbox = None


def completion_text(completion: Any) -> str:
    """A completion as text: TRL passes plain strings, or chat messages for conversational data."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    return "".join(str(m.get("content", "")) for m in completion if m.get("role", "assistant") == "assistant")


def pass_rates(sandbox, functions: Sequence[Sequence[str]], texts: Sequence[str]) -> list[float]:
    """Pass rate of texts[i] over functions[i]; completions sharing a function list share one grid."""
    from ..sandbox import pass_rate

    groups: dict[tuple[str, ...], list[int]] = {}
    for i, funcs in enumerate(functions):
        groups.setdefault(tuple(funcs), []).append(i)
    keys = [k for k in groups if k]
    grids = sandbox.check_many([(list(k), [texts[i] for i in groups[k]]) for k in keys]) if keys else []
    rates = [0.0] * len(texts)  # no functions: nothing verifies the completion, so no reward
    for key, grid in zip(keys, grids):
        for col, i in enumerate(groups[key]):
            rates[i] = pass_rate([row[col] for row in grid])
    return rates


def make_verifier_reward(sandbox):
    """A TRL reward function bound to `sandbox` (an `autoif.sandbox.Sandbox` you own and close)."""

    def verifier_reward(prompts=None, completions=None, functions=None, **kwargs) -> list[float]:
        if functions is None:
            raise ValueError("verifier_reward needs a `functions` column in the training dataset")
        return pass_rates(sandbox, functions, [completion_text(c) for c in completions])

    verifier_reward.__name__ = "verifier_reward"
    return verifier_reward


def _shared_sandbox():
    global _default_sandbox
    with _lock:
        if _default_sandbox is None:
            from ..sandbox import Sandbox

            _default_sandbox = Sandbox()
            atexit.register(_default_sandbox.close)
        return _default_sandbox


def verifier_reward(prompts=None, completions=None, functions=None, **kwargs) -> list[float]:
    """Pass rate of each completion over its prompt's functions, in a sandbox shared by the process."""
    return make_verifier_reward(_shared_sandbox())(prompts, completions, functions, **kwargs)
