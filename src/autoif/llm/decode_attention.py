"""autoif's decode-step attention for the local backend on a CPU (`llm.attention`).

A decode step feeds each row one token; its attention reads the whole KV cache. torch's SDPA hands
that to a flash kernel tiled for long queries, which on SmolLM2-135M in bf16 took half of a decode
step (README, issue 28's profile). `decode_attention.cpp` reads the cache in place (the
`kv.GrowingLayer` view, no copy), each key once for all query heads of its group, in fp32 arithmetic.
It is compiled for the CPU at hand (torch's cpp_extension, `-march=native`) once per source, CPU
and torch build, where torch keeps its extensions (`TORCH_EXTENSIONS_DIR`, by default
`~/.cache/torch_extensions/`); where that fails (no C++ compiler) `llm.attention: auto` keeps SDPA
and says why once.

Hand-written because nothing in torch does this as fast on a CPU: SDPA, and the same attention as
two batched products or as elementwise work compiled by torch.compile, all measured slower (README,
"How close the local backend comes to the CPU's limit").

Answers in bf16 differ from SDPA's in the last bits of some activations, so the response cache keys
bf16 answers by the attention too (`embedded.model_identity`). fp32 decoding keeps SDPA: it is the
exactly reproducible measure, and the kernel measured no faster there.
"""

from __future__ import annotations

import hashlib
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..precision import cpu_name, cpuinfo
from .base import BackendError

log = logging.getLogger("autoif.llm")

SOURCE = Path(__file__).with_name("decode_attention.cpp")
# The name transformers' attention registry knows it by, and the one response-cache keys carry.
NAME = "autoif_decode"
FLAGS = ("-O3", "-march=native", "-fopenmp", "-ffast-math")


def version() -> str:
    """What response-cache keys carry for bf16 answers decoded with the kernel: its source and flags."""
    digest = hashlib.sha256((SOURCE.read_text() + " ".join(FLAGS)).encode()).hexdigest()[:12]
    return f"{NAME} {digest}"


def build_name() -> str:
    """The compiled module's name: the kernel's version (source and flags), this CPU's instruction
    sets and the torch build, hashed, so that another CPU (`-march=native`) or torch never loads it."""
    import torch

    # The instruction sets (x86 "flags", ARM "Features"), else the CPU's name.
    cpu = cpuinfo("flags", "Features") or cpu_name()
    parts = (version(), cpu, torch.__version__)
    return "autoif_decode_attention_" + hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def build() -> Any:
    """The module, or the one-line reason it could not be built (kept: a failed build is not retried)."""
    from torch.utils import cpp_extension

    try:
        return cpp_extension.load(
            name=build_name(),
            sources=[str(SOURCE)],
            extra_cflags=list(FLAGS),
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as exc:  # the compiler's or ninja's failure, whatever its type
        lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
        return next((line for line in lines if "error" in line.lower()), lines[0] if lines else type(exc).__name__)


def kernel() -> Any:
    """The compiled module (built on first use, about half a minute; then loaded from disk).
    Raises BackendError with the compiler's reason in one line when it cannot be built."""
    built = build()
    if isinstance(built, str):
        raise BackendError(f"llm.attention: cannot build autoif's decode attention: {built}")
    return built


def resolve(attention: str, dtype: str, device_type: str) -> str:
    """The attention a local backend decodes with: "sdpa" or NAME.

    `attention` as configured: "sdpa"; "autoif" (NAME for bf16 on a CPU, else an error), or "auto"
    (NAME for bf16 on a CPU where the kernel builds, else SDPA)."""
    if attention == "sdpa":
        return "sdpa"
    usable = device_type == "cpu" and dtype == "bfloat16"
    if attention == "autoif":
        if not usable:
            raise BackendError(
                f"llm.attention: autoif's decode attention runs bf16 on a CPU, not {dtype} on {device_type}"
            )
        kernel()
        return NAME
    if not usable:
        return "sdpa"
    try:
        kernel()
    except BackendError as exc:
        log.warning("%s; decoding with SDPA", exc)
        return "sdpa"
    return NAME


def install(model: Any) -> None:
    """Make `model` (a transformers model) decode with the kernel: registered under NAME in
    transformers' attention and mask registries (the mask as SDPA's: boolean, True where a row
    attends), then set as the model's attention."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    module = kernel()
    AttentionInterface.register(NAME, _attention_with(module))
    AttentionMaskInterface.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)


def _attention_with(module: Any):
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    def attention(model_module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
        """transformers' attention signature: [B, H, Q, D] query, [B, Hkv, L, D] keys and values ->
        ([B, Q, H, D], None). One-token queries go to the kernel; prefill and anything it does not
        cover (softcap, attention sinks, position bias, a float mask, other head sizes) to SDPA."""
        mask = attention_mask
        plain = (
            query.shape[2] == 1
            and query.shape[-1] in (64, 128)
            and query.dtype == key.dtype == value.dtype
            and query.shape[1] % key.shape[1] == 0
            and not dropout
            and kwargs.get("softcap") is None
            and kwargs.get("s_aux") is None
            and kwargs.get("position_bias") is None
            and (mask is None or (mask.dtype == torch.bool and mask.shape[1] == 1 and mask.shape[2] == 1))
        )
        if not plain:
            return sdpa_attention_forward(
                model_module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
            )
        keep = mask[:, 0, 0, :] if mask is not None else query.new_empty(0, dtype=torch.bool)
        if keep.numel() and keep.stride(-1) != 1:
            keep = keep.contiguous()
        key = key if key.stride(-1) == 1 else key.contiguous()
        value = value if value.stride(-1) == 1 else value.contiguous()
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        out = module.decode_attention(query[:, :, 0], key, value, keep, float(scale))
        return out[:, None], None

    return attention
