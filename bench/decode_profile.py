"""Where a decode step of the local backend spends its time: `torch.profiler` over the step alone.

The local backend's decode step (`_Engine.step`: one token a row through the model over a
`kv.GrowingLayer` cache, then the greedy argmax) is run on the main thread, after a prefill of
`--batch` distinct prompts and `--context` steps that grow the cache to a typical length, so that the
profile holds nothing but decode steps (the backend's own worker thread hides its ops from a profiler
started elsewhere). Prints the step's milliseconds and tokens/s, then the ops by self CPU time, with
and without their input shapes.

    .venv/bin/python bench/decode_profile.py --dtype bfloat16 --batch 128 --context 200
"""

from __future__ import annotations

import argparse
import time

import torch
from transformers import DynamicCache

from autoif.config import PathsConfig
from autoif.llm.embedded import chat_prompt_ids
from autoif.llm.kv import GrowingLayer
from autoif.llm.local import load_causal_lm
from llm_local import distinct_prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--batch", type=int, default=128, help="rows decoded together (the recipe's bf16 batch)")
    parser.add_argument("--context", type=int, default=200, help="decode steps before the timed ones")
    parser.add_argument("--steps", type=int, default=30, help="timed steps (the profile takes 10 more)")
    args = parser.parse_args()
    model, tokenizer, _ = load_causal_lm(args.model, PathsConfig().cache_dir, "cpu", args.dtype)
    prompts = [chat_prompt_ids(tokenizer, [{"role": "user", "content": p}]) for p in distinct_prompts(args.batch)]
    width = max(map(len, prompts))
    ids = torch.full((args.batch, width), tokenizer.pad_token_id or 0)
    mask = torch.zeros((args.batch, width), dtype=torch.long)
    for i, p in enumerate(prompts):  # left-padded, as the backend's prefill
        ids[i, width - len(p) :], mask[i, width - len(p) :] = torch.tensor(p), 1
    cache = DynamicCache(config=model.config)
    cache.layers = [GrowingLayer() for _ in cache.layers]
    with torch.inference_mode():
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
            cache=cache,
            logits_to_keep=1,
        )
        state = {"tokens": out.logits[:, -1].argmax(-1), "positions": mask.sum(-1), "mask": mask}

        def step() -> None:
            state["mask"] = torch.cat([state["mask"], state["mask"].new_ones((args.batch, 1))], dim=-1)
            logits = model(
                input_ids=state["tokens"][:, None],
                attention_mask=state["mask"],
                position_ids=state["positions"][:, None],
                cache=cache,
            ).logits
            state["positions"] = state["positions"] + 1
            state["tokens"] = logits[:, -1].argmax(-1)

        for _ in range(args.context):
            step()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        seconds = (time.perf_counter() - start) / args.steps
        print(
            f"{args.dtype} batch {args.batch}, cache ~{width + args.context} columns: "
            f"{1000 * seconds:.1f} ms a step, {args.batch / seconds:.0f} tokens/s"
        )
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(10):
                step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
