"""`autoif train sft`: supervised fine-tuning on a run's sft.jsonl with TRL's SFTTrainer.

Defaults are the paper's: full fine-tune, lr 7e-6, linear schedule, 20 warm-up steps, global batch
128, weight decay 0.1, 3 epochs, bf16 where available, max length 8192.

The loss is on the answer only by default: each record goes to TRL in its prompt-completion
conversational form (the turns before the last assistant turn are the prompt), and TRL masks the
prompt's tokens, which works with any chat template (the `{% generation %}` markers that
`assistant_only_loss` needs are missing from the stock templates of most models, SmolLM2's too).

Each answer ends with the template's end-of-turn token, which the trained model then stops on: a base
model's EOS is often another token (`<|endoftext|>` where the template closes turns with
`<|im_end|>`), so TRL is given the template's token as the EOS (see end_of_turn.py).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from ..errors import AutoifError, require
from ..rundir import SFT
from .common import (
    TrainSettings,
    length_grouped,
    load_model_and_tokenizer,
    peft_config,
    read_records,
    resume_checkpoint,
    save_final,
    trl_args,
)
from .cpu_forward import CpuForwardSettings, with_cpu_forward
from .end_of_turn import end_of_turn_token


class SFTSettings(CpuForwardSettings, TrainSettings):
    """Supervised fine-tuning (the paper's defaults)."""

    output_dir: str = Field("autoif-train/sft", description="checkpoints and the final model go here")
    data_file: str = Field(SFT.name, description="file taken from `data` when `data` is a run directory")
    completion_only_loss: bool = Field(
        True, description="loss on the answer's tokens only; false: on the whole sequence, prompt included"
    )


def prompt_completion(messages: list[dict]) -> dict[str, list[dict]]:
    """A conversation as TRL's prompt-completion pair: the last assistant turn is the completion."""
    answers = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not answers:
        raise AutoifError("an SFT record has no assistant message to learn")
    last = answers[-1]
    return {"prompt": messages[:last], "completion": messages[last : last + 1]}


# The metrics TRL's SFTTrainer asks its model's fused LM head for besides the log-probs.
SFT_METRICS = ("entropy", "is_top1")


def sft_trainer(settings: SFTSettings):
    """TRL's SFTTrainer on the settings' data, ready to train."""
    trl = require("trl", "train", "SFT training")
    datasets = require("datasets", "hf", "training")
    records = read_records(settings, ("messages",))
    try:
        dataset = datasets.Dataset.from_list([prompt_completion(r["messages"]) for r in records])
    except AutoifError as exc:
        raise AutoifError(f"{settings.data}: {exc}") from None
    args = trl_args(
        settings, trl.SFTConfig, max_length=settings.max_length, completion_only_loss=settings.completion_only_loss
    )
    model, tokenizer = load_model_and_tokenizer(settings)  # after the config: ZeRO-3 initialisation
    # TRL makes it the tokenizer's EOS and the model's, and adds it to the ids generation stops on.
    args.eos_token = end_of_turn_token(tokenizer)
    trainer_class = length_grouped(trl.SFTTrainer) if settings.group_by_length else trl.SFTTrainer
    if settings.cpu_forward:
        trainer_class = with_cpu_forward(trainer_class, SFT_METRICS)
    return trainer_class(
        model=model, args=args, train_dataset=dataset, processing_class=tokenizer, peft_config=peft_config(settings)
    )


def train(settings: SFTSettings) -> Path:
    trainer = sft_trainer(settings)
    trainer.train(resume_from_checkpoint=resume_checkpoint(settings))
    return save_final(trainer, trainer.processing_class, settings.output_dir)
