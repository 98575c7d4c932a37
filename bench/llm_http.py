"""Throughput of the openai backend against a raw concurrent client loop, on the same local server.

    .venv/bin/python bench/llm_http.py [--requests 24] [--concurrency 4] [--max-tokens 32] [--rounds 3]

Starts `python -m llama_cpp.server` with the SmolLM2 GGUF on loopback (tests/llm_server.py), then, in
alternating rounds, generates the same prompts with the same seeds, max_tokens and concurrency:
- raw: a plain `AsyncOpenAI` client, `asyncio.gather` under a semaphore, nothing else;
- backend: `OpenAIBackend.generate()` with the cache off (its retries, fan-out and accounting on).

Tokens are the completion tokens of the server's `usage` field. With fixed seeds, llama.cpp writes
the same tokens both ways, so tokens/s compares like with like. llama_cpp.server has no parallel
slots (one global lock: it computes one request at a time), so concurrency here keeps a request
queued behind the running one, which hides the client's round trip; both sides get the same
concurrency. Prints tokens/s of each and the ratio backend/raw (target >= 0.95).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import openai  # noqa: E402

from autoif.llm import Request  # noqa: E402
from autoif.llm.openai_backend import OpenAIBackend  # noqa: E402
from llm_server import LlamaServer  # noqa: E402

TOPICS = [
    "the sea",
    "a city at night",
    "winter",
    "a library",
    "a train",
    "bread",
    "a mountain",
    "rain",
    "a garden",
    "the moon",
    "a market",
    "a bridge",
]


def make_requests(count: int, max_tokens: int) -> list[Request]:
    return [
        Request.user(
            f"Write two sentences about {TOPICS[i % len(TOPICS)]}. ({i})",
            max_tokens=max_tokens,
            temperature=0.8,
            seed=1000 + i,
        )
        for i in range(count)
    ]


async def raw_loop(base_url: str, model: str, requests: list[Request], concurrency: int) -> int:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="EMPTY", max_retries=0, timeout=600)
    slots = asyncio.Semaphore(concurrency)

    async def one(r: Request) -> int:
        async with slots:
            resp = await client.chat.completions.create(
                model=model,
                messages=list(r.messages),
                temperature=r.sampling.temperature,
                top_p=r.sampling.top_p,
                max_tokens=r.sampling.max_tokens,
                seed=r.sampling.seed,
            )
        return resp.usage.completion_tokens

    try:
        return sum(await asyncio.gather(*(one(r) for r in requests)))
    finally:
        await client.close()


def timed(fn) -> tuple[int, float]:
    start = time.perf_counter()
    tokens = fn()
    return tokens, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=24)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3, help="alternating raw/backend rounds")
    ap.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra argument for llama_cpp.server, e.g. --server-arg=--n_threads=2",
    )
    args = ap.parse_args()

    requests = make_requests(args.requests, args.max_tokens)
    with LlamaServer(extra_args=tuple(a for arg in args.server_arg for a in arg.split("=", 1))) as server:
        model = str(server.model)
        print(
            f"llama_cpp.server on {server.base_url}: {args.requests} requests, max_tokens={args.max_tokens}, "
            f"concurrency={args.concurrency}, seeds fixed"
        )
        totals = {"raw": [0, 0.0], "backend": [0, 0.0]}
        with OpenAIBackend(model, base_url=server.base_url, max_concurrency=args.concurrency, cache=None) as b:
            b.generate(make_requests(2, 4), progress=False)  # warm up: loop thread, client, model pages

            def via_backend() -> int:
                before = b.stats.completion_tokens
                b.generate(requests, progress=False)
                return b.stats.completion_tokens - before

            for round_ in range(1, args.rounds + 1):
                for name, fn in (
                    ("raw", lambda: asyncio.run(raw_loop(server.base_url, model, requests, args.concurrency))),
                    ("backend", via_backend),
                ):
                    tokens, seconds = timed(fn)
                    totals[name][0] += tokens
                    totals[name][1] += seconds
                    print(f"round {round_} {name:8s} {tokens:6d} tokens {seconds:7.2f} s {tokens / seconds:8.1f} tok/s")
    raw_tps = totals["raw"][0] / totals["raw"][1]
    backend_tps = totals["backend"][0] / totals["backend"][1]
    print(f"raw client loop   {raw_tps:8.1f} tok/s")
    print(f"OpenAIBackend     {backend_tps:8.1f} tok/s")
    print(f"ratio backend/raw {backend_tps / raw_tps:8.3f}  (target >= 0.95)")


if __name__ == "__main__":
    main()
