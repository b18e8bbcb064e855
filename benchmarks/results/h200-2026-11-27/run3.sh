#!/usr/bin/env bash
# One H200 call for issue 8: paper budget W4A4/W3A3 (seed 0) on one shared synthetic set, cpu-budget seeds 0-2 with
# augmentation off/on, and the authors budget (W3A3) for as long as time allows; every log line lands in $OUT.
set -u
T0=$(date +%s)
LIMIT=${LIMIT:-510}; DEV=${DEV:-cuda}; PAPER=${PAPER:-paper}; SMALL=${SMALL:-cpu}; AUTH=${AUTH:-authors}
if [ "$DEV" = cuda ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
  mkdir -p ../shared && cp -r .gpu/data ../shared/
  nvidia-smi --query-gpu=name,memory.total --format=csv > $OUT/gpu.txt
fi
export PYTHONPATH=${PYTHONPATH:-$PWD} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1
git log -1 --format=%H >> $OUT/gpu.txt 2>/dev/null
python3 -c "import torch, transformers, timm, datasets, synq_hf; print(torch.__version__, transformers.__version__, timm.__version__, datasets.__version__)" >> $OUT/gpu.txt 2>&1 || { cat $OUT/gpu.txt; exit 1; }
left() { echo $(( LIMIT - ($(date +%s) - T0) )); }
B=benchmarks/cifar10_accuracy.py
# cpu-budget schedule, seeds 0-2, augmentation off / crop+flip with the filter after it (each job synthesizes its set)
for s in 0 1 2; do
  timeout $(left) python3 $B --json --budget $SMALL --seeds $s --device $DEV --no-progress --threads 1 \
    > $OUT/cpu_s$s.json 2> $OUT/cpu_s$s.log &
  timeout $(left) python3 $B --json --budget $SMALL --seeds $s --device $DEV --no-progress --threads 1 \
    --set augment=crop_flip --set lpf_mode=per_batch > $OUT/cpuaug_s$s.json 2> $OUT/cpuaug_s$s.log &
done
# the paper's synthetic set (seed 0), all 20 groups in one forward, saved once and shared
timeout $(left) python3 - "$PAPER" "$DEV" > $OUT/synth_paper.log 2>&1 <<'PY'
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("b", "benchmarks/cifar10_accuracy.py"); b = importlib.util.module_from_spec(spec)
sys.modules["b"] = b; spec.loader.exec_module(b)
budget, dev = b.BUDGETS[sys.argv[1]], sys.argv[2]
t = b.load_model(f"local-dir:{b.DEFAULT_TEACHER}")
cfg = b.SynQQuantizer(t, b.SynQConfig(num_images=budget.num_images, synthesis_iterations=budget.iterations,
                      synthesis_batch_size=budget.synthesis_batch_size,
                      synthesis_groups_per_forward=max(1, budget.num_images // budget.synthesis_batch_size)),
                      device=dev).config
print("synthesis seconds", b.load_or_synthesize(t, cfg, budget, 0, "/tmp/synp", dev, False)[1], flush=True)
PY
echo "paper synthesis done at $(( $(date +%s) - T0 )) s" | tee -a $OUT/gpu.txt
for bits in W4A4 W3A3; do
  timeout $(left) python3 $B --json --budget $PAPER --bits $bits --seeds 0 --synthetic /tmp/synp --device $DEV \
    --no-progress --threads 1 > $OUT/paper_$bits.json 2> $OUT/paper_$bits.log &
done
timeout $(left) python3 $B --json --budget $AUTH --bits W3A3 --seeds 0 --synthetic /tmp/synp --device $DEV \
  --no-progress --threads 1 > $OUT/authors_W3A3.json 2> $OUT/authors_W3A3.log &
wait
echo "all done at $(( $(date +%s) - T0 )) s" | tee -a $OUT/gpu.txt
for f in $OUT/*.log; do echo "== $f"; grep -E "step|top-1|wall|rror|iverg" $f | tail -4; done
