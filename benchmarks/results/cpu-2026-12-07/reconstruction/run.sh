#!/usr/bin/env bash
# BENCHMARKS.md "Block reconstruction (issue 25)": the commands behind every row, one process per line, each on one
# torch thread, on the lead's cpu-budget synthetic set of the shared ResNet-20 (seed 0: 512 images x 200 iterations,
# made by `benchmarks/cifar10_accuracy.py --budget cpu --synthetic DIR`) and a 32-image ViT set the first ViT command
# synthesizes (PSAQ-ViT's 32 images x 1,000 iterations). The --set learning rates equal the cpu/vit-cpu budgets'
# own (ten times Genie's); the JSON lands in OUT, the per-unit log lines on stderr.
set -euo pipefail
SET=${SET:-/work/cache/syn/r20-cpu-seed0}
VIT_SET=${VIT_SET:-/work/cache/r25/vit-syn-s0}
VIT128_SET=${VIT128_SET:-/work/cache/r25/vit-syn128-s0}   # synthesized by the vit128 row when absent (128 x 1,000)
SET1=${SET1:-/work/cache/syn/r20-cpu-seed1}               # synthesized by the seed1 rows when absent (512 x 200)
SET2=${SET2:-/work/cache/syn/r20-cpu-seed2}               # synthesized by the seed2 row when absent (512 x 200)
VIT128_SET1=${VIT128_SET1:-/work/cache/r25/vit-syn128-s1} # synthesized by the vit128-s1-recon row when absent
OUT=${OUT:-benchmarks/results/cpu-2026-12-07/reconstruction}
LR="--set reconstruct_lr=0.01 --set reconstruct_lr_weight_scale=1e-3 --set reconstruct_lr_act_scale=4e-4"
B="python benchmarks/reconstruct_accuracy.py --json --threads 1 --no-progress --synthetic $SET $LR"
V="python benchmarks/reconstruct_accuracy.py --json --threads 1 --no-progress --synthetic $VIT_SET --budget vit-cpu \
   --teacher ../shared/data/teachers/cifar10-vit-tiny --bits W4A4 --rules uniform --data lossless,jpeg"
