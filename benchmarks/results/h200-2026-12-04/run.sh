#!/usr/bin/env bash
# One H200 call for issue 13 (ViT): synthesis speed on the GPU, then the shared CIFAR-10 ViT's table on GPU-made
# synthetic sets: seeds 0-4 at the `cpu` budget (32 images), SynQ starting from min-max activation ranges, and SynQ
# fine-tuning on 128 synthetic images (seeds 0-2). Every row is logged as it lands; one tar comes back.
set -u
T0=$(date +%s)
LIMIT=${LIMIT:-380}; DEV=${DEV:-cuda}; BUDGET=${BUDGET:-cpu}; BIG=${BIG:-128}; R=/tmp/r
mkdir -p $R
if [ "$DEV" = cuda ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  mkdir -p ../shared && cp -r .gpu/data ../shared/
  nvidia-smi --query-gpu=name,memory.total --format=csv > $R/gpu.txt
fi
export PYTHONPATH=${PYTHONPATH:-$PWD} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1
git log -1 --format=%H >> $R/gpu.txt 2>/dev/null
python3 -c "import torch, transformers, timm, datasets, pyarrow, synq_hf; print(torch.__version__, transformers.__version__, timm.__version__, datasets.__version__, pyarrow.__version__)" >> $R/gpu.txt 2>&1 || { cat $R/gpu.txt; exit 1; }
left() { echo $(( LIMIT - ($(date +%s) - T0) )); }
finish() { echo "done at $(( $(date +%s) - T0 )) s" >> $R/gpu.txt; tar czf $OUT/r.tgz -C /tmp r; cat $R/gpu.txt;
  for f in $R/*.log; do echo "== $f"; grep -E "^\{|agrees|rror|iverg" $f | tail -3 | cut -c1-400; done; }
trap finish EXIT
V=benchmarks/vit_accuracy.py; COMMON="--budget $BUDGET --device $DEV --no-progress --threads 1 --json"
# 1. synthesis speed on the GPU (alone, so the timing is not shared)
if [ "$DEV" = cuda ]; then
  timeout 75 python3 benchmarks/synthesis_speed.py --json --device cuda --models resnet18,deit,vit --repeats 10 \
    > $R/speed.json 2> $R/speed.log
fi
# 2. synthetic sets: seeds 0-4 with 32 images, seeds 0-2 with $BIG images (each its own process)
for s in 0 1 2 3 4; do
  timeout $(left) python3 $V $COMMON --synthesis-only --seeds $s --synthetic $R/syn > $R/syn32_s$s.json 2> $R/syn32_s$s.log &
done
for s in 0 1 2; do
  timeout $(left) python3 $V $COMMON --synthesis-only --seeds $s --num-images $BIG --synthetic $R/syn$BIG \
    > $R/syn${BIG}_s$s.json 2> $R/syn${BIG}_s$s.log &
done
wait
echo "synthesis done at $(( $(date +%s) - T0 )) s" >> $R/gpu.txt
# 3. the tables: default SynQ (with the real-data ceiling), SynQ from min-max ranges, SynQ on $BIG images
for s in 0 1 2 3 4; do
  timeout $(left) python3 $V $COMMON --seeds $s --bits W4A4,W4A8,W8A8,W4A6 --data lossless,jpeg --ceiling --synthetic $R/syn \
    > $R/t_s$s.json 2> $R/t_s$s.log &
  timeout $(left) python3 $V $COMMON --seeds $s --bits W8A8,W4A8,W4A6 --data lossless,jpeg --synthetic $R/syn \
    --set act_range_init=minmax > $R/mm_s$s.json 2> $R/mm_s$s.log &
done
for s in 0 1 2; do
  timeout $(left) python3 $V $COMMON --seeds $s --num-images $BIG --bits W4A4,W4A8,W8A8,W4A6 --data lossless,jpeg --synthetic $R/syn$BIG \
    > $R/big_s$s.json 2> $R/big_s$s.log &
done
wait
