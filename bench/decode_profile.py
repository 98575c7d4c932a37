"""Where a decode step of the local backend spends its time: `torch.profiler` over the step alone.

The local backend's engine (`LocalBackend.engine`: its prefill, its decode step, one token a row
through the model over a `kv.GrowingLayer` cache, and its greedy choice) runs on the main thread: a
prefill of `--batch` distinct prompts and `--context` steps that grow the cache to a typical length,
then the timed and profiled steps, so that the profile holds nothing but decode steps (the backend's
own worker thread hides its ops from a profiler started elsewhere). Prints the step's milliseconds
and tokens/s, then the ops by self CPU time, with and without their input shapes.

    .venv/bin/python bench/decode_profile.py --dtype bfloat16 --batch 128 --context 200 [--attention sdpa]
"""

from __future__ import annotations

import argparse
import time

import torch

from autoif.llm import Request
from autoif.llm.local import LocalBackend
from llm_local import distinct_prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--batch", type=int, default=128, help="rows decoded together (the recipe's bf16 batch)")
    parser.add_argument("--context", type=int, default=200, help="decode steps before the timed ones")
    parser.add_argument("--steps", type=int, default=30, help="timed steps (the profile takes 10 more)")
    parser.add_argument("--attention", default="auto", choices=["auto", "sdpa", "autoif"], help="llm.attention")
    args = parser.parse_args()
    backend = LocalBackend(
        args.model, None, batch_size=args.batch, device="cpu", dtype=args.dtype, attention=args.attention
    )
    engine = backend.engine
    total = args.context + args.steps + 10
    requests = [Request.user(p, temperature=0.0, max_tokens=total) for p in distinct_prompts(args.batch)]
    # The engine's own rows, prefill, step and greedy choice; a row's ticket only hands a finished
    # answer back to its caller, and these rows are never finished.
    rows = [engine.make_row(None, i, 0, r, engine.encode(r)) for i, r in enumerate(requests)]
    with torch.inference_mode():
        batch, logits = engine.prefill(rows)
        tokens = engine.choose(logits, rows)

        def step() -> None:
            nonlocal tokens
            tokens = engine.choose(engine.step(batch, tokens), rows)

        for _ in range(args.context):
            step()
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        seconds = (time.perf_counter() - start) / args.steps
        print(
            f"{args.dtype} ({backend.resolved_attention}) batch {args.batch}, cache ~{batch.mask.shape[1]} columns: "
            f"{1000 * seconds:.1f} ms a step, {args.batch / seconds:.0f} tokens/s"
        )
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(10):
                step()
    backend.close()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
