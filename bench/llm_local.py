"""Local backend throughput: `LocalBackend.generate()` against a raw `model.generate` loop.

Both run the same model object (SmolLM2-135M-Instruct, the embedded model), the same chat prompts,
the same batch size and the same sampling (default temperature 0.8, top_p 1, no top-k; 0: greedy),
in one process, one after the other. Tokens are the generated tokens of each sample up to its EOS
(EOS not counted). The figure is the ratio backend / raw (target >= 0.9; the raw loop's
`DynamicCache` copies the whole cache every step, which the backend's `kv.GrowingLayer` does not,
so the ratio grows with the answers' length). It also reports whether the backend gave the same
samples at every batch size (a sample depends only on its request, index and seed).

    .venv/bin/python bench/llm_local.py [--batch-sizes 8 16] [--max-tokens 64] [--rounds 1]
    .venv/bin/python bench/llm_local.py --temperature 0 --batch-sizes 32 64 --prompts 64 --max-tokens 512

With `--dtypes float32 bfloat16` it measures the backend itself in each weights dtype instead (same
prompts, batch size and sampling) and prints each one's tokens/s against the first's, and how many
answers came out the same: bfloat16 runs on CPUs with AVX512-BF16/AMX kernels, and it changes
rounding, hence some greedy answers (what that does to scores is measured by `autoif eval dev`).

    .venv/bin/python bench/llm_local.py --dtypes float32 bfloat16 --temperature 0 --batch-sizes 64 --max-tokens 128
"""

from __future__ import annotations

import argparse
import time

import torch

from autoif.config import PathsConfig
from autoif.llm import Request
from autoif.llm.local import LocalBackend

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Give me three tips for better sleep.",
    "Explain photosynthesis to a ten-year-old.",
    "What is 17 times 23?",
    "Write a short poem about autumn leaves.",
    "List five fruits that are red.",
    "How do I boil an egg?",
    "Summarize the plot of Romeo and Juliet in two sentences.",
    "What are the benefits of regular exercise?",
    "Translate 'good morning' into Spanish and French.",
    "Write a limerick about a cat who loves cheese.",
    "Why is the sky blue?",
    "Suggest a name for a bakery.",
    "What is the difference between weather and climate?",
    "Describe a sunset in one paragraph.",
    "Give me a recipe for a simple salad.",
    "What does a computer's CPU do?",
    "Write a thank-you note to a teacher.",
    "Name three planets in our solar system.",
    "How can I save money on groceries?",
    "Tell me a fun fact about octopuses.",
    "What is the tallest mountain in the world?",
    "Write two sentences about the importance of reading.",
    "Explain what a noun is, with examples.",
    "What should I pack for a weekend camping trip?",
    "Compose a short motivational message for a friend.",
    "How many days are there in a leap year?",
    "Describe the taste of chocolate.",
    "Give me an idea for a birthday present for my mother.",
    "What is the boiling point of water in Fahrenheit?",
    "Write a tweet announcing a new coffee shop.",
]


def raw_generate_loop(
    model, tokenizer, prompts: list[str], batch_size: int, max_tokens: int, temperature: float
) -> tuple[int, float]:
    """The baseline: batches of `batch_size` prompts, left-padded, through `model.generate`."""
    eos = tokenizer.eos_token_id
    tokens, start = 0, time.perf_counter()
    for at in range(0, len(prompts), batch_size):
        texts = [
            tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
            for p in prompts[at : at + batch_size]
        ]
        batch = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
        with torch.inference_mode():
            sampling = {"temperature": temperature, "top_p": 1.0, "top_k": 0} if temperature else {}
            out = model.generate(
                **batch, **sampling, do_sample=temperature > 0, max_new_tokens=max_tokens, pad_token_id=eos
            )
        for row in out[:, batch["input_ids"].shape[1] :].tolist():
            tokens += row.index(eos) if eos in row else len(row)
    return tokens, time.perf_counter() - start


