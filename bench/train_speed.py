"""Training speed: trained tokens/s and peak memory of `autoif train dpo` and `autoif train sft`,
today's settings against each faster one, in one run, with every step's loss.

The data is a fixed slice of the published run (results/smollm2-135m-selfalign/data-greedy/): pairs of
`dpo.jsonl` at the recipe's level (query) and records of `sft.jsonl` at evenly spaced quantiles of
their length, so that the slice pads and loops as the whole file does; the
model is the embedded SmolLM2-135M-Instruct. DPO takes the SmolLM2 5x recipe's settings
(recipes/smollm2-135m-selfalign-5x.yaml), SFT `autoif train sft`'s defaults, both with a smaller
optimizer step so that a few steps fit. Each setting trains the same first steps, in a process of
its own (so that its peak memory, VmHWM, is its own), through the same `train(settings)` that
`autoif train` calls; its time is that whole call (model load, tokenization, reference pass, steps,
saving), with torch, transformers, datasets and TRL imported before it starts: importing them is the
process's start-up (~8-16 s here), the same for every setting and for any amount of data. Trained
tokens are the slice's tokens (prompt and answer, chosen and rejected for DPO, up to max_length) as
today's settings train them, the same count for every setting, so a ratio is a ratio of times; a
setting that trains fewer tokens (max_rejected_tokens) is faster by skipping them.

Settings (each adds to today's, which are: reference pass at every step, random order, TRL's forward, fp32,
DPO 2 pairs a forward pass and every rejected token, as the recipe had it):
  precompute   reference log-probs once per pair before training (precompute_ref_log_probs)
  grouped      each step's rows ordered by length (group_by_length)
  trimmed      the trimmed CPU forward: no padding, LM head on answer tokens only (cpu_forward)
  exact        DPO: all three and a step's pairs (up to 8) in one pass (with the trimmed forward a pass
               costs its real tokens, not its longest row's); fp32 arithmetic unchanged: same losses to 4 digits
  fast         what runs now: SFT grouped and trimmed (`autoif train sft`'s defaults; the same losses to 4
               digits); DPO exact and the 5x recipe's bound on rejected answers (max_rejected_tokens: 192,
               not an `autoif train` default; it trains fewer tokens, so other losses; measured on the dev
               set to change nothing detectable, see the recipe)
  fast+rejN    DPO exact, and rejected answers bounded to N tokens (max_rejected_tokens)
  fast+passN   fast, with N rows a forward pass (per_device_batch_size; only with --pass-rows N)
  fast+bf16    fast, and bf16 autocast (bf16: on): measured where the probe finds bf16 autocast faster
               (there `bf16: auto`, autoif train's default, takes it, so it is the fast setting of the last
               line), or with --bf16 (on a CPU without native bf16 it is several times slower)

    .venv/bin/python bench/train_speed.py                       # today and fast: ~9 minutes on 2 idle cores
    .venv/bin/python bench/train_speed.py --repeats 2 --settings exact   # best of two; exact beside fast
    .venv/bin/python bench/train_speed.py --only dpo --settings precompute grouped trimmed fast+rej128

Ends with `train_speed: dpo X.XXx sft Y.YYx`: the fast settings over today, trained tokens/s, where the fast
settings are `autoif train`'s defaults on this machine (fast, or fast+bf16 where bf16 autocast is faster).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "results" / "smollm2-135m-selfalign" / "data-greedy"
RECIPE = ROOT / "recipes" / "smollm2-135m-selfalign-5x.yaml"
TODAY = {"group_by_length": False, "cpu_forward": False, "bf16": "off"}  # and for DPO:
TODAY_DPO = {**TODAY, "precompute_ref_log_probs": False, "per_device_batch_size": 2, "max_rejected_tokens": None}


def settings_for(trainer: str, args) -> dict[str, dict]:
    """label -> settings overriding today's, in the order they run."""
    grouped, trimmed = {"group_by_length": True}, {"cpu_forward": True}
    if trainer == "sft":
        sft = {"today": {}, "fast": {**grouped, **trimmed}, "grouped": grouped, "trimmed": trimmed}
        return with_variants(sft, args)
    both = {**grouped, **trimmed, "precompute_ref_log_probs": True, "per_device_batch_size": min(8, args.dpo_pairs)}
    out = {
        "today": {},
        "fast": {**both, "max_rejected_tokens": recipe_dpo_settings().get("max_rejected_tokens")},
        "exact": both,
        "precompute": {"precompute_ref_log_probs": True},
        "grouped": grouped,
        "trimmed": trimmed,
    }
    for n in args.rejected_tokens:
        out[f"fast+rej{n}"] = {**both, "max_rejected_tokens": n}
    return with_variants(out, args)


