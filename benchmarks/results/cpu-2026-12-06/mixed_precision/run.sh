#!/usr/bin/env bash
# The rows of BENCHMARKS.md "Mixed precision (issue 26)": one command per row, on the lead's cpu-budget synthetic
# set of the shared ResNet-20 (seed 0), one torch thread each; the JSON row goes to stdout.
set -euo pipefail
SET=${SET:-/work/cache/syn/r20-cpu-seed0}
OUT=benchmarks/results/cpu-2026-12-06/mixed_precision
B="python benchmarks/mixed_precision.py --json --no-progress --threads 1 --synthetic $SET"
row() { local name=$1; shift; OMP_NUM_THREADS=1 nice -n 5 $B "$@" > "$OUT/$name.json" 2> "/work/cache/mixed/logs/$name.err"; }
case "${1:-all}" in
  mixed-w4) row mixed-w4 --size-budget w4 --a-bits 4 --cache-dir /work/cache/mixed/sens ;;
  mixed-w3) row mixed-w3 --size-budget w3 --a-bits 4 --cache-dir /work/cache/mixed/sens ;;
  mixed-w3-deploy) row mixed-w3-deploy --size-budget w3 --a-bits 4 --cache-dir /work/cache/mixed/sens \
                     --set deploy_placement=int8 ;;   # the integer runtime's placement: ONNX within 0.2 points
  mixed-avg2.5) row mixed-avg2.5 --avg-w-bits 2.5 --a-bits 4 --cache-dir /work/cache/mixed/sens ;;
  mixed-avg3.5) row mixed-avg3.5 --avg-w-bits 3.5 --a-bits 4 --cache-dir /work/cache/mixed/sens ;;
  uniform-w2a4) row uniform-w2a4 --bits W2A4 ;;
  uniform-w3a4) row uniform-w3a4 --bits W3A4 ;;
  uniform-w8a4) row uniform-w8a4 --bits W8A4 ;;
  plot) ${PLOT_PYTHON:-python} benchmarks/mixed_precision.py --plot "$OUT"/mixed-w4.json "$OUT"/mixed-w3.json \
          "$OUT"/mixed-avg2.5.json "$OUT"/uniform-w3a4.json "$OUT"/uniform-w2a4.json \
          benchmarks/results/cpu-2026-12-07/fidelity/lastconv_sum_s0.json \
          --png benchmarks/figures/mixed_precision_frontier.png > "$OUT/plot.json" ;;   # the merged code's rows
  *) echo "usage: run.sh ROW" >&2; exit 2 ;;
esac
# The CI guard's two rows (tests/integration/test_mixed_precision_guard.py runs the same arguments):
#   G="--budget guard --images 128 --iterations 100 --steps 60 --eval-every 0 --set sensitivity_num_images=64
#      --set train_batch_size=64 --set calibration_num_images=128 --no-checks --synthetic /work/cache/mixed/guard-syn"
#   $B $G --bits W3A4 > $OUT/guard-uniform-w3a4.json; $B $G --size-budget w3 --a-bits 4 > $OUT/guard-mixed-w3.json
