"""`autoif train dpo`: offline DPO on a run's dpo.jsonl with TRL's DPOTrainer.

Start from an SFT checkpoint (`model`); the reference model is that same checkpoint (TRL copies it
when no separate reference is given). Defaults are the paper's: lr 5e-7, cosine schedule, warm-up
ratio 0.1, global batch 64, sigmoid loss, beta 0.3, 2 epochs, max length 4096.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from ..errors import require
from ..rundir import DPO
from .common import (
    TrainSettings,
    load_model_and_tokenizer,
    peft_config,
    read_records,
    resume_checkpoint,
    save_final,
    trl_args,
)


class DPOSettings(TrainSettings):
    """Offline DPO (the paper's defaults)."""

    output_dir: str = Field("autoif-train/dpo", description="checkpoints and the final model go here")
    data_file: str = Field(DPO.name, description="file taken from `data` when `data` is a run directory")
    learning_rate: float = Field(5e-7, gt=0, description="peak learning rate")
    lr_scheduler_type: str = Field("cosine", description="learning-rate schedule (transformers name)")
    warmup_steps: float = Field(0.1, ge=0, description="warm-up: steps when >= 1, a fraction of all steps when < 1")
    num_train_epochs: float = Field(2, gt=0, description="passes over the data")
    global_batch_size: int = Field(64, ge=1, description="pairs per optimizer step, over all devices")
    max_length: int = Field(4096, ge=16, description="longest prompt + answer; longer ones are truncated")
    beta: float = Field(0.3, gt=0, description="DPO beta (strength of the pull towards the reference)")
    loss_type: str = Field("sigmoid", description="TRL DPO loss ('sigmoid' is the original DPO)")
    level: str = Field("all", description="which pairs: 'all', 'query' or 'instruction' level")


def dpo_rows(records: list[dict], level: str = "all") -> list[dict]:
    """TRL's conversational preference rows (prompt, chosen, rejected) from dpo.jsonl records."""
    keep = [r for r in records if level == "all" or r.get("level") == level]
    return [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in keep]


def run_dpo(
    settings: DPOSettings,
    rows: list[dict],
    model,
    tokenizer,
    output_dir: str | Path,
    epochs=None,
    resume=None,
    ref_model=None,
):
    """One DPOTrainer pass over `rows`; returns the trainer (its model is the updated policy).
    ref_model: the frozen reference (None: TRL loads the policy's own checkpoint)."""
    trl = require("trl", "train", "DPO training")
    datasets = require("datasets", "hf", "training")
    args = trl_args(
        settings,
        trl.DPOConfig,
        output_dir=output_dir,
        max_length=settings.max_length,
        beta=settings.beta,
        loss_type=[settings.loss_type],
        **({"num_train_epochs": epochs} if epochs is not None else {}),
    )
    trainer = trl.DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config(settings),
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def train(settings: DPOSettings) -> Path:
    from ..errors import AutoifError

    rows = dpo_rows(read_records(settings, ("prompt", "chosen", "rejected")), settings.level)
    if not rows:
        raise AutoifError(f"no DPO pairs at level '{settings.level}' in {settings.data}")
    model, tokenizer = load_model_and_tokenizer(settings)
    trainer = run_dpo(settings, rows, model, tokenizer, settings.output_dir, resume=resume_checkpoint(settings))
    return save_final(trainer, tokenizer, settings.output_dir)
