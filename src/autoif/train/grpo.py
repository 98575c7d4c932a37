"""`autoif train grpo`: GRPO (TRL's GRPOTrainer) with the verification functions as the reward.

Beyond the paper: instead of building DPO pairs, every group of completions of a prompt is scored
by `autoif.train.rewards.verifier_reward` (pass rate over the prompt's functions, run in the sandbox)
and the policy is pushed towards the completions that pass more. A completion cut off at
`max_completion_length` gets reward 0 (the truncation rule of `pairs.py`), its share logged as
`verifier_reward/truncated`; so does a degenerate completion (the quality gate, `quality_gate`),
logged as `verifier_reward/quality_dropped`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from ..errors import require
from ..quality import QualityConfig
from ..rundir import SFT
from .common import (
    TrainSettings,
    load_model_and_tokenizer,
    peft_config,
    prompts_with_functions,
    read_records,
    resume_checkpoint,
    save_final,
    trl_args,
)
from .end_of_turn import stop_at_end_of_turn
from .rewards import make_verifier_reward


class GRPOSettings(TrainSettings):
    """GRPO with the verifier reward."""

    output_dir: str = Field("autoif-train/grpo", description="checkpoints and the final model go here")
    data_file: str = Field(SFT.name, description="prompts (with functions) from this file of a run directory")
    learning_rate: float = Field(1e-6, gt=0, description="peak learning rate")
    lr_scheduler_type: str = Field("cosine", description="learning-rate schedule (transformers name)")
    warmup_steps: float = Field(0.1, ge=0, description="warm-up: steps when >= 1, a fraction of all steps when < 1")
    num_train_epochs: float = Field(1, gt=0, description="passes over the prompts")
    global_batch_size: int = Field(64, ge=1, description="completions per optimizer step, over all devices")
    per_device_batch_size: int = Field(8, ge=1, description="completions per forward pass on one device")
    num_generations: int = Field(8, ge=2, description="completions sampled per prompt (the group)")
    max_completion_length: int = Field(512, ge=8, description="longest sampled completion")
    temperature: float = Field(0.8, gt=0, le=2, description="sampling temperature")
    max_length: int = Field(
        8192, ge=16, description="with use_vllm: vLLM's context, the longest prompt + completion it holds"
    )
    beta: float = Field(0.0, ge=0, description="KL coefficient against the reference (0: no reference model)")
    use_vllm: bool = Field(False, description="generate with vLLM (TRL's colocate mode; needs a GPU)")
    quality_gate: bool = Field(
        True,
        description="reward 0 for a degenerate completion (the quality gate of `autoif run`: repetition, "
        "garbage, another language), whatever its pass rate",
    )


def stop_ids(model, tokenizer) -> set[int]:
    """The ids that end a completion, as GRPOTrainer counts them: the model's EOS ids, the tokenizer's
    EOS, and pad (which the trainer sets to EOS when the tokenizer has none)."""
    declared = model.generation_config.eos_token_id
    ids = set(declared if isinstance(declared, list) else [] if declared is None else [declared])
    ids |= {i for i in (tokenizer.eos_token_id, tokenizer.pad_token_id) if i is not None}
    return ids


def grpo_args(settings: GRPOSettings):
    """TRL's GRPOConfig from the settings."""
    trl = require("trl", "train", "GRPO training")
    # vLLM would reserve KV cache for the model's whole context inside TRL's share of each GPU.
    vllm: dict[str, Any] = {"vllm_mode": "colocate", "vllm_max_model_length": settings.max_length}
    return trl_args(
        settings,
        trl.GRPOConfig,
        num_generations=settings.num_generations,
        max_completion_length=settings.max_completion_length,
        temperature=settings.temperature,
        beta=settings.beta,
        use_vllm=settings.use_vllm,
        **(vllm if settings.use_vllm else {}),
    )


def train(settings: GRPOSettings) -> Path:
    trl = require("trl", "train", "GRPO training")
    datasets = require("datasets", "hf", "training")
    from ..sandbox import Sandbox

    prompts = prompts_with_functions(read_records(settings, ("functions",)))
    args = grpo_args(settings)
    model, tokenizer = load_model_and_tokenizer(settings)  # after the config: ZeRO-3 initialisation
    stop_at_end_of_turn(model, tokenizer)  # a base model's samples end where the template ends a turn
    with Sandbox() as sandbox:
        reward = make_verifier_reward(
            sandbox,
            stop_ids=stop_ids(model, tokenizer),
            max_completion_length=settings.max_completion_length,
            quality=QualityConfig() if settings.quality_gate else None,
        )
        trainer = trl.GRPOTrainer(
            model=model,
            reward_funcs=reward,
            args=args,
            train_dataset=datasets.Dataset.from_list(prompts),
            processing_class=tokenizer,
            peft_config=peft_config(settings),
        )
        trainer.train(resume_from_checkpoint=resume_checkpoint(settings))
    return save_final(trainer, tokenizer, settings.output_dir)
