#!/usr/bin/env bash
# Issue 24 on one GPU: one call of at most ~9.5 minutes (LIMIT); every measurement is written as it lands, so a run
# cut short still returns what it finished. In order of value:
#  1. speed, alone on the card (SPEED_LIMIT s): time_to_model.py for the five ImageNet recipes in fp32 and bf16
#     (synthesis at the paper's batch, fine-tuning at 16, ratios to the floor, peak memory, the paper-schedule
#     projection); synthesis_speed.py: DeiT-S with the loop and the fused KDE, and ResNet-18 at 4 x 256 images (the
#     setting of the 1.31 figure in BENCHMARKS.md, "Synthesis speed"); finetune_speed.py at batch 256
#  2. fidelity: the `--budget cpu` schedule on the shared ResNet-20 (W4A4, W3A3) and the shared ViT (W4A4, W4A8),
#     seeds 0-2, fp32 and bf16 (synthesis and fine-tuning), both test sets, one process per seed and variant
#  3. if at least COMPILE_MIN s are left: fine-tuning with finetune_compile=reduce-overhead (ResNet-18, batch 16)
# Then summarize.py prints the tables and issue 24's checks; $OUT gets r24.tgz (everything) and summary.md.
#
# On the device: `bash benchmarks/gpu/prepare.sh` here once (wheels in .whl/, shared data in .gpu/), then
#   run(command="bash benchmarks/gpu/run.sh", carry=[".whl", ".gpu"], timeout_s=600)
# CPU smoke test at tiny sizes (tests/test_gpu_script.py): TINY=1 OUT=/tmp/o R=/tmp/r bash benchmarks/gpu/run.sh
set -u
T0=$(date +%s)
TINY=${TINY:-0}; LIMIT=${LIMIT:-560}; SPEED_LIMIT=${SPEED_LIMIT:-290}; COMPILE_MIN=${COMPILE_MIN:-150}
OUT=${OUT:-/tmp/gpu24-out}; R=${R:-/tmp/r24}; PY=${PY:-python3}
rm -rf "$R"; mkdir -p "$R" "$OUT"
if [ "$TINY" = 1 ]; then
  DEV=cpu; BUDGET=smoke; SEEDS=${SEEDS:-0}; echo "tiny CPU run" > "$R/gpu.txt"
else
  DEV=cuda; BUDGET=cpu; SEEDS=${SEEDS:-0 1 2}
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  mkdir -p ../shared && cp -r .gpu/data ../shared/
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$R/gpu.txt"
fi
export PYTHONPATH=${PYTHONPATH:-$PWD} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1
git log -1 --format=%H >> "$R/gpu.txt" 2>/dev/null; git status --short | head -20 >> "$R/gpu.txt" 2>/dev/null
$PY -c "import torch, transformers, timm, datasets, synq_hf; print(torch.__version__, transformers.__version__, timm.__version__, datasets.__version__)" >> "$R/gpu.txt" 2>&1 || { cat "$R/gpu.txt"; exit 1; }

now() { echo $(( $(date +%s) - T0 )); }
left() { local l=$(( ${1:-$LIMIT} - $(now) )); [ $l -gt 1 ] && echo $l || echo 1; }
finish() {
  echo "done at $(now) s" >> "$R/gpu.txt"
  $PY benchmarks/gpu/summarize.py "$R" > "$R/summary.md" 2> "$R/summary.log"
  cp "$R/summary.md" "$OUT/summary.md" 2>/dev/null
  tar czf "$OUT/r24.tgz" -C "$(dirname "$R")" "$(basename "$R")"
  cat "$R/gpu.txt" "$R/summary.md"
  for f in "$R"/*.log; do echo "== $f"; grep -E "rror|iverg|Killed" "$f" | tail -2 | cut -c1-300; done
}
trap finish EXIT
step() {  # step NAME LIMIT_S COMMAND...: stdout to NAME.json, stderr to NAME.log, the exit code to gpu.txt
  local name=$1 limit=$2; shift 2
  timeout "$limit" "$@" > "$R/$name.json" 2> "$R/$name.log"
  echo "$name rc=$? at $(now) s" >> "$R/gpu.txt"
}

# 1. speed
MODELS=resnet18,resnet50,mobilenetv2_100,deit_small_patch16_224,swin_tiny_patch4_window7_224
if [ "$TINY" = 1 ]; then
  step ttm "$(left $SPEED_LIMIT)" $PY benchmarks/time_to_model.py --json --tiny --device cpu \
    --recipes resnet18_w4a4,deit_w4a8,swin_t_w4a8 --precision fp32,bf16 --repeats 1 --warmup 1
  step ft256 "$(left $SPEED_LIMIT)" $PY benchmarks/finetune_speed.py --json --device cpu --models test_resnet \
    --size 32 --batch 8 --precision fp32,bf16 --repeats 1 --warmup 1
  step kde "$(left $SPEED_LIMIT)" $PY benchmarks/synthesis_speed.py --json --device cpu --models test_vit --size 32 \
    --batch 4 --kde loop,fused --precision fp32,bf16 --repeats 1 --warmup 1
else
  step ttm "$(left $SPEED_LIMIT)" $PY benchmarks/time_to_model.py --json --device cuda --precision fp32,bf16 \
    --repeats 5 --warmup 2
  step kde "$(left $SPEED_LIMIT)" $PY benchmarks/synthesis_speed.py --json --device cuda \
    --models deit_small_patch16_224 --kde loop,fused --precision fp32,bf16 --repeats 5
  step r18x4 "$(left $SPEED_LIMIT)" $PY benchmarks/synthesis_speed.py --json --device cuda --models resnet18 \
    --groups 4 --precision fp32,bf16 --repeats 5
  step ft256 "$(left $SPEED_LIMIT)" $PY benchmarks/finetune_speed.py --json --device cuda --models $MODELS \
    --batch 256 --precision fp32,bf16 --repeats 3 --warmup 1 --calibration-images 256
fi
echo "speed done at $(now) s" >> "$R/gpu.txt"

# 2. fidelity: every seed and variant at once
COMMON="--budget $BUDGET --device $DEV --no-progress --threads 1 --json --data lossless,jpeg"
for s in $SEEDS; do
  for p in fp32 bf16; do
    SET="--set synthesis_precision=$p --set finetune_precision=$p"
    timeout "$(left)" $PY benchmarks/cifar10_accuracy.py $COMMON --bits W4A4,W3A3 --seeds $s $SET \
      > "$R/r20_${p}_s$s.json" 2> "$R/r20_${p}_s$s.log" &
    timeout "$(left)" $PY benchmarks/vit_accuracy.py $COMMON --bits W4A4,W4A8 --seeds $s $SET \
      > "$R/vit_${p}_s$s.json" 2> "$R/vit_${p}_s$s.log" &
  done
done
wait
echo "fidelity done at $(now) s" >> "$R/gpu.txt"

# 3. compiled fine-tuning step, if there is time for the compile
if [ "$TINY" != 1 ] && [ "$(left)" -ge "$COMPILE_MIN" ]; then
  step compile "$(left)" $PY benchmarks/finetune_speed.py --json --device cuda --models resnet18 --batch 16 \
    --precision bf16 --compile reduce-overhead --repeats 5 --warmup 3 --calibration-images 64
fi
