"""`autoif train sft`: supervised fine-tuning on a run's sft.jsonl with TRL's SFTTrainer.

Defaults are the paper's: full fine-tune, lr 7e-6, linear schedule, 20 warm-up steps, global batch
128, weight decay 0.1, 3 epochs, bf16 where available, max length 8192.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from ..errors import require
from .common import (
    TrainSettings,
    load_model_and_tokenizer,
    peft_config,
    read_records,
    resume_checkpoint,
    save_final,
    trl_args,
)


class SFTSettings(TrainSettings):
    """Supervised fine-tuning (the paper's defaults)."""

    output_dir: str = Field("autoif-train/sft", description="checkpoints and the final model go here")
    data_file: str = Field("sft.jsonl", description="file taken from `data` when `data` is a run directory")
    assistant_only_loss: bool = Field(
        False, description="loss on the answer only (needs a chat template with generation markers)"
    )


def train(settings: SFTSettings) -> Path:
    trl = require("trl", "train", "SFT training")
    datasets = require("datasets", "hf", "training")
    records = read_records(settings, ("messages",))
    dataset = datasets.Dataset.from_list([{"messages": r["messages"]} for r in records])
    model, tokenizer = load_model_and_tokenizer(settings)
    args = trl_args(
        settings, trl.SFTConfig, max_length=settings.max_length, assistant_only_loss=settings.assistant_only_loss
    )
    trainer = trl.SFTTrainer(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config(settings)
    )
    trainer.train(resume_from_checkpoint=resume_checkpoint(settings))
    return save_final(trainer, tokenizer, settings.output_dir)