def with_variants(out: dict[str, dict], args) -> dict[str, dict]:
    """`out` and the variants of its fast setting the arguments ask for: fast+passN, fast+bf16."""
    for n in args.pass_rows:
        out[f"fast+pass{n}"] = {**out["fast"], "per_device_batch_size": n}
    if args.bf16:
        out["fast+bf16"] = {**out["fast"], "bf16": "on"}
    return out


def recipe_dpo_settings() -> dict:
    """The `set` of the recipe's DPO step."""
    import yaml

    return next(s for s in yaml.safe_load(RECIPE.read_text())["train"] if s["trainer"] == "dpo")["set"]


def base_settings(trainer: str, data_file: Path, rows: int, steps: int) -> dict:
    common = {
        "model": "embedded",
        "data": str(data_file),
        "max_steps": steps,
        "global_batch_size": rows,
        "logging_steps": 1,
        "save_steps": 10**6,  # no checkpoint inside the measured steps
        "report_to": "none",
        # No warm-up: the learning rate of a short run's first steps would be ~0, and every step's loss log 2.
        "warmup_steps": 0,
    }
    if trainer == "dpo":
        recipe = {k: v for k, v in recipe_dpo_settings().items() if k not in ("save_steps", "logging_steps")}
        return {**recipe, **common, "global_batch_size": rows}
    return common


def slice_data(trainer: str, rows: int, out: Path) -> Path:
    """`rows` records of the trainer's file (DPO: at the recipe's level, query) at evenly spaced quantiles
    of their length, in file order: the slice has the published length distribution (DPO: 14% of the
    rejected answers loop to 512 tokens; the first 16 pairs hold 44%), whose padding dominates."""
    name = f"{trainer}.jsonl"
    lines = (DATA / name).read_text().splitlines()
    if trainer == "dpo":
        lines = [line for line in lines if json.loads(line).get("level") == "query"]
    if len(lines) < rows:
        raise SystemExit(f"{DATA / name} has {len(lines)} usable records, fewer than {rows}")
    by_length = sorted(range(len(lines)), key=lambda i: len(lines[i]))
    picked = sorted(by_length[int((k + 0.5) * len(lines) / rows)] for k in range(rows))
    path = out / name
    path.write_text("\n".join(lines[i] for i in picked) + "\n")
    return path


def trained_tokens(trainer: str, data_file: Path, max_length: int) -> int:
    """Tokens of the slice as today's settings train them (chat template applied, cut at max_length)."""
    from transformers import AutoTokenizer

    from autoif.config import PathsConfig
    from autoif.llm.embedded import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("embedded", PathsConfig().cache_dir))

    def count(messages: list[dict]) -> int:
        return min(
            max_length, len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])
        )

    total = 0
    for line in data_file.read_text().splitlines():
        record = json.loads(line)
        if trainer == "dpo":
            total += count(record["prompt"] + record["chosen"]) + count(record["prompt"] + record["rejected"])
        else:
            total += count(record["messages"])
    return total


def child(spec: dict) -> None:
    """One training run in this process; prints its result as the last line (JSON)."""
    import logging

    import datasets  # noqa: F401  (start-up, not training: see the module's docstring)
    import transformers  # noqa: F401
    import trl  # noqa: F401
    import trl.trainer.dpo_trainer  # noqa: F401  (TRL imports its trainers lazily)
    import trl.trainer.sft_trainer  # noqa: F401

    from autoif.train import trainer

    logging.basicConfig(level=logging.WARNING)
    settings_class, train = trainer(spec["trainer"])
    settings = settings_class(**spec["settings"])
    start = time.perf_counter()
    train(settings)
    seconds = time.perf_counter() - start
    state = json.loads((Path(settings.output_dir) / "trainer_state.json").read_text())
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    peak_kib = next(
        int(line.split()[1]) for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM")
    )
    print(json.dumps({"seconds": seconds, "losses": losses, "peak_gib": peak_kib / 2**20}))


