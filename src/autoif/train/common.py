"""What every trainer shares: settings common to all of them, model and data loading, TRL args.

Each trainer module (sft.py, dpo.py, online_dpo.py, grpo.py) holds its own settings class whose
defaults are the paper's hyper-parameters, and a `train(settings)` that builds a TRL trainer. This
module only holds what would otherwise be copied into all four.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from ..config import Section, on_off
from ..errors import AutoifError, require
from ..jsonl import read_jsonl
from ..rundir import SFT
from ..seeding import seeded_rng

log = logging.getLogger("autoif.train")


class LoraSettings(Section):
    """LoRA adapters (peft) instead of full fine-tuning."""

    enabled: bool = Field(False, description="train LoRA adapters instead of all weights")
    r: int = Field(16, ge=1, description="adapter rank")
    alpha: int = Field(32, ge=1, description="adapter scaling (lora_alpha)")
    dropout: float = Field(0.05, ge=0, lt=1, description="adapter dropout")
    target_modules: str = Field("all-linear", description="modules to adapt (peft syntax, comma-separated names)")


class TrainSettings(Section):
    """Settings every trainer has; each trainer's subclass sets the paper's defaults."""

    model: str = Field("embedded", description="model to train: 'embedded' (SmolLM2-135M), a hub id or a path")
    data: str = Field("autoif-out", description="a run's output directory, or the jsonl file to train on")
    output_dir: str = Field("autoif-train", description="checkpoints and the final model go here")
    cache_dir: str = Field("~/.cache/autoif", description="where the embedded model's checkpoint is kept")
    max_records: int | None = Field(
        None,
        ge=1,
        description="train on a random sample of this many records (None: all), for data-scaling ablations; "
        "the same sample for the same seed, and a smaller sample is part of a larger one",
    )
    learning_rate: float = Field(7e-6, gt=0, description="peak learning rate")
    lr_scheduler_type: str = Field("linear", description="learning-rate schedule (transformers name)")
    warmup_steps: float = Field(20, ge=0, description="warm-up: steps when >= 1, a fraction of all steps when < 1")
    weight_decay: float = Field(0.1, ge=0, description="AdamW weight decay")
    num_train_epochs: float = Field(3, gt=0, description="passes over the data")
    max_steps: int = Field(-1, description="stop after this many optimizer steps (-1: run the epochs)")
    global_batch_size: int = Field(128, ge=1, description="sequences per optimizer step, over all devices")
    per_device_batch_size: int = Field(4, ge=1, description="sequences per forward pass on one device")
    max_length: int = Field(8192, ge=16, description="longest tokenized example; longer ones are truncated")
    bf16: Literal["auto", "on", "off"] = Field(
        "auto",
        description="bfloat16: on a GPU, bf16 weights; on a CPU, bf16 autocast of the matmuls with fp32 weights "
        "and optimizer state. auto: where the GPU has it, and on a CPU where a short measurement of the model's "
        "matmuls (cached per machine, see autoif/precision.py) finds autocast faster",
    )
    group_by_length: bool = Field(
        True,
        description="order the rows of each optimizer step by length, so a forward pass pads only to the longest "
        "of its own rows; the steps hold the same rows as without it (same losses)",
    )
    gradient_checkpointing: bool = Field(False, description="trade compute for memory")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    logging_steps: int = Field(10, ge=1, description="log every this many steps")
    save_steps: int = Field(500, ge=1, description="save a checkpoint every this many steps")
    save_total_limit: int | None = Field(2, ge=1, description="checkpoints kept (None: all)")
    report_to: str = Field("none", description="'none', 'tensorboard', 'wandb' (TRL's report_to), comma-separated")
    resume: str | None = Field(
        None, description="resume from a checkpoint directory, or 'latest' for the newest in output_dir"
    )
    seed: int = Field(42, description="random seed")

    # The file a run writes for this trainer (subclasses set it).
    data_file: str = Field(SFT.name, description="file taken from `data` when `data` is a run directory")

    _yaml_booleans = field_validator("bf16", mode="before")(on_off)


def data_path(settings: TrainSettings) -> Path:
    path = Path(settings.data).expanduser()
    if path.is_dir():
        path = path / settings.data_file
    if not path.is_file():
        raise AutoifError(f"training data not found: {path}")
    return path


def read_records(settings: TrainSettings, required: tuple[str, ...]) -> list[dict]:
    """The dataset's records as dicts, each checked for the fields the trainer needs."""
    path = data_path(settings)
    records = read_jsonl(path)
    for n, record in enumerate(records, 1):
        missing = [f for f in required if f not in record]
        if missing:
            raise AutoifError(
                f"{path}: record {n} lacks field '{missing[0]}' (this trainer needs {', '.join(required)})"
            )
    if not records:
        raise AutoifError(f"{path}: no records to train on")
    if settings.max_records and len(records) > settings.max_records:
        records = sample_records(records, settings.max_records, settings.seed)
        log.info("training data: a seeded sample of %d of the records in %s", len(records), path)
    else:
        log.info("training data: %d records from %s", len(records), path)
    return records