def backend_generate(
    backend: LocalBackend, prompts: list[str], max_tokens: int, temperature: float, seed: int
) -> tuple[int, float, list[str]]:
    requests = [
        Request.user(p, temperature=temperature, top_p=1.0, max_tokens=max_tokens, seed=seed + i)
        for i, p in enumerate(prompts)
    ]
    start = time.perf_counter()
    out = backend.generate(requests, progress=False)
    return sum(c[0].tokens for c in out), time.perf_counter() - start, [str(c[0]) for c in out]


def compare_dtypes(args, prompts: list[str]) -> None:
    """The backend in each of `args.dtypes`, one after the other: tokens/s against the first dtype's."""
    for batch_size in args.batch_sizes:
        first: tuple[float, list[str]] | None = None
        for dtype in args.dtypes:
            backend = LocalBackend(args.model, None, batch_size=batch_size, dtype=dtype, cache_dir=args.cache_dir)
            backend_generate(backend, prompts[:batch_size], 4, args.temperature, seed=10_000)  # warm-up
            tokens, seconds, texts = backend_generate(backend, prompts, args.max_tokens, args.temperature, seed=0)
            backend.close()
            tps = tokens / seconds
            first = first or (tps, texts)
            same = sum(a == b for a, b in zip(first[1], texts))
            print(
                f"batch {batch_size:3d} {dtype:>8}: {tps:7.1f} tok/s ({tokens} tok, {seconds:.1f} s) | "
                f"ratio to {args.dtypes[0]} {tps / first[0]:.2f} | same answers {same} of {len(texts)}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--cache-dir", default=PathsConfig().cache_dir)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.8, help="0: greedy")
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), help="how many (the list repeated)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat each measurement (ratios per round)")
    parser.add_argument("--dtypes", nargs="+", help="compare the backend across weights dtypes, not against raw")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    prompts = (PROMPTS * (args.prompts // len(PROMPTS) + 1))[: args.prompts]
    temperature = args.temperature

    print(
        f"torch threads: {torch.get_num_threads()}, prompts: {len(prompts)}, max_tokens: {args.max_tokens}, "
        f"temperature: {temperature}"
    )
    if args.dtypes:
        compare_dtypes(args, prompts)
        return
    samples: dict[int, list[str]] = {}  # round 0's texts per batch size
    for batch_size in args.batch_sizes:
        backend = LocalBackend(args.model, None, batch_size=batch_size, cache_dir=args.cache_dir)
        model, tokenizer = backend.engine.model, backend.engine.tokenizer
        # Warm both paths up (first-call allocations, thread pools).
        raw_generate_loop(model, tokenizer, prompts[:batch_size], batch_size, 4, temperature)
        backend_generate(backend, prompts[:batch_size], 4, temperature, seed=10_000)
        for r in range(args.rounds):
            raw_tokens, raw_s = raw_generate_loop(model, tokenizer, prompts, batch_size, args.max_tokens, temperature)
            ours_tokens, ours_s, texts = backend_generate(backend, prompts, args.max_tokens, temperature, seed=1000 * r)
            samples.setdefault(batch_size, texts)
            raw_tps, ours_tps = raw_tokens / raw_s, ours_tokens / ours_s
            print(
                f"batch {batch_size:3d} round {r}: raw model.generate {raw_tps:7.1f} tok/s "
                f"({raw_tokens} tok, {raw_s:.1f} s) | LocalBackend.generate {ours_tps:7.1f} tok/s "
                f"({ours_tokens} tok, {ours_s:.1f} s) | ratio {ours_tps / raw_tps:.2f}",
                flush=True,
            )
        backend.close()
    if len(samples) > 1:
        first, *others = samples.values()
        differ = sum(any(o[i] != first[i] for o in others) for i in range(len(first)))
        print(f"samples that differ between batch sizes {sorted(samples)}: {differ} of {len(first)}")


if __name__ == "__main__":
    main()
