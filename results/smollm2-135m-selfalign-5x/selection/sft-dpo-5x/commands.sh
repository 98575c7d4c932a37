#!/bin/bash
# Issue 29's "SFT then DPO" on the 5x data (the paper's SFT + offline DPO; c5 of the 1x selection at 5x).
# SFT from the base on the data step's 1,430 SFT records (lr 2e-5 as c5; one epoch: 90 steps of 16,
# already 2.6x c5's 34 steps over two epochs of 262 records, 21 minutes on the 2 cores), then the
# 5x recipe's DPO (1,663 query-level pairs, the same settings) from the SFT model, whose reference is
# the SFT model. fp32 training (bf16 off) as the recipe. Chosen on the 315-prompt dev set against the
# 5x DPO (selection/dpo-5x/); IFEval and IFBench in fp32 (the measure), then bf16 (the check): evaluate.sh.
# Needs the 5x data step: runs/smollm2-135m-selfalign-5x/data (results/smollm2-135m-selfalign-5x/selection/commands.sh).
# Resumable: rerun to go on (a training cut off goes on from its last checkpoint; evaluations from their caches).
set -e
cd "$(dirname "$0")/../../../.."
A=.venv/bin/autoif
D=runs/smollm2-135m-selfalign-5x/data
OUT=${OUT:-runs/5x-sft-dpo}
resume() { compgen -G "$1/checkpoint-*" >/dev/null && echo "--set resume=latest" || true; }
COMMON="--set global_batch_size=16 --set per_device_batch_size=8 --set max_length=1024 --set warmup_steps=0.1
  --set logging_steps=2 --set save_steps=10 --set bf16=off"
[ -d $OUT/sft/final ] || $A train sft --model embedded --data $D --output $OUT/sft $COMMON \
  --set learning_rate=2e-5 --set num_train_epochs=1 $(resume $OUT/sft)
[ -d $OUT/dpo/final ] || $A train dpo --model $OUT/sft/final --data $D --output $OUT/dpo $COMMON \
  --set level=query --set learning_rate=1e-5 --set beta=0.1 --set num_train_epochs=1 \
  --set max_rejected_tokens=192 $(resume $OUT/dpo)
M=$OUT/dpo/final
S=results/smollm2-135m-selfalign/selection
X=results/smollm2-135m-selfalign-5x/selection
P=$X/sft-dpo-5x
$X/evaluate.sh $M $OUT $P
cp $OUT/sft/trainer_state.json $P/sft_trainer_state.json
cp $OUT/dpo/trainer_state.json $P/dpo_trainer_state.json
# The dev set's ranking against IFEval's (fp32) over every configuration measured on both, this one included.
B=$S/rejected-bound
T=$(mktemp -d)
mkdir -p $T/base $T/c2 $T/c2-bound192 $T/dpo-5x $T/sft-dpo-5x
ln -s $PWD/$B/dev-base/dev_* $PWD/$S/base/ifeval_* $T/base/
ln -s $PWD/$B/dev-full/dev_* $PWD/$S/c2-dpo-greedy/ifeval_re* $T/c2/
ln -s $PWD/$B/dev-rej192/dev_* $PWD/$B/ifeval-rej192/ifeval_re* $T/c2-bound192/
ln -s $PWD/$X/dpo-5x/dev_re* $PWD/$X/dpo-5x/ifeval_re* $T/dpo-5x/
ln -s $PWD/$P/dev_re* $PWD/$P/fp32/ifeval_re* $T/sft-dpo-5x/
$A eval agreement $T/base $T/c2 $T/c2-bound192 $T/dpo-5x $T/sft-dpo-5x --json results/smollm2-135m-selfalign-5x/agreement_dev315_ifeval_fp32.json
rm -rf $T
