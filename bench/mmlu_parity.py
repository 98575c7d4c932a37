"""Full-run MMLU parity with lm-evaluation-harness (issue 31): lm-eval's HFLM scores every question of
an `autoif eval mmlu` run, and the two are compared question by question.

It reads the run's `mmlu_responses.jsonl` (each question's prompt, autoif's four log-likelihoods and
choice), scores the same prompts' continuations " A".." D" with HFLM on the same model loaded the
same way (`--dtype` as the run's `llm.dtype`), and prints how many choices agree, both accuracies,
the largest log-likelihood difference, and each question whose choice differs with autoif's margin
between its two best letters (a near-tie is where batch-dependent rounding can flip a choice).

HFLM has no response cache, so its numbers go to `<run>/mmlu_hflm.jsonl` a chunk of questions at a
time: a run that is cut off resumes from there. The whole test set is about 2.3x autoif's own time
(`bench/loglik.py`). Not a speed benchmark: the record behind the README's full-run comparison.

    .venv/bin/python bench/mmlu_parity.py RUN_DIR [--dtype float32] [--chunk 256] [--json OUT.json]

Ends with `mmlu_parity: same choice N/M, accuracy autoif A% hflm B%, largest |diff| D`.
Needs lm-eval (`pip install --no-deps lm-eval`, as the parity tests do).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tqdm import tqdm

from autoif.config import Config
from autoif.evals.choice import LETTERS, chosen_letter
from autoif.evals.loglik import LoglikScorer
from autoif.jsonl import atomic_write_text, read_jsonl, write_jsonl


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, help="an `autoif eval mmlu` output directory")
    ap.add_argument("--model", default="embedded", help="the run's model (as given to `autoif eval`)")
    ap.add_argument("--dtype", default="float32", help="the run's llm.dtype (float32, bfloat16)")
    ap.add_argument("--chunk", type=int, default=256, help="questions scored between two saves")
    ap.add_argument("--json", type=Path, help="write the comparison here too")
    args = ap.parse_args()
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    rows = read_jsonl(args.run / "mmlu_responses.jsonl")
    done_path = args.run / "mmlu_hflm.jsonl"
    theirs = {r["id"]: r["loglikelihoods"] for r in read_jsonl(done_path)} if done_path.exists() else {}
    todo = [r for r in rows if r["id"] not in theirs]
    if todo:
        llm = {"backend": "local", "model": args.model, "cache": False, "dtype": args.dtype}
        scorer = LoglikScorer(Config.model_validate({"llm": llm}))
        model, tokenizer = scorer.load()
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=16)
        with tqdm(total=len(rows), initial=len(rows) - len(todo), desc="HFLM", unit="q") as bar:
            for start in range(0, len(todo), args.chunk):
                chunk = todo[start : start + args.chunk]
                pairs = [(r["prompt"], f" {letter}") for r in chunk for letter in LETTERS]
                instances = [Instance("loglikelihood", {}, pair, n) for n, pair in enumerate(pairs)]
                scores = [ll for ll, _ in lm.loglikelihood(instances, disable_tqdm=True)]
                for n, r in enumerate(chunk):
                    theirs[r["id"]] = dict(zip(LETTERS, scores[4 * n : 4 * n + 4]))
                # The whole file rewritten atomically: a kill leaves the previous chunk's file whole.
                write_jsonl(done_path, [{"id": i, "loglikelihoods": s} for i, s in theirs.items()])
                bar.update(len(chunk))
        scorer.close()

    differ, largest, right = [], 0.0, {"autoif": 0, "hflm": 0}
    for r in rows:
        mine = [r["loglikelihoods"][x] for x in LETTERS]
        other = [theirs[r["id"]][x] for x in LETTERS]
        largest = max(largest, *(abs(a - b) for a, b in zip(mine, other)))
        a, b = chosen_letter(mine), chosen_letter(other)
        if a != r["choice"]:
            raise SystemExit(f"{r['id']}: the file's choice {r['choice']} is not its log-likelihoods' argmax {a}")
        right["autoif"] += a == r["answer"]
        right["hflm"] += b == r["answer"]
        if a != b:
            top = sorted(mine, reverse=True)
            differ.append({"id": r["id"], "autoif": a, "hflm": b, "answer": r["answer"], "margin": top[0] - top[1]})
    n = len(rows)
    summary = {
        "questions": n,
        "dtype": args.dtype,
        "same_choice": n - len(differ),
        "accuracy": {k: v / n for k, v in right.items()},
        "largest_abs_loglik_diff": largest,
        "differ": differ,
    }
    for d in differ:
        print(f"  {d['id']}: autoif {d['autoif']}, hflm {d['hflm']} (answer {d['answer']}), margin {d['margin']:.2e}")
    if args.json:
        atomic_write_text(args.json, json.dumps(summary, indent=2) + "\n")
    print(
        f"mmlu_parity: same choice {n - len(differ)}/{n}, accuracy autoif {100 * right['autoif'] / n:.2f}% "
        f"hflm {100 * right['hflm'] / n:.2f}%, largest |diff| {largest:.2e}"
    )


if __name__ == "__main__":
    main()
