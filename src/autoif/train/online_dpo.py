"""`autoif train online-dpo`: the paper's iterative online DPO, the loop TRL does not have.

For N iterations: the current policy samples K responses per prompt (temperature 0.8; vLLM when it
is installed and a GPU is present, else transformers batched generation, both through autoif's LLM
layer), the sandbox scores every response with the functions carried in the records, pairs are
built as the export stage builds them (`pairs.pair_up`: chosen pass rate >= 0.5, rejected = 0 by
default, at most `max_pairs_per_prompt` spread over different samples), one DPO pass runs, and the next iteration
samples from the updated policy. TRL's OnlineDPOTrainer is not used: it trains on pairs whose two
rewards may be equal, which for 0/1 verifier rewards is noise.

Each iteration's policy is saved under `output_dir/iter-N` and its numbers appended to
`output_dir/online_dpo_log.jsonl`, so an interrupted run resumes at the first unfinished iteration.
"""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path
from typing import Literal

from pydantic import Field

from ..errors import AutoifError
from ..jsonl import atomic_write_text
from ..pairs import PairBounds, pair_up
from ..seeding import seeded_rng
from .common import load_model_and_tokenizer, prompts_with_functions, read_records
from .dpo import DPOSettings, run_dpo
from .rewards import pass_rates

log = logging.getLogger("autoif.train")

LOG_FILE = "online_dpo_log.jsonl"


class OnlineDPOSettings(PairBounds, DPOSettings):
    """Iterative online DPO: sample, verify, pair, DPO; repeat."""

    output_dir: str = Field("autoif-train/online-dpo", description="per-iteration policies and the log go here")
    data_file: str = Field("sft.jsonl", description="prompts (with functions) from this file of a run directory")
    iterations: int = Field(3, ge=1, description="sample-verify-train rounds")
    samples_per_prompt: int = Field(8, ge=2, description="responses the policy samples per prompt (K)")
    temperature: float = Field(0.8, ge=0, le=2, description="sampling temperature of the policy")
    max_new_tokens: int = Field(512, ge=8, description="longest sampled response")
    max_prompts: int | None = Field(None, ge=1, description="prompts used (a seeded sample; None: all)")
    num_train_epochs: float = Field(1, gt=0, description="DPO passes over each iteration's pairs")
    sampler: Literal["auto", "local", "vllm"] = Field(
        "auto", description="who samples: vllm (GPU), local (transformers), auto (vllm when usable)"
    )
    sampling_batch_size: int = Field(16, ge=1, description="local sampler: sequences generated together")
    final_eval: bool = Field(True, description="sample once more after the last iteration to measure the result")


def build_pairs(
    responses: list[str], rates: list[float], bounds: PairBounds, rng: random.Random
) -> list[tuple[str, str]]:
    """(chosen, rejected) pairs of one prompt's samples, by their pass rates."""
    chosen = [r for r, p in zip(responses, rates) if bounds.may_choose(p)]
    rejected = [r for r, p in zip(responses, rates) if bounds.may_reject(p)]
    return pair_up(chosen, rejected, bounds, rng)


def sampler_kind(settings: OnlineDPOSettings) -> str:
    if settings.sampler != "auto":
        return settings.sampler
    import importlib.util

    import torch

    return "vllm" if torch.cuda.is_available() and importlib.util.find_spec("vllm") else "local"


def sample(policy_path: str, prompts: list[dict], settings: OnlineDPOSettings, iteration: int) -> list[list[str]]:
    """K responses per prompt from the policy saved at `policy_path`, through autoif's LLM layer."""
    from ..config import LLMConfig
    from ..llm import Request, Sampling, backend_class

    llm = LLMConfig(
        backend=sampler_kind(settings), model=policy_path, batch_size=settings.sampling_batch_size, cache=False
    )
    backend = backend_class(llm.backend).from_config(llm)
    try:
        requests = [
            Request(
                messages=p["prompt"],
                n=settings.samples_per_prompt,
                sampling=Sampling(
                    temperature=settings.temperature,
                    max_tokens=settings.max_new_tokens,
                    seed=settings.seed + 1000 * iteration,
                ),
            )
            for p in prompts
        ]
        answers = backend.generate(requests, desc=f"online-dpo: sampling (iteration {iteration})")
    finally:
        backend.close()
    return [[str(c) for c in completions if not c.error] for completions in answers]


