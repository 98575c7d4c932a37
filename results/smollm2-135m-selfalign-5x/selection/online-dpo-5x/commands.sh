#!/bin/bash
# Issue 29's "online DPO with K >= 8 samples per prompt" on the 5x data: one iteration of the paper's
# online DPO from the model the dev set chose (FROM: SFT then DPO, the 5x recipe's model: `make
# reproduce EXPERIMENT=smollm2-135m-selfalign-5x` makes it; selection/sft-dpo-5x/'s is the same, its
# fp32 answers byte-identical), 8 samples per prompt (T 0.8,
# bf16 sampler, batch 128) on a seeded 400 of the 1,116 distinct prompts of the 5x dpo.jsonl, scored by
# their functions in the sandbox, pairs as the export builds them (chosen pass rate >= 0.5, rejected
# 0 or cut off at 512 tokens, at most 2 per prompt), then DPO with the 5x recipe's settings (reference:
# FROM, the paper's Eq. 2), fp32 training. The 1x selection's c3 at 5x with twice the samples per prompt.
# Evaluated as every configuration here (evaluate.sh).
# Resumable: rerun to go on (an iteration is kept once saved; evaluations from their caches).
set -e
cd "$(dirname "$0")/../../../.."
A=.venv/bin/autoif
D=runs/smollm2-135m-selfalign-5x/data
FROM=${FROM:-runs/smollm2-135m-selfalign-5x/train/dpo/final}
OUT=${OUT:-runs/5x-online-dpo}
[ -d $OUT/train/iter-1 ] || $A train online-dpo --model $FROM --data $D --output $OUT/train \
  --set data_file=dpo.jsonl --set max_prompts=400 --set iterations=1 --set samples_per_prompt=8 \
  --set temperature=0.8 --set max_new_tokens=512 --set final_eval=false --set sampler=local \
  --set sampling_batch_size=128 --set sampling_dtype=bfloat16 --set max_pairs_per_prompt=2 \
  --set truncated_rejected=true --set learning_rate=1e-5 --set beta=0.1 --set num_train_epochs=1 \
  --set global_batch_size=16 --set per_device_batch_size=8 --set max_length=1024 --set warmup_steps=0.1 \
  --set max_rejected_tokens=192 --set logging_steps=2 --set save_steps=10 --set bf16=off
M=$OUT/train/iter-1
P=results/smollm2-135m-selfalign-5x/selection/online-dpo-5x
results/smollm2-135m-selfalign-5x/selection/evaluate.sh $M $OUT $P
cp $OUT/train/online_dpo_log.jsonl $P/
