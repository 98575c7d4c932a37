"""How many GPUs a vLLM engine needs for a model: its weights, estimated from its config.json.

vLLM fails at start-up (out of memory, or no room left for the KV cache) when the weights of one
tensor-parallel shard take its whole share of a GPU; these checks say so before the engine starts,
in one line, with the size that would fit. Dense decoder configs (Llama, Qwen2, Mistral, Gemma...)
are counted parameter by parameter; mixture-of-experts ones with their experts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import AutoifError

# Weights may take at most this share of vLLM's part of a GPU: the rest is the KV cache, which
# batch sampling needs to keep many sequences in flight (with less, vLLM runs but crawls).
WEIGHTS_SHARE = 0.5

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "auto": 2}  # auto: bf16 on a GPU


@dataclass(frozen=True)
class ModelSize:
    weight_bytes: int
    attention_heads: int  # tensor parallelism splits the heads: the size must divide them


@dataclass(frozen=True)
class GPU:
    memory_bytes: int  # of one GPU
    utilization: float  # vLLM's gpu_memory_utilization
    count: int  # GPUs of the machine the engine runs on


def parameter_count(config: dict[str, Any]) -> int:
    """Parameters of a decoder-only transformer from its config.json (nested text_config included)."""
    config = config.get("text_config") or config
    try:
        hidden = config["hidden_size"]
        layers = config["num_hidden_layers"]
        heads = config["num_attention_heads"]
        vocab = config["vocab_size"]
    except KeyError as exc:
        raise AutoifError(f"cannot size the model: its config.json has no {exc.args[0]}") from None
    kv_heads = config.get("num_key_value_heads") or heads
    head_dim = config.get("head_dim") or hidden // heads
    attention = hidden * head_dim * (2 * heads + 2 * kv_heads)  # q, o; k, v
    experts = config.get("num_local_experts") or config.get("num_experts") or 1
    expert_width = config.get("moe_intermediate_size") or config.get("intermediate_size") or 4 * hidden
    mlp = 3 * hidden * expert_width * experts  # gate, up, down per expert
    embeddings = vocab * hidden * (1 if config.get("tie_word_embeddings") else 2)
    return layers * (attention + mlp + 2 * hidden) + embeddings


def model_size(model: str, dtype: str = "auto") -> ModelSize:
    """The weights' bytes in `dtype` and the attention heads, from the model's config.json
    (a local directory, or a hub id through transformers' cache)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model).to_dict()
    except (OSError, ValueError) as exc:
        raise AutoifError(f"cannot size '{model}': {str(exc).splitlines()[0]}") from None
    text = config.get("text_config") or config
    return ModelSize(parameter_count(config) * DTYPE_BYTES[dtype], text["num_attention_heads"])


def fewest_gpus(size: ModelSize, gpu: GPU, asked: int | None = None, what: str = "vllm") -> int:
    """`asked` when its shards fit, else an error naming the size that would; None: the fewest
    GPUs of the machine (a power of two dividing the heads) whose shards fit."""

    def fits(tp: int) -> bool:
        return size.weight_bytes / tp <= WEIGHTS_SHARE * gpu.utilization * gpu.memory_bytes

    candidates = [tp for tp in (1, 2, 4, 8, 16) if tp <= gpu.count and size.attention_heads % tp == 0]
    enough = next((tp for tp in candidates if fits(tp)), None)
    gb = size.weight_bytes / 1e9
    if asked is not None:
        if asked > gpu.count:
            raise AutoifError(f"{what}: tensor parallel size {asked} is more than this machine's {gpu.count} GPU(s)")
        if not fits(asked):
            hint = f"use {enough} or more" if enough else "no GPU count of this machine does"
            raise AutoifError(
                f"{what}: {gb:.0f} GB of weights over {asked} GPU(s) of {gpu.memory_bytes / 1e9:.0f} GB leave "
                f"too little of {gpu.utilization:g} of their memory for the KV cache ({hint})"
            )
        return asked
    if enough is None:
        raise AutoifError(
            f"{what}: {gb:.0f} GB of weights do not fit on the {gpu.count} GPU(s) of "
            f"{gpu.memory_bytes / 1e9:.0f} GB of this machine with room for the KV cache"
        )
    return enough
