#!/bin/bash
# One 5x configuration's evaluations (issue 29), as every configuration here is measured: the
# 315-prompt dev set (the choice), IFEval and IFBench in fp32 (the measure), then in bf16 (the check)
# beside the base decoded in bf16 on the same machine (bf16 answers depend on the CPU; the data step's
# cache keys them by the machine, so where they were made they are read from it, elsewhere decoded:
# ~10 min each). Copied to P and compared with the base (each decoding, and per prompt over both) and
# with the DPO-only 5x model. Resumable: every evaluation reads and adds to its response cache.
#   results/smollm2-135m-selfalign-5x/selection/evaluate.sh MODEL OUT P
set -e
cd "$(dirname "$0")/../../.."
M=$1 OUT=$2 P=$3
A=.venv/bin/autoif
D=runs/smollm2-135m-selfalign-5x/data
E="--max-tokens 512 --set seed=42 --set llm.backend=local --set llm.cache=true"
FP32="$E --set llm.dtype=float32 --set llm.batch_size=64"
BF16="$E --set llm.dtype=bfloat16 --set llm.batch_size=128 --set llm.attention=sdpa"
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
mkdir -p $P && cp $OUT/dev/dev_re* $P/
for d in fp32 bf16 base-bf16; do mkdir -p $P/$d && cp $OUT/$d/ifeval_re* $OUT/$d/ifbench_re* $P/$d/; done
$A eval compare $S/rejected-bound/dev-base/dev_results.json $P/dev_results.json --json $P/dev_compare_base.json
$A eval compare $X/dpo-5x/dev_results.json $P/dev_results.json --json $P/dev_compare_dpo5x.json
for b in ifeval ifbench; do
  $A eval compare $S/base/${b}_results.json $P/fp32/${b}_results.json --json $P/fp32/${b}_compare_base.json
  $A eval compare $X/dpo-5x/${b}_results.json $P/fp32/${b}_results.json --json $P/fp32/${b}_compare_dpo5x.json
  $A eval compare $P/base-bf16/${b}_results.json $P/bf16/${b}_results.json --json $P/bf16/${b}_compare_base.json
  $A eval compare $S/base/${b}_results.json,$P/base-bf16/${b}_results.json $P/fp32/${b}_results.json,$P/bf16/${b}_results.json \
    --decodings fp32,bf16 --json $P/${b}_compare_base_fp32_bf16.json
done
