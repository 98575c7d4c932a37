#!/bin/bash
# Issue 28: what bf16 autocast in training does to what DPO learns, on a CPU where `bf16: auto` picks it
# (native bf16: AVX512_BF16). c2's DPO exactly as ../rejected-bound/'s unbounded arm (dpo-full: the
# recipe's data-greedy/ 437 query-level pairs, lr 1e-5, beta 0.1, 1 epoch, global batch 16, the fast
# settings), trained with bf16 autocast (fp32 weights and optimizer state), then scored on the 315 dev
# prompts in fp32 greedy (the measure) and compared with the fp32-trained arm and the base, whose
# answers are ../rejected-bound/'s. Resumable: rerun to go on.
set -e
cd "$(dirname "$0")/../../../.."
OUT=${OUT:-runs/bf16dev}
HERE=results/smollm2-135m-selfalign/selection/bf16-train
REJ=results/smollm2-135m-selfalign/selection/rejected-bound
DPO="--model embedded --data results/smollm2-135m-selfalign/data-greedy --set level=query --set learning_rate=1e-5
  --set beta=0.1 --set num_train_epochs=1 --set global_batch_size=16 --set per_device_batch_size=8
  --set warmup_steps=0.1 --set max_length=1024 --set logging_steps=2 --set save_steps=5 --set bf16=on"
DEV="--max-tokens 512 --set llm.batch_size=64 --set llm.dtype=float32 --set llm.cache=true"
extra=""
compgen -G "$OUT/dpo-bf16/checkpoint-*" >/dev/null && extra="--set resume=latest"
[ -d "$OUT/dpo-bf16/final" ] || .venv/bin/autoif train dpo $DPO $extra --output "$OUT/dpo-bf16"
[ -f "$OUT/dev-bf16/dev_results.json" ] || .venv/bin/autoif eval dev --model "$OUT/dpo-bf16/final" $DEV \
  --set paths.out="$OUT/dev-bf16" --set llm.cache_path=cache.sqlite --out "$OUT/dev-bf16"
mkdir -p $HERE/dev-bf16
cp $OUT/dev-bf16/dev_re* $HERE/dev-bf16/
cp $OUT/dpo-bf16/trainer_state.json $HERE/training_dpo_bf16.json
.venv/bin/autoif eval compare $REJ/dev-full/dev_results.json $HERE/dev-bf16/dev_results.json --json $HERE/compare_fp32_bf16.json
.venv/bin/autoif eval compare $REJ/dev-base/dev_results.json $HERE/dev-bf16/dev_results.json --json $HERE/compare_base_bf16.json
