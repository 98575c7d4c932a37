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

With `--peak` it measures this CPU's matmul peak in each of `--dtypes` (best GFLOP/s of the model's own
GEMM shapes at the token counts of a decode step of each batch size and of a prefill), counts the
model's FLOP per generated token from its config (2 x the matmul weights a token passes, plus attention
over the mean KV length of the run) and those of the prompts' prefill, and reports the backend's greedy
GFLOP/s as a share of that roofline ((FLOP/token x tokens + prefill FLOP) / seconds / peak), at its best
batch and at the last batch size given (the recipe's: 128). Give at least as many `--prompts` as the
largest batch, so that the batch is full. bf16 runs once with each of `--attentions` (default: torch's
SDPA, then autoif's decode kernel, `llm.attention`), fp32 with SDPA (the backend's default for each);
it prints the kernel's tokens/s against SDPA's and how many greedy answers came out the same. It ends
with the line `roofline: fp32 NN% bf16 NN% at batch B` (bf16: the last of `--attentions`).

    .venv/bin/python bench/llm_local.py --peak --batch-sizes 64 128 --prompts 128 --max-tokens 128
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


def distinct_prompts(n: int) -> list[str]:
    """`n` different prompts: PROMPTS, then the built-in query pool's queries (the data step's own).
    Never a prompt twice: the backend answers a repeated greedy request once (one cache key, one text),
    so a repeated list would count tokens it never generated and decode fewer rows than the batch."""
    from autoif.config import QueriesConfig
    from autoif.stages.querypool import load_queries

    pool = list(dict.fromkeys([*PROMPTS, *load_queries(QueriesConfig())]))
    if n > len(pool):
        raise SystemExit(f"--prompts {n}: only {len(pool)} distinct prompts (PROMPTS and the built-in query pool)")
    return pool[:n]


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


GEMM_TOKENS_PREFILL = 512  # tokens of a prefill's matmuls (a batch of prompts)


def matmul_shapes(config) -> list[tuple[int, int]]:
    """(in, out) of each weight matrix a token passes: q, k, v, o, gate, up, down, and the lm_head."""
    hidden, inter = config.hidden_size, config.intermediate_size
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    kv = (config.num_key_value_heads or config.num_attention_heads) * head_dim
    q = config.num_attention_heads * head_dim
    return [(hidden, q), (hidden, kv), (hidden, kv), (q, hidden), (hidden, inter), (hidden, inter), (inter, hidden)]


def flop_per_token(config, kv_length: float, lm_head: bool = True) -> float:
    """Matmul FLOP of one token: 2 x the weights of every layer and (a generated token; a prompt token
    but the last skips it) the lm_head, plus attention (scores and weighted values: 2 x 2 x heads x
    head_dim per cached position and layer)."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    weights = config.num_hidden_layers * sum(i * o for i, o in matmul_shapes(config))
    weights += config.hidden_size * config.vocab_size if lm_head else 0
    attention = 4 * config.num_hidden_layers * config.num_attention_heads * head_dim * kv_length
    return 2 * weights + attention


def gemm_gflops(m: int, k: int, n: int, dtype, seconds: float = 0.3) -> float:
    """Best GFLOP/s of `torch.nn.functional.linear` on (m x k) @ (n x k)^T: the best of short windows, so
    that a busy machine's worst moments do not count."""
    x, w = torch.randn(m, k).to(dtype), torch.randn(n, k).to(dtype)
    torch.nn.functional.linear(x, w)  # first call picks the kernel
    best = float("inf")
    for _ in range(5):
        start, calls = time.perf_counter(), 0
        while (elapsed := time.perf_counter() - start) < seconds / 5:
            torch.nn.functional.linear(x, w)
            calls += 1
        best = min(best, elapsed / calls)
    return 2 * m * k * n / best / 1e9


def roofline(args, prompts: list[str]) -> None:
    """Peak GFLOP/s per dtype, the backend's tokens/s per dtype and batch, and its share of the roofline."""
    from transformers import AutoConfig

    from autoif.llm.embedded import resolve_model

    config = AutoConfig.from_pretrained(resolve_model(args.model, args.cache_dir))
    shapes = [*matmul_shapes(config), (config.hidden_size, config.vocab_size)]
    peaks: dict[str, float] = {}
    for dtype in args.dtypes:
        best = 0.0
        for m in (*args.batch_sizes, GEMM_TOKENS_PREFILL):
            rates = [gemm_gflops(m, k, n, getattr(torch, dtype)) for k, n in shapes]
            print(f"peak {dtype:>8} {m:4d} tokens: " + " ".join(f"{r:6.1f}" for r in rates) + " GFLOP/s", flush=True)
            best = max(best, *rates)
        peaks[dtype] = best
        print(f"peak {dtype}: {best:.1f} GFLOP/s", flush=True)
    shares: dict[str, dict[int, float]] = {}
    runs: dict[tuple[str, int, str], tuple[float, list[str]]] = {}  # (dtype, batch, attention) -> tokens/s, texts
    for dtype in args.dtypes:
        for batch_size, attention in (
            (b, a) for b in args.batch_sizes for a in (args.attentions if dtype == "bfloat16" else ["sdpa"])
        ):
            backend = LocalBackend(
                args.model, None, batch_size=batch_size, dtype=dtype, attention=attention, cache_dir=args.cache_dir
            )
            backend_generate(backend, prompts[:batch_size], 4, 0.0, seed=0)  # warm-up
            requests = [Request.user(p, temperature=0.0, max_tokens=args.max_tokens) for p in prompts]
            start = time.perf_counter()
            out = backend.generate(requests, progress=False)
            seconds = time.perf_counter() - start
            backend.close()
            tokens = sum(c[0].tokens for c in out)
            runs[dtype, batch_size, attention] = (tokens / seconds, [str(c[0]) for c in out])
            prompt_tokens = sum(c[0].prompt_tokens or 0 for c in out)
            kv = sum((c[0].prompt_tokens or 0) + c[0].tokens / 2 for c in out) / len(out)
            flop = flop_per_token(config, kv)
            # The prompts' prefill is timed too, so its FLOP count: each prompt token attends to half
            # its prompt on average, and only a prompt's last position goes through the lm_head.
            prefill = prompt_tokens * flop_per_token(config, prompt_tokens / len(out) / 2, lm_head=False)
            prefill += len(out) * 2 * config.hidden_size * config.vocab_size
            gflops = (flop * tokens + prefill) / seconds / 1e9
            share = gflops / peaks[dtype]
            shares.setdefault(dtype, {})[batch_size] = share
            print(
                f"batch {batch_size:3d} {dtype:>8} {attention:>6}: {tokens / seconds:7.1f} tok/s "
                f"x {flop / 1e6:.0f} MFLOP/token "
                f"(mean KV {kv:.0f}) + prefill {prompt_tokens} tokens ({prefill / 1e12:.2f} TFLOP) = "
                f"{gflops:.1f} GFLOP/s, {100 * share:.0f}% of peak",
                flush=True,
            )
    if len(args.attentions) > 1 and "bfloat16" in args.dtypes:
        first, last = args.attentions[0], args.attentions[-1]
        for batch_size in args.batch_sizes:
            (base, base_texts), (new, texts) = runs["bfloat16", batch_size, first], runs["bfloat16", batch_size, last]
            same = sum(a == b for a, b in zip(base_texts, texts))
            # bf16 greedy answers drift from fp32's with any rounding: which attention drifts less.
            fp32 = runs.get(("float32", batch_size, "sdpa"), (0.0, []))[1]
            as_fp32 = " ".join(
                f"{a} {sum(x == y for x, y in zip(fp32, runs['bfloat16', batch_size, a][1]))}" for a in (first, last)
            )
            print(
                f"bf16 batch {batch_size}: attention {last} {new / base:.2f}x {first}'s tokens/s; "
                f"same greedy answers {same} of {len(texts)}" + (f"; the same as fp32's: {as_fp32}" if fp32 else "")
            )
    for dtype, by_batch in shares.items():
        best_batch = max(by_batch, key=by_batch.__getitem__)
        print(f"best batch {dtype}: {best_batch} ({100 * by_batch[best_batch]:.0f}% of peak)")
    recipe = args.batch_sizes[-1]
    names = {"float32": "fp32", "bfloat16": "bf16"}
    print(
        "roofline: "
        + " ".join(f"{names.get(d, d)} {100 * s[recipe]:.0f}%" for d, s in shares.items())
        + f" at batch {recipe}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--cache-dir", default=PathsConfig().cache_dir)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.8, help="0: greedy")
    parser.add_argument(
        "--prompts", type=int, default=len(PROMPTS), help="distinct prompts (past 32: the built-in query pool's)"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat each measurement (ratios per round)")
    parser.add_argument("--dtypes", nargs="+", help="compare the backend across weights dtypes, not against raw")
    parser.add_argument("--peak", action="store_true", help="matmul peak and the backend's share of the roofline")
    parser.add_argument(
        "--attentions", nargs="+", default=["sdpa", "autoif"], help="--peak: bf16 decode attentions (llm.attention)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    prompts = distinct_prompts(args.prompts)
    temperature = args.temperature

    print(
        f"torch threads: {torch.get_num_threads()}, prompts: {len(prompts)}, max_tokens: {args.max_tokens}, "
        f"temperature: {temperature}"
    )
    if args.peak:
        args.dtypes = args.dtypes or ["float32", "bfloat16"]
        roofline(args, prompts)
        return
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