def sample_records(records: list[dict], n: int, seed: int) -> list[dict]:
    """`n` records drawn at random by `seed`, in file order. The draw is the first `n` of one seeded
    permutation, so a smaller sample is part of a larger one and data-scaling points are nested."""
    order = list(range(len(records)))
    seeded_rng(seed, "train.max_records").shuffle(order)
    return [records[i] for i in sorted(order[:n])]


def load_model_and_tokenizer(settings: TrainSettings, model: str | None = None):
    """The model to train with its tokenizer: bf16 weights on a GPU with bf16, fp32 otherwise (on a CPU
    bf16 is autocast of the matmuls by the Trainer, the weights and optimizer state stay fp32).

    Call it after building the trainer's TRL config: transformers learns from that config that
    ZeRO-3 is on, and only then loads each process's shard of the weights instead of all of them."""
    transformers = require("transformers", "train", "training")
    torch = require("torch", "train", "training")
    from ..llm.embedded import resolve_model

    source = resolve_model(model or settings.model, settings.cache_dir)
    dtype = torch.bfloat16 if torch.cuda.is_available() and use_bf16(settings) else torch.float32
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source)
        policy = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    except OSError as exc:
        raise AutoifError(f"cannot load model '{source}': {str(exc).splitlines()[0]}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return policy, tokenizer


# How long the other processes of an `accelerate launch` wait for the main one (online DPO's sampling
# takes hours at the paper's scale; torch's default process-group timeout is 10 to 30 minutes).
WAIT_FOR_MAIN = timedelta(hours=24)


def processes():
    """accelerate's view of the processes (one without `accelerate launch`): who is the main one, and
    the process group that trainers built later reuse, with a timeout long enough to sample in."""
    import torch
    from accelerate import PartialState

    # cpu as in trl_args: without it, processes launched on a machine with no GPU do not see each other.
    return PartialState(cpu=not torch.cuda.is_available(), timeout=WAIT_FOR_MAIN)


def release_memory() -> None:
    """Free what dropped objects held: Python's reference cycles (a trainer and its callbacks), then
    the CUDA allocator's cache, which other processes (a vLLM engine) cannot otherwise use."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def use_bf16(settings: TrainSettings) -> bool:
    if settings.bf16 != "auto":
        return settings.bf16 == "on"
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    from ..precision import cpu_bf16_autocast_faster

    return cpu_bf16_autocast_faster(resolve_model_config(settings), settings.cache_dir)


def resolve_model_config(settings: TrainSettings):
    """The transformers config of the model to train (its matmul shapes), without loading weights."""
    transformers = require("transformers", "train", "training")
    from ..llm.embedded import resolve_model

    return transformers.AutoConfig.from_pretrained(resolve_model(settings.model, settings.cache_dir))


def trl_args(settings: TrainSettings, config_class: type, output_dir: str | Path | None = None, **extra: Any):
    """A TRL config (SFTConfig, DPOConfig, GRPOConfig) from our settings; `extra` adds or replaces fields."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    accumulation = max(1, settings.global_batch_size // (settings.per_device_batch_size * world))
    import torch

    fields = {
        "output_dir": str(output_dir or Path(settings.output_dir).expanduser()),
        "learning_rate": settings.learning_rate,
        "lr_scheduler_type": settings.lr_scheduler_type,
        "warmup_steps": settings.warmup_steps,
        "weight_decay": settings.weight_decay,
        "num_train_epochs": settings.num_train_epochs,
        "max_steps": settings.max_steps,
        "per_device_train_batch_size": settings.per_device_batch_size,
        "gradient_accumulation_steps": accumulation,
        "bf16": use_bf16(settings),
        "use_cpu": not torch.cuda.is_available(),
        # Always set: TRL's configs default gradient_checkpointing to True, which costs a third more compute
        # per step and is what transformers would take when the new name is unset.
        "activation_checkpointing": settings.gradient_checkpointing,
        "logging_steps": settings.logging_steps,
        "save_steps": settings.save_steps,
        "save_total_limit": settings.save_total_limit,
        "report_to": [r.strip() for r in settings.report_to.split(",") if r.strip()] or "none",
        "seed": settings.seed,
    }
    return config_class(**{**fields, **extra})


class StepGroupedSampler:
    """The rows of `base` (the sampler a Trainer would use) in its order of optimizer steps, each step's
    `step_rows` rows sorted longest first. A step holds the same rows as with `base`; its forward passes
    take rows of similar length, so each pads little beyond its own longest row."""

    def __init__(self, base, lengths: list[int], step_rows: int):
        self.base = base
        self.lengths = lengths
        self.step_rows = step_rows

    def set_epoch(self, epoch: int) -> None:  # the dataloader reseeds the shuffle each epoch through this
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)

    def __iter__(self):
        order = list(self.base)
        for start in range(0, len(order), self.step_rows):
            yield from sorted(order[start : start + self.step_rows], key=self.lengths.__getitem__, reverse=True)

    def __len__(self) -> int:
        return len(self.base)


