#!/usr/bin/env bash
# Second H200 call (issue 13): the ViT table with calibrate_filtered's new default (raw synthetic images above 4-bit
# activations), on the five 32-image sets of run.sh (carried in .gpu/syn), against the opposite choice per
# bit-width; and both CIFAR-ViT recipes at their full budget (seed 0). Every row is logged as it lands.
set -u
T0=$(date +%s)
LIMIT=${LIMIT:-300}; DEV=${DEV:-cuda}; BUDGET=${BUDGET:-cpu}; R=/tmp/r2; SEEDS=${SEEDS:-0 1 2 3 4}
mkdir -p $R
if [ "$DEV" = cuda ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  mkdir -p ../shared && cp -r .gpu/data ../shared/
  nvidia-smi --query-gpu=name,memory.total --format=csv > $R/gpu.txt
fi
export PYTHONPATH=${PYTHONPATH:-$PWD} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1
git log -1 --format=%H >> $R/gpu.txt 2>/dev/null; git status --short | head -20 >> $R/gpu.txt
left() { echo $(( LIMIT - ($(date +%s) - T0) )); }
finish() { echo "done at $(( $(date +%s) - T0 )) s" >> $R/gpu.txt; tar czf $OUT/r2.tgz -C /tmp r2; cat $R/gpu.txt;
  for f in $R/*.log; do echo "== $f"; grep -E "^\{\"bits|PTQ|SynQ|rror|iverg" $f | tail -2 | cut -c1-330; done; }
trap finish EXIT
V=benchmarks/vit_accuracy.py; COMMON="--budget $BUDGET --device $DEV --no-progress --threads 1 --json --synthetic .gpu/syn"
for s in $SEEDS; do
  c=""; [ $s -eq 0 ] && c="--ceiling"
  timeout $(left) python3 $V $COMMON --seeds $s --bits W4A4,W8A8,W4A8,W4A6 --data lossless,jpeg $c \
    > $R/d_s$s.json 2> $R/d_s$s.log &
  timeout $(left) python3 $V $COMMON --seeds $s --bits W8A8,W4A8,W4A6 --data lossless,jpeg \
    --set calibrate_filtered=true > $R/f_s$s.json 2> $R/f_s$s.log &
  timeout $(left) python3 $V $COMMON --seeds $s --bits W4A4 --data lossless,jpeg \
    --set calibrate_filtered=false > $R/r_s$s.json 2> $R/r_s$s.log &
done
if [ "$DEV" = cuda ]; then
  for b in w4a4 w4a8; do
    timeout $(left) python3 recipes/cifar10_vit_$b.py --out $R/rec_$b > $R/rec_$b.log 2>&1 &
  done
fi
wait
rm -f $R/rec_*/*.safetensors
