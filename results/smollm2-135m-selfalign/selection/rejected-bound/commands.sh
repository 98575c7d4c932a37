#!/bin/bash
# Issue 28: does bounding rejected answers to 192 tokens (max_rejected_tokens) change what DPO learns?
# c2's configuration (the recipe's DPO: data-greedy/'s 437 query-level pairs, lr 1e-5, beta 0.1, 1 epoch,
# global batch 16) trained twice with the fast settings, without and with the bound, each measured on
# the 315-prompt dev set in fp32 greedy, with the base beside them. Resumable: rerun to go on.
set -e
cd "$(dirname "$0")/../../../.."
OUT=${OUT:-runs/rejdev}
DPO="--model embedded --data results/smollm2-135m-selfalign/data-greedy --set level=query --set learning_rate=1e-5
  --set beta=0.1 --set num_train_epochs=1 --set global_batch_size=16 --set per_device_batch_size=8
  --set warmup_steps=0.1 --set max_length=1024 --set logging_steps=2 --set save_steps=5 --set bf16=off"
DEV="--max-tokens 512 --set llm.batch_size=64 --set llm.dtype=float32 --set llm.cache=true"
for arm in full rej192; do
  extra=""; [ "$arm" = rej192 ] && extra="--set max_rejected_tokens=192"
  # An arm cut off mid-way goes on from its last checkpoint.
  compgen -G "$OUT/dpo-$arm/checkpoint-*" >/dev/null && extra="$extra --set resume=latest"
  [ -d "$OUT/dpo-$arm/final" ] || .venv/bin/autoif train dpo $DPO $extra --output "$OUT/dpo-$arm"
done
for arm in full rej192 base; do
  model="$OUT/dpo-$arm/final"; [ "$arm" = base ] && model=embedded
  [ -f "$OUT/dev-$arm/dev_results.json" ] || .venv/bin/autoif eval dev --model "$model" $DEV \
    --set paths.out="$OUT/dev-$arm" --set llm.cache_path=cache.sqlite --out "$OUT/dev-$arm"
done
.venv/bin/autoif eval compare "$OUT/dev-full/dev_results.json" "$OUT/dev-rej192/dev_results.json" \
  --json "$OUT/compare_full_rej192.json"
.venv/bin/autoif eval compare "$OUT/dev-base/dev_results.json" "$OUT/dev-full/dev_results.json" \
  --json "$OUT/compare_base_full.json"
.venv/bin/autoif eval compare "$OUT/dev-base/dev_results.json" "$OUT/dev-rej192/dev_results.json" \
  --json "$OUT/compare_base_rej192.json"
