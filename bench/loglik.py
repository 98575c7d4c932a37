"""MMLU log-likelihood speed: autoif's `LoglikScorer` against lm-evaluation-harness's HFLM.

All three score the same fixed slice of MMLU questions (the packaged test set's seeded subset, the
same one `autoif eval mmlu --limit N` takes) with the same model object in one process, one after
the other, zero-shot, the four continuations " A".." D" a question:

- `hflm-per-continuation`: HFLM with `logits_cache=False`, one model row per continuation (four a
  question), full-vocabulary logits at every position: what scoring without context sharing costs;
- `hflm`: HFLM as users run it (its one-token continuations of one context share a row);
- `autoif`: one row per distinct input (the four letters of a question share it), logits only at the
  scored position, batches cut by padded tokens (evals/loglik.py).

It prints each one's seconds a question (wall and process CPU), the ratio to autoif's, the load
average (the machine is shared: wall times depend on it) and the largest log-likelihood difference
from HFLM's (parity: below 1e-4).

    .venv/bin/python bench/loglik.py [--questions 32] [--threads 2] [--skip-per-continuation]

Needs lm-eval (`pip install --no-deps lm-eval`, as the parity tests do).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from autoif.config import Config
from autoif.evals.choice import LETTERS, MMLU_BENCHMARK, chosen_letter
from autoif.evals.data import load_records, subset
from autoif.evals.loglik import LoglikScorer


def timed(label: str, score, n: int, table: list) -> list[float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = score()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    table.append((label, wall / n, cpu / n, os.getloadavg()[0]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=32)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--skip-per-continuation", action="store_true", help="the slowest baseline left out")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    records, source = load_records(MMLU_BENCHMARK, None)
    config = Config.model_validate({"llm": {"backend": "local", "model": "embedded", "cache": False}})
    items = subset(MMLU_BENCHMARK.items(records, source), args.questions, config.seed)
    requests = [(item.prompt, [f" {letter}" for letter in LETTERS]) for item in items]
    scorer = LoglikScorer(config)
    model, tokenizer = scorer.load()
    pairs = [(ctx, cont) for ctx, conts in requests for cont in conts]
    instances = [Instance("loglikelihood", {}, pair, n) for n, pair in enumerate(pairs)]
    n = len(items)
    table: list = []
    print(f"{n} questions, {sum(len(tokenizer.encode(c)) for c, _ in requests)} prompt tokens, {args.threads} threads")

    runs = [("hflm", True)] + ([] if args.skip_per_continuation else [("hflm-per-continuation", False)])
    reference: list[float] = []
    for label, logits_cache in runs:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=16, logits_cache=logits_cache)
        scores = [ll for ll, _ in timed(label, lambda lm=lm: lm.loglikelihood(instances, disable_tqdm=True), n, table)]
        reference = reference or scores
    mine = [ll for row in timed("autoif", lambda: scorer.score(requests), n, table) for ll in row]
    scorer.close()

    ours = next(row for row in table if row[0] == "autoif")
    print(f"{'scorer':<24}{'wall s/q':>10}{'cpu s/q':>10}{'wall x':>9}{'cpu x':>8}{'load':>7}")
    for label, wall, cpu, load in table:
        print(f"{label:<24}{wall:>10.3f}{cpu:>10.3f}{wall / ours[1]:>9.2f}{cpu / ours[2]:>8.2f}{load:>7.1f}")
    print(f"largest |autoif - hflm| log-likelihood: {max(abs(a - b) for a, b in zip(mine, reference)):.2e}")
    same = sum(chosen_letter(mine[4 * q : 4 * q + 4]) == chosen_letter(reference[4 * q : 4 * q + 4]) for q in range(n))
    print(f"same choice as hflm: {same}/{n}")


if __name__ == "__main__":
    main()
