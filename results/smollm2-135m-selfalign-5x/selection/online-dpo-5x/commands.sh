#!/bin/bash
# Issue 29's "online DPO with K >= 8 samples per prompt" on the 5x data: one iteration of the paper's
# online DPO from the 5x DPO model (FROM; the model the dev set chose), 8 samples per prompt (T 0.8,
# bf16 sampler, batch 128) on a seeded 400 of the 1,116 distinct prompts of the 5x dpo.jsonl, scored by
# their functions in the sandbox, pairs as the export builds them (chosen pass rate >= 0.5, rejected
# 0 or cut off at 512 tokens, at most 2 per prompt), then DPO with the 5x recipe's settings (reference:
# FROM, the paper's Eq. 2), fp32 training. The 1x selection's c3 at 5x with twice the samples per prompt.
# Evaluated as every configuration: the 315-prompt dev set, IFEval and IFBench in fp32 (the measure),
# then bf16 (the check) against the base decoded in bf16 on the same machine.
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
E="--max-tokens 512 --set seed=42 --set llm.backend=local --set llm.cache=true"
FP32="$E --set llm.dtype=float32 --set llm.batch_size=64"
BF16="$E --set llm.dtype=bfloat16 --set llm.batch_size=128"
$A eval dev --model $M $FP32 --out $OUT/dev --set paths.out=$OUT/dev --set llm.cache_path=cache.sqlite
for b in ifeval ifbench; do
  $A eval $b --model $M $FP32 --out $OUT/fp32 --set paths.out=$OUT/fp32 --set llm.cache_path=${b}_cache.sqlite
done
for b in ifeval ifbench; do
  $A eval $b --model $M $BF16 --out $OUT/bf16 --set paths.out=$OUT/bf16 --set llm.cache_path=${b}_cache.sqlite
  $A eval $b --model embedded $BF16 --out $OUT/base-bf16 --set paths.out=$OUT/base-bf16 --set llm.cache_path=$PWD/$D/llm_cache.sqlite
done
S=results/smollm2-135m-selfalign/selection
X=results/smollm2-135m-selfalign-5x/selection
P=$X/online-dpo-5x
cp $OUT/dev/dev_re* $OUT/train/online_dpo_log.jsonl $P/
for d in fp32 bf16; do mkdir -p $P/$d && cp $OUT/$d/ifeval_re* $OUT/$d/ifbench_re* $P/$d/; done
cp $M/trainer_state.json $P/ 2>/dev/null || true
$A eval compare $S/rejected-bound/dev-base/dev_results.json $P/dev_results.json --json $P/dev_compare_base.json
$A eval compare $X/dpo-5x/dev_results.json $P/dev_results.json --json $P/dev_compare_dpo5x.json
for b in ifeval ifbench; do
  $A eval compare $S/base/${b}_results.json $P/fp32/${b}_results.json --json $P/fp32/${b}_compare_base.json
  $A eval compare $X/dpo-5x/${b}_results.json $P/fp32/${b}_results.json --json $P/fp32/${b}_compare_dpo5x.json
  $A eval compare $OUT/base-bf16/${b}_results.json $P/bf16/${b}_results.json --json $P/bf16/${b}_compare_base.json
done