def train(settings: OnlineDPOSettings) -> Path:
    from ..sandbox import Sandbox

    prompts = prompts_with_functions(read_records(settings, ("functions",)))
    if not prompts:
        raise AutoifError(f"{settings.data}: no prompt carries verification functions")
    if settings.max_prompts and len(prompts) > settings.max_prompts:
        prompts = seeded_rng(settings.seed, "online-dpo.prompts").sample(prompts, settings.max_prompts)
    out = Path(settings.output_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    history = _read_log(out)
    policy_path = _start_policy(settings, out, history)
    last = len(history)
    with Sandbox() as sandbox:
        for iteration in range(last, settings.iterations + (1 if settings.final_eval else 0)):
            responses = sample(policy_path, prompts, settings, iteration)
            functions = [p["functions"] for p, rs in zip(prompts, responses) for _ in rs]
            flat = [r for rs in responses for r in rs]
            rates = pass_rates(sandbox, functions, flat)
            per_prompt, i = [], 0
            for rs in responses:
                per_prompt.append(rates[i : i + len(rs)])
                i += len(rs)
            mean = sum(rates) / len(rates) if rates else 0.0
            if iteration == settings.iterations:  # the final measurement, no training
                _append_log(
                    out,
                    {"iteration": iteration, "policy": policy_path, "mean_pass_rate": mean, "evaluation_only": True},
                )
                log.info("online-dpo: final policy mean pass rate %.3f", mean)
                break
            rows = []
            no_pair = 0
            for n, (prompt, rs, ps) in enumerate(zip(prompts, responses, per_prompt)):
                pairs = build_pairs(rs, ps, settings, seeded_rng(settings.seed, "online-dpo.pairs", iteration, n))
                no_pair += not pairs
                rows += [
                    {
                        "prompt": prompt["prompt"],
                        "chosen": [{"role": "assistant", "content": c}],
                        "rejected": [{"role": "assistant", "content": r}],
                    }
                    for c, r in pairs
                ]
            entry = {
                "iteration": iteration,
                "policy": policy_path,
                "mean_pass_rate": mean,
                "pairs": len(rows),
                "prompts_without_pair": no_pair,
                "prompts": len(prompts),
            }
            log.info(
                "online-dpo iteration %d: mean pass rate %.3f, %d pairs, %d/%d prompts without a pair",
                iteration,
                mean,
                len(rows),
                no_pair,
                len(prompts),
            )
            if not rows:
                _append_log(out, {**entry, "stopped": "no pairs"})
                log.warning("online-dpo: no pair could be built at iteration %d; stopping", iteration)
                break
            model, tokenizer = load_model_and_tokenizer(settings, model=policy_path)
            trainer = run_dpo(
                settings,
                rows,
                model,
                tokenizer,
                out / f"iter-{iteration + 1}-checkpoints",
                epochs=settings.num_train_epochs,
            )
            next_path = out / f"iter-{iteration + 1}"
            trainer.save_model(str(next_path))
            tokenizer.save_pretrained(str(next_path))
            # The run's mean loss (logged once at the end), else the last logged step's.
            losses = [
                h.get("train_loss", h.get("loss"))
                for h in trainer.state.log_history
                if "train_loss" in h or "loss" in h
            ]
            _append_log(out, {**entry, "train_loss": losses[-1] if losses else None, "saved": str(next_path)})
            policy_path = str(next_path)
    return Path(policy_path)


def _read_log(out: Path) -> list[dict]:
    path = out / LOG_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _append_log(out: Path, entry: dict) -> None:
    history = _read_log(out) + [entry]
    atomic_write_text(out / LOG_FILE, "".join(json.dumps(e) + "\n" for e in history))


def _start_policy(settings: OnlineDPOSettings, out: Path, history: list[dict]) -> str:
    """The policy to sample from: the last saved iteration when resuming, else the configured model."""
    from ..llm.embedded import resolve_model

    for entry in reversed(history):
        if entry.get("saved") and Path(entry["saved"]).is_dir():
            log.info("online-dpo: resuming after iteration %d", entry["iteration"])
            return entry["saved"]
    return resolve_model(settings.model, settings.cache_dir)
