#!/usr/bin/env bash
# Second H200 call: the cpu-budget W4A4 rows with augmentation on (crop+flip, filter per batch), seeds 0-2; one tar back.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1
mkdir -p ../shared /tmp/r && cp -r .gpu/data ../shared/
for s in 0 1 2; do
  timeout ${LIMIT:-200} python3 benchmarks/cifar10_accuracy.py --json --budget cpu --bits W4A4 --seeds $s --device cuda \
    --no-progress --threads 1 --set augment=crop_flip --set lpf_mode=per_batch > /tmp/r/cpuaug4_s$s.json 2> /tmp/r/cpuaug4_s$s.log &
done
wait
tar czf $OUT/r.tgz -C /tmp r; cat /tmp/r/*.json | head -c 3000