def run_setting(trainer: str, base: dict, overrides: dict, work: Path) -> dict:
    out = tempfile.mkdtemp(dir=work, prefix=f"{trainer}-")
    today = TODAY_DPO if trainer == "dpo" else TODAY
    spec = {"trainer": trainer, "settings": {**base, **today, **overrides, "output_dir": out}}
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True, cwd=ROOT
    )
    if proc.returncode != 0:
        raise SystemExit(f"{trainer} {overrides}: failed\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def same_to_4_digits(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(f"{x:.4g}" == f"{y:.4g}" for x, y in zip(a, b, strict=True))


def bench(trainer: str, rows: int, steps: int, args, work: Path) -> dict[str, float]:
    """Each setting's speed-up over today's (trained tokens/s, the best of `args.repeats` runs)."""
    data_file = slice_data(trainer, rows * steps, work)
    base = base_settings(trainer, data_file, rows, steps)
    from autoif.train import trainer as trainer_of

    max_length = base.get("max_length", trainer_of(trainer)[0]().max_length)
    tokens = trained_tokens(trainer, data_file, max_length)
    print(f"\n{trainer}: {steps} steps of {rows} rows, {tokens} trained tokens; settings {base}")
    print(f"{'setting':<16}{'seconds':>9}{'tokens/s':>10}{'x today':>9}{'peak GiB':>10}  losses per step")
    labels = {k: v for k, v in settings_for(trainer, args).items() if k in ("today", "fast") or k in args.settings}
    results: dict[str, dict] = {}
    order = [label for _ in range(args.repeats) for label in ("today", "fast")] + [
        label for label in labels if label not in ("today", "fast")
    ]
    for label in order:
        result = run_setting(trainer, base, labels[label], work)
        # A repeat keeps the faster run: a busy machine only ever slows one down.
        if label not in results or result["seconds"] < results[label]["seconds"]:
            results[label] = result
    today = results["today"]
    for label, r in results.items():
        speedup = today["seconds"] / r["seconds"]
        note = ""
        if label != "today":
            if same_to_4_digits(r["losses"], today["losses"]):
                note = "  (same as today to 4 digits)"
            else:
                diff = max(abs(x - y) for x, y in zip(r["losses"], today["losses"], strict=False))
                note = f"  (max |difference| from today {diff:.2e})"
        losses = " ".join(f"{x:.6f}" for x in r["losses"])
        print(
            f"{label:<16}{r['seconds']:>9.1f}{tokens / r['seconds']:>10.1f}{speedup:>8.2f}x{r['peak_gib']:>10.2f}  "
            f"{losses}{note}"
        )
    return {label: today["seconds"] / r["seconds"] for label, r in results.items()}


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(json.loads(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # A call's fixed costs (model load, tokenization, saving) are the same for every setting, so the
    # shorter a run, the lower its ratio: DPO 3 steps of 8 pairs and SFT 2 of 16 (2.66x and 1.99x) took
    # 10.5 minutes on 2 idle cores, over the 10 the benchmark may take; DPO's 6 pairs a step and SFT's
    # 20 rows trade a quarter of DPO's time for more SFT rows.
    parser.add_argument("--dpo-steps", type=int, default=3)
    parser.add_argument("--dpo-pairs", type=int, default=6, help="pairs per optimizer step (recipe: 16)")
    parser.add_argument("--sft-steps", type=int, default=2)
    parser.add_argument("--sft-rows", type=int, default=20, help="records per optimizer step (default: 128)")
    parser.add_argument("--rejected-tokens", type=int, nargs="*", default=[128], help="fast+rejN settings")
    parser.add_argument("--pass-rows", type=int, nargs="*", default=[], help="fast+passN settings: N rows a pass")
    parser.add_argument("--bf16", action="store_true", help="also measure bf16 autocast")
    parser.add_argument("--repeats", type=int, default=1, help="runs of today and fast each, alternating (best kept)")
    parser.add_argument("--only", choices=["dpo", "sft"])
    parser.add_argument(
        "--settings",
        nargs="*",
        default=[],
        help="settings besides today and fast to measure: exact, precompute, grouped, trimmed, fast+rejN (with "
        "--rejected-tokens N), fast+bf16 (with --bf16); none by default, so the defaults run in 10 minutes",
    )
    args = parser.parse_args()

    import torch

    from autoif.config import PathsConfig
    from autoif.precision import CACHE_FILE, cpu_bf16_autocast_faster, cpu_name

    print(f"{cpu_name()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    from transformers import AutoConfig

    from autoif.llm.embedded import resolve_model

    cache_dir = PathsConfig().cache_dir
    config = AutoConfig.from_pretrained(resolve_model("embedded", cache_dir))
    faster = cpu_bf16_autocast_faster(config, cache_dir)
    probe = json.loads((Path(cache_dir).expanduser() / CACHE_FILE).read_text())
    print(
        f"bf16 autocast probe: {probe}: bf16 {'faster' if faster else 'not faster'}; bf16=auto trains in "
        f"{'bf16' if faster else 'fp32'}"
    )
    # The fast settings are what `autoif train` runs by default on this machine: with bf16 autocast where
    # `bf16: auto` takes it (the probe above), so fast+bf16 is measured and is the line's setting.
    fast = "fast+bf16" if faster else "fast"
    if faster:
        args.bf16 = True
        args.settings = [*args.settings, "fast+bf16"]
    ratios = {"dpo": 0.0, "sft": 0.0}
    with tempfile.TemporaryDirectory(prefix="train-speed-") as tmp:
        for trainer, rows, steps in (("dpo", args.dpo_pairs, args.dpo_steps), ("sft", args.sft_rows, args.sft_steps)):
            if args.only in (None, trainer):
                ratios[trainer] = bench(trainer, rows, steps, args, Path(tmp))[fast]
    print(f"fast settings here: {fast} (autoif train's defaults on this machine)")
    print(f"train_speed: dpo {ratios['dpo']:.2f}x sft {ratios['sft']:.2f}x")


if __name__ == "__main__":
    main()