def padded_lengths(dataset) -> list[int]:
    """Per row of a tokenized TRL dataset, the length a forward pass pads it to: its tokens (SFT), or
    its prompt and the longer of its two answers (DPO: chosen and rejected share a padded batch)."""
    if "input_ids" in dataset.column_names:
        return [len(ids) for ids in dataset["input_ids"]]
    answers = zip(dataset["chosen_ids"], dataset["rejected_ids"], strict=True)
    return [len(p) + max(len(c), len(r)) for p, (c, r) in zip(dataset["prompt_ids"], answers, strict=True)]


def length_grouped(trainer_class: type) -> type:
    """`trainer_class` (a TRL trainer) with its optimizer steps' rows ordered by length (StepGroupedSampler).

    The per-step loss is unchanged: DPO averages equal-sized micro-batches, SFT divides by the step's
    token count. The shuffle is accelerate's seedable sampler, built as accelerate builds it for a
    plain Trainer (it replaces only a bare RandomSampler, not one inside ours), so each step holds the
    rows it holds without grouping."""
    from accelerate.data_loader import SeedableRandomSampler
    from torch.utils.data import RandomSampler

    class LengthGrouped(trainer_class):
        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            base = super()._get_train_sampler(dataset)
            if not isinstance(base, RandomSampler):
                return base
            if self.accelerator.dataloader_config.use_seedable_sampler:
                base = SeedableRandomSampler(data_source=dataset, data_seed=self.args.data_seed)
            args = self.args
            step_rows = args.train_batch_size * args.gradient_accumulation_steps * max(1, args.world_size)
            return StepGroupedSampler(base, padded_lengths(dataset), step_rows)

    LengthGrouped.__name__ = LengthGrouped.__qualname__ = f"LengthGrouped{trainer_class.__name__}"
    return LengthGrouped


def peft_config(settings: TrainSettings):
    if not settings.lora.enabled:
        return None
    peft = require("peft", "train", "LoRA training")
    targets = settings.lora.target_modules
    return peft.LoraConfig(
        r=settings.lora.r,
        lora_alpha=settings.lora.alpha,
        lora_dropout=settings.lora.dropout,
        target_modules=targets if targets == "all-linear" else [t.strip() for t in targets.split(",")],
        task_type="CAUSAL_LM",
    )


def resume_checkpoint(settings: TrainSettings) -> str | bool | None:
    """What to hand to `trainer.train(resume_from_checkpoint=...)`."""
    if settings.resume is None:
        return None
    if settings.resume == "latest":
        out = Path(settings.output_dir).expanduser()
        if not any(out.glob("checkpoint-*")):
            raise AutoifError(f"resume=latest: no checkpoint in {out}")
        return True
    if not Path(settings.resume).expanduser().is_dir():
        raise AutoifError(f"resume: no such checkpoint directory: {settings.resume}")
    return str(Path(settings.resume).expanduser())


def save_final(trainer, tokenizer, output_dir: str | Path) -> Path:
    """The trained model (adapters merged into nothing: peft saves adapters) and tokenizer,
    loadable by from_pretrained; and `output_dir/trainer_state.json`, the run's whole log history
    (steps, losses, runtime), which the checkpoints hold only up to their own step. Called by every
    process under `accelerate launch` (ZeRO-3 and FSDP gather the weights together); the main one writes."""
    out = Path(output_dir).expanduser() / "final"
    trainer.save_model(str(out))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(out))
    trainer.save_state()
    log.info("saved the trained model to %s", out)
    return out


def prompts_with_functions(records: list[dict]) -> list[dict]:
    """Distinct prompts (chat messages before the answer) with the functions that judge answers to them.

    Accepts sft.jsonl records (`messages`) and dpo.jsonl records (`prompt`), so online DPO and GRPO
    can start from either file.
    """
    seen: set[str] = set()
    out = []
    for record in records:
        prompt = record["prompt"] if "prompt" in record else [m for m in record["messages"] if m["role"] != "assistant"]
        key = repr([(m["role"], m["content"]) for m in prompt])
        if key in seen or not record["functions"]:
            continue
        seen.add(key)
        out.append(
            {
                "prompt": [{"role": m["role"], "content": m["content"]} for m in prompt],
                "functions": list(record["functions"]),
            }
        )
    return out
