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
  mixed-avg2.5) row mixed-avg2.5 --avg-w-bits 2.5 --a-bits 4 --cache-dir /work/cache/mixed/sens ;;
  mixed-avg3.5) row mixed-avg3.5 --avg-w-bits 3.5 --a-bits 4 --cache-dir /work/cache/mixed/sens ;;
  uniform-w2a4) row uniform-w2a4 --bits W2A4 ;;
  uniform-w3a4) row uniform-w3a4 --bits W3A4 ;;
  uniform-w8a4) row uniform-w8a4 --bits W8A4 ;;
  plot) ${PLOT_PYTHON:-python} benchmarks/mixed_precision.py --plot "$OUT"/*.json /work/cache/logs/baseline_cpu_seed0.json \
          --png benchmarks/figures/mixed_precision_frontier.png > "$OUT/plot.json" ;;
  *) echo "usage: run.sh ROW" >&2; exit 2 ;;
esac
