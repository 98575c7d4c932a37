"""Verification functions as a reward: the pass rate of each completion over its prompt's functions.

`verifier_reward` has the signature TRL's GRPOTrainer (and RLOO, online trainers) expects from a
reward function: it receives the batch's completions and every dataset column as keyword lists,
here `functions` (the sources carried in autoif's sft.jsonl/dpo.jsonl records). Use it in your own
TRL script:

    from autoif.train.rewards import verifier_reward
    trainer = GRPOTrainer(model=..., reward_funcs=verifier_reward, train_dataset=ds_with_functions_column)

Functions run in autoif's sandbox (never in the training process); an error counts as a failure.

A completion cut off at the generation limit gets reward 0, whatever its pass rate (the rule of
`pairs.py`: a cut-off text teaches length, not the constraint). The reward tells one from the token
ids TRL passes (`completion_ids`) the way TRL itself measures `completions/clipped_ratio`: the last
id is not an end-of-sequence (or pad) id, and the completion is `max_completion_length` long. It
needs those ids, so `make_verifier_reward(sandbox, stop_ids=..., max_completion_length=...)` knows
them (`autoif train grpo` passes them); the share of truncated completions is logged through TRL's
`log_metric` as `verifier_reward/truncated`. With `quality` (a `QualityConfig`), a degenerate
completion (repetition, garbage, another language than the prompt's: `quality.drop_reasons`, the
gate verify applies) gets reward 0 too, its share logged as `verifier_reward/quality_dropped`. The
shared-sandbox `verifier_reward` knows no tokenizer and rewards the pass rate alone.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Collection, Sequence
from typing import Any

from ..pairs import TRUNCATED, truncation
from ..quality import QualityConfig, training_drops

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


def truncated(ids: Sequence[int], stop_ids: Collection[int], max_completion_length: int) -> bool:
    """Whether a completion's token ids were cut off by the length limit rather than ended."""
    return len(ids) >= max_completion_length and ids[-1] not in stop_ids


def prompt_text(prompt: Any) -> str:
    """A prompt as text: a plain string, or the user turns of chat messages."""
    if isinstance(prompt, str):
        return prompt
    return "\n".join(str(m.get("content", "")) for m in prompt if m.get("role", "user") == "user")


def make_verifier_reward(
    sandbox,
    *,
    stop_ids: Collection[int] | None = None,
    max_completion_length: int | None = None,
    quality: QualityConfig | None = None,
):
    """A TRL reward function bound to `sandbox` (an `autoif.sandbox.Sandbox` you own and close).

    With `stop_ids` (the ids that end a completion: EOS ids and pad) and `max_completion_length`,
    a truncated completion gets reward 0 and the truncated share is logged. With `quality`, so does
    a completion the quality gate drops."""

    def verifier_reward(
        prompts=None, completions=None, functions=None, completion_ids=None, log_metric=None, **kwargs
    ) -> list[float]:
        if functions is None:
            raise ValueError("verifier_reward needs a `functions` column in the training dataset")
        texts = [completion_text(c) for c in completions]
        rates = pass_rates(sandbox, functions, texts)
        # TRL (>= 0.20) passes every completion's token ids
        length_known = stop_ids is not None and max_completion_length is not None and completion_ids is not None
        finish: list[str | None] = [None] * len(texts)
        if stop_ids is not None and max_completion_length is not None and completion_ids is not None:
            finish = ["length" if truncated(ids, stop_ids, max_completion_length) else None for ids in completion_ids]
        if quality is not None and prompts is not None:
            drops = training_drops(texts, finish, [prompt_text(p) for p in prompts], quality)
        else:
            drops = [truncation(f) for f in finish]
        if log_metric is not None and texts:
            if length_known:
                log_metric("verifier_reward/truncated", sum(d == TRUNCATED for d in drops) / len(texts))
            if quality is not None:
                log_metric(
                    "verifier_reward/quality_dropped", sum(d not in (None, TRUNCATED) for d in drops) / len(texts)
                )
        return [0.0 if d else r for r, d in zip(rates, drops)]

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
