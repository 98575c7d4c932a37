#!/bin/bash
# Issue 29's "GRPO with the verification functions as reward (short)" on the 5x data: TRL's
# GRPOTrainer from the base (the embedded model), rewarded by autoif's verifier reward (pass rate over
# the prompt's functions in the sandbox; 0 for an answer cut off at 512 tokens or a degenerate one),
# 8 completions a prompt at T 0.8, 4 prompts a step (32 completions, one generation batch a step),
# on the distinct prompts of the 5x dpo.jsonl (those with a passing and a failing answer among the
# data's 5, so a group's rewards differ), lr 1e-5 (the DPO runs' rate; GRPO's usual 1e-6 moves a
# 135M model nothing in a few steps), no KL term (beta 0, TRL's default), fp32 training, STEPS steps.
# Measured (2026-12-08, 2-core AMD EPYC): the first step took ~5.5 minutes of its own (590 s wall with a
# 4.3-minute pause for a benchmark) and 12 GB of memory: TRL samples the 32 completions with
# transformers' generate (mean 162 tokens, 4 of 32 cut off at 512) and scores them with the whole
# vocabulary's logits in fp32; reward 0.34 mean, a quarter of the groups with no spread. 10 steps (40
# prompts) are ~55 minutes, a run that moves the model many hours: not run to the end yet.
# Evaluated as every configuration here (evaluate.sh). Resumable: rerun to go on.
set -e
cd "$(dirname "$0")/../../../.."
A=.venv/bin/autoif
D=runs/smollm2-135m-selfalign-5x/data
OUT=${OUT:-runs/5x-grpo}
STEPS=${STEPS:-12}
R=; ls -d $OUT/train/checkpoint-* >/dev/null 2>&1 && R="--set resume=latest"
[ -d $OUT/train/final ] || $A train grpo --model embedded --data $D --output $OUT/train \
  --set data_file=dpo.jsonl --set num_generations=8 --set global_batch_size=32 --set per_device_batch_size=8 \
  --set max_completion_length=512 --set temperature=0.8 --set learning_rate=1e-5 --set beta=0 \
  --set max_steps=$STEPS --set warmup_steps=0.1 --set logging_steps=1 --set save_steps=2 --set bf16=off \
  --set seed=42 $R
M=$OUT/train/final
P=results/smollm2-135m-selfalign-5x/selection/grpo-5x
results/smollm2-135m-selfalign-5x/selection/evaluate.sh $M $OUT $P
cp $OUT/train/trainer_state.json $P/
