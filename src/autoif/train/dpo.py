"""`autoif train dpo`: offline DPO on a run's dpo.jsonl with TRL's DPOTrainer.

Start from an SFT checkpoint (`model`); the reference model is that same checkpoint (TRL copies it
when no separate reference is given). Defaults are the paper's: lr 5e-7, cosine schedule, warm-up
ratio 0.1, global batch 64, sigmoid loss, beta 0.3, 2 epochs, max length 4096.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import Field

from ..errors import require
from ..rundir import DPO
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
from .end_of_turn import stop_at_end_of_turn


class DPOSettings(CpuForwardSettings, TrainSettings):
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
    precompute_ref_log_probs: bool = Field(
        True,
        description="the reference model's log-probabilities of each pair computed once before training (TRL's "
        "precompute_ref_log_probs): no reference pass at every step and epoch, no reference copy in memory",
    )
    max_rejected_tokens: int | None = Field(
        None,
        ge=1,
        description="train on at most this many tokens of a rejected answer (None: all): a rejected answer that "
        "loops to the token limit shows its loop well before the limit",
    )


def dpo_rows(records: list[dict], level: str = "all") -> list[dict]:
    """TRL's conversational preference rows (prompt, chosen, rejected) from dpo.jsonl records."""
    keep = [r for r in records if level == "all" or r.get("level") == level]
    return [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in keep]


# The metrics TRL's DPOTrainer asks its policy's fused LM head for (and log_sum_sq_probs with WPO's
# use_weighting, which these settings never turn on).
DPO_METRICS = ("entropy", "mean_logits", "is_top1")


def dpo_trainer_class(settings: DPOSettings) -> type:
    """TRL's DPOTrainer, with the rows of each step grouped by length, rejected answers bounded and the
    trimmed CPU forward as set."""
    trl = require("trl", "train", "DPO training")
    trainer_class = length_grouped(trl.DPOTrainer) if settings.group_by_length else trl.DPOTrainer
    if settings.cpu_forward:
        trainer_class = with_cpu_forward(trainer_class, DPO_METRICS)
    limit = settings.max_rejected_tokens
    if limit is None:
        return trainer_class

    class RejectedBounded(trainer_class):  # type: ignore[misc,valid-type]
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            dataset = super()._prepare_dataset(dataset, processing_class, args, dataset_name)
            # Token ids, not text: the kept tokens are exactly the first `limit` the model scored.
            return dataset.map(lambda row: {"rejected_ids": row["rejected_ids"][:limit]}, desc="Bounding rejected")

    return RejectedBounded


def shared_dataset(rows: list[dict], output_dir: str | Path):
    """The rows as a dataset whose file lies under `output_dir`, one per content, written by the main
    process first: TRL caches the precomputed reference log-probs beside the dataset's file, and an
    in-memory dataset's cache goes to each process's own temporary directory, where the other
    processes of a launch do not find it."""
    datasets = require("datasets", "hf", "training")
    from accelerate import PartialState

    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(output_dir) / f"rows-{digest}.arrow"
    path.parent.mkdir(parents=True, exist_ok=True)
    with PartialState().main_process_first():  # the others load the file the main process wrote
        return datasets.Dataset.from_list(rows).flatten_indices(cache_file_name=str(path))


def run_dpo(
    settings: DPOSettings,
    rows: list[dict],
    output_dir: str | Path,
    model: str | None = None,
    reference: str | None = None,
    epochs=None,
    resume=None,
):
    """One DPOTrainer pass over `rows`; returns (the trainer, whose model is the updated policy, the tokenizer).
    model: the policy's checkpoint (None: settings.model); reference: the frozen reference's (None: TRL's
    own copy of the policy). The TRL config is built before either is loaded (ZeRO-3 initialisation)."""
    trl = require("trl", "train", "DPO training")
    require("datasets", "hf", "training")  # missing: one line now, not after the models load
    args = trl_args(
        settings,
        trl.DPOConfig,
        output_dir=output_dir,
        max_length=settings.max_length,
        beta=settings.beta,
        loss_type=[settings.loss_type],
        precompute_ref_log_probs=settings.precompute_ref_log_probs,
        **({"num_train_epochs": epochs} if epochs is not None else {}),
    )
    policy, tokenizer = load_model_and_tokenizer(settings, model=model)
    stop_at_end_of_turn(policy, tokenizer)  # the saved policy stops where its answers end
    ref_model = load_model_and_tokenizer(settings, model=reference)[0] if reference is not None else None
    trainer = dpo_trainer_class(settings)(
        model=policy,
        ref_model=ref_model,
        args=args,
        train_dataset=shared_dataset(rows, output_dir),
        processing_class=tokenizer,
        peft_config=peft_config(settings),
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer, tokenizer


def train(settings: DPOSettings) -> Path:
    from ..errors import AutoifError

    rows = dpo_rows(read_records(settings, ("prompt", "chosen", "rejected")), settings.level)
    if not rows:
        raise AutoifError(f"no DPO pairs at level '{settings.level}' in {settings.data}")
    trainer, tokenizer = run_dpo(settings, rows, settings.output_dir, resume=resume_checkpoint(settings))
    return save_final(trainer, tokenizer, settings.output_dir)
