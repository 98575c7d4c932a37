#!/bin/bash
# c5-sft-dpo: the paper's SFT + offline DPO. SFT from the base on data-greedy's 262 SFT records
# (lr 2e-5, 2 epochs), then c2's DPO (437 query-level pairs) from the SFT model (reference = SFT model).
# Run from the repository root. Dev in fp32 (as the selection table), IFEval and IFBench in bf16 at batch 128 (as the recipe).
set -e
A=.venv/bin/autoif
D=results/smollm2-135m-selfalign/data-greedy
$A train sft --model embedded --data $D --output runs/train/c5-sft \
  --set learning_rate=2e-5 --set num_train_epochs=2 --set global_batch_size=16 \
  --set per_device_batch_size=2 --set max_length=1024 --set warmup_steps=0.1 --set logging_steps=2 --set save_steps=10
$A train dpo --model runs/train/c5-sft/final --data $D --output runs/train/c5-sft-dpo \
  --set level=query --set learning_rate=1e-5 --set beta=0.1 --set num_train_epochs=1 --set global_batch_size=16 \
  --set per_device_batch_size=2 --set max_length=1024 --set warmup_steps=0.1 --set logging_steps=2 --set save_steps=10
M=runs/train/c5-sft-dpo/final
$A eval dev --model $M --max-tokens 512 --out runs/dev/c5 --set llm.batch_size=64
$A eval compare results/smollm2-135m-selfalign/selection/base/dev_results.json runs/dev/c5/dev_results.json --json runs/dev/c5/dev_compare_base.json
$A eval compare runs/dev/c3/dev_results.json runs/dev/c5/dev_results.json --json runs/dev/c5/dev_compare_c3.json
for b in ifeval ifbench; do
  $A eval $b --model $M --max-tokens 512 --out runs/eval/c5 --set seed=42 --set llm.backend=local --set llm.batch_size=128 --set llm.dtype=bfloat16 --set llm.attention=sdpa --set llm.cache=true --set llm.cache_path=${b}_cache.sqlite
  $A eval compare runs/smollm2-135m-selfalign/eval/base/${b}_results.json runs/eval/c5/${b}_results.json --json runs/eval/c5/${b}_compare_base.json
  $A eval compare runs/smollm2-135m-selfalign/eval/dpo/${b}_results.json runs/eval/c5/${b}_results.json --json runs/eval/c5/${b}_compare_c2.json
done
echo ALL DONE