D="--data lossless,jpeg"
LAST="--set reconstruct_synq_stage=last_block"
row() { local name=$1; shift; "$@" > "$OUT/$name.json"; }
case "${1:-}" in
  w3-recon)          row w3-recon-j $B --bits W3A3 --rules uniform --variants recon $D ;;
  w3-synq-last-lpf)  row w3-synq-last-lpf $B --bits W3A3 --rules uniform --variants recon_synq $LAST $D ;;
  w3-synqraw-last)   row w3-synqraw-last-j $B --bits W3A3 --rules uniform --variants recon_synq_raw $LAST $D ;;
  w3-synqraw-net)    row w3-synq-net-lowlr $B --bits W3A3 --rules uniform --variants recon_synq_raw \
                       --set reconstruct_synq_stage=network --set reconstruct_synq_steps=100 $D ;;
  w4w2-recon)        row w4w2-recon $B --bits W4A4,W2A4 --rules uniform,genie --variants recon $D ;;
  w4w2-synq)         row w4w2-synq $B --bits W4A4,W2A4 --rules uniform,genie --variants recon_synq $LAST $D ;;
  w3-genie-recon)    row w3-genie-recon $B --bits W3A3 --rules genie --variants recon $D ;;
  w3-genie-synq)     row w3-genie-synq $B --bits W3A3 --rules genie --variants recon_synq $LAST $D ;;
  ceilings)          row ceilings $B --ceiling-only --bits W4A4,W3A3,W2A4 --rules uniform --variants recon $D ;;
  export-w4a4)       row export-w4a4 $B --bits W4A4 --rules uniform --variants recon --set deploy_placement=int8 \
                       --export "${EXPORT_DIR:-/tmp/export-w4a4}" ;;
  vit-recon)         row vit-w4-recon $V --variants recon ;;
  vit-synq)          row vit-w4-synq $V --variants recon_synq $LAST ;;
  synqraw-w4)        row synqraw-w4 $B --bits W4A4 --rules uniform --variants recon_synq_raw $LAST $D ;;
  synqraw-w2)        row synqraw-w2 $B --bits W2A4 --rules uniform --variants recon_synq_raw $LAST $D ;;
  vit128)            row vit128-w4 python benchmarks/reconstruct_accuracy.py --json --threads 1 --no-progress \
                       --synthetic "$VIT128_SET" --budget vit-cpu-128 --teacher ../shared/data/teachers/cifar10-vit-tiny \
                       --bits W4A4 --rules uniform --data lossless,jpeg --variants recon,recon_synq $LAST ;;
  vit128-ablation)   row vit128-ablation python benchmarks/reconstruct_accuracy.py --json --threads 1 --no-progress \
                       --synthetic "$VIT128_SET" --budget vit-cpu-128 --teacher ../shared/data/teachers/cifar10-vit-tiny \
                       --bits W4A4 --rules uniform --data lossless,jpeg --variants recon_synq_raw,recon_lpf $LAST ;;
  seed1-w3)          row seed1-w3 python benchmarks/reconstruct_accuracy.py --json --threads 1 --no-progress --seed 1 \
                       --synthetic "$SET1" $LR $LAST $D --bits W3A3 --rules uniform,genie --variants recon,recon_synq ;;
  seed1-w2w4)        row seed1-w2w4 python benchmarks/reconstruct_accuracy.py --json --threads 1 --no-progress --seed 1 \
                       --synthetic "$SET1" $LR $LAST $D --bits W2A4,W4A4 --rules uniform,genie --variants recon,recon_synq ;;
  mixed-w4-recon)    # the W4-size allocation of the mixed-precision section (its mixed-w4 row), reconstructed
                     LW=$(python -c "import json; d = json.load(open('benchmarks/results/cpu-2026-12-06/mixed_precision/mixed-w4.json')); print(json.dumps({l['name']: l['w_bits'] for l in d['plan']['layers']}))")
                     row mixed-w4-recon $B --bits W4A4 --rules uniform --variants recon,recon_synq $LAST $D \
                       --set "layer_w_bits=$LW" ;;
  both-s0)           row both-s0 $B --bits W4A4,W3A3,W2A4 --rules uniform --variants recon_synq_both $LAST $D ;;
  both-s1)           row both-s1 python benchmarks/reconstruct_accuracy.py --json --threads 1 --no-progress --seed 1 \
                       --synthetic "$SET1" $LR $LAST $D --bits W4A4,W3A3,W2A4 --rules uniform --variants recon_synq_both ;;
  vit128-both)       row vit128-both python benchmarks/reconstruct_accuracy.py --json --threads 1 --no-progress \
                       --synthetic "$VIT128_SET" --budget vit-cpu-128 --teacher ../shared/data/teachers/cifar10-vit-tiny \
                       --bits W4A4 --rules uniform --data lossless,jpeg --variants recon_synq_both $LAST ;;
  both-genie-s0)     row both-genie-s0 $B --bits W4A4,W3A3,W2A4 --rules genie --variants recon_synq_both $LAST $D ;;
  both-genie-s1)     row both-genie-s1 python benchmarks/reconstruct_accuracy.py --json --threads 1 --no-progress \
                       --seed 1 --synthetic "$SET1" $LR $LAST $D --bits W4A4,W3A3,W2A4 --rules genie \
                       --variants recon_synq_both ;;
  seed2)             row seed2 python benchmarks/reconstruct_accuracy.py --json --threads 1 --no-progress --seed 2 \
                       --synthetic "$SET2" $LR $LAST $D --bits W4A4,W3A3,W2A4 --rules uniform \
                       --variants recon,recon_synq_both ;;
  seed2-genie)       row seed2-genie python benchmarks/reconstruct_accuracy.py --json --threads 1 --no-progress \
                       --seed 2 --synthetic "$SET2" $LR $LAST $D --bits W4A4,W3A3,W2A4 --rules genie \
                       --variants recon,recon_synq_both ;;
  vit128-s1-recon)   row vit128-s1-recon python benchmarks/reconstruct_accuracy.py --json --threads 1 --no-progress \
                       --seed 1 --synthetic "$VIT128_SET1" --budget vit-cpu-128 \
                       --teacher ../shared/data/teachers/cifar10-vit-tiny --bits W4A4 --rules uniform \
                       --data lossless,jpeg --variants recon $LAST ;;
  vit128-s1-raw)     row vit128-s1-raw python benchmarks/reconstruct_accuracy.py --json --threads 1 --no-progress \
                       --seed 1 --synthetic "$VIT128_SET1" --budget vit-cpu-128 \
                       --teacher ../shared/data/teachers/cifar10-vit-tiny --bits W4A4 --rules uniform \
                       --data lossless,jpeg --variants recon_synq_raw $LAST ;;
  vit128-s1-both)    row vit128-s1-both python benchmarks/reconstruct_accuracy.py --json --threads 1 --no-progress \
                       --seed 1 --synthetic "$VIT128_SET1" --budget vit-cpu-128 \
                       --teacher ../shared/data/teachers/cifar10-vit-tiny --bits W4A4 --rules uniform \
                       --data lossless,jpeg --variants recon_synq_both $LAST ;;
  *) echo "usage: run.sh ROW (see the case list)" >&2; exit 2 ;;
esac
