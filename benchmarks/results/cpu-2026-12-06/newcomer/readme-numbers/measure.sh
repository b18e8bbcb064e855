#!/usr/bin/env bash
# README numbers at 1 and 2 threads (issue 22). Run from the worktree root.
set -u
OUT=${OUT:-/work/cache/newcomer/readme}
S=../shared/data
for t in 1 2; do
  d=$OUT/t$t; rm -rf $d; mkdir -p $d
  OMP_NUM_THREADS=$t synq-hf demo --out $d/synq-demo-w4a4 --no-progress > $d/demo.out 2> $d/demo.err
  OMP_NUM_THREADS=$t synq-hf quantize local-dir:$S/teachers/cifar10-resnet20 --method ptq --w-bits 8 --a-bits 8 \
    --calibration-data $S/cifar10/test-jpeg-q75.parquet --calibration-skip 1017 \
    --calibration-num-images 256 --out $d/resnet20-w8a8-ptq --no-progress > $d/ptq.out 2> $d/ptq.err
  OMP_NUM_THREADS=$t synq-hf evaluate $d/resnet20-w8a8-ptq --data $S/cifar10/test-lossless-first1017.parquet --no-progress > $d/ptq_eval.out 2> $d/ptq_eval.err
  OMP_NUM_THREADS=$t synq-hf quantize local-dir:$S/teachers/cifar10-resnet20 --method ptq --w-bits 8 --a-bits 8 \
    --deploy-placement int8 --calibration-data $S/cifar10/test-jpeg-q75.parquet --calibration-skip 1017 \
    --calibration-num-images 256 --out $d/r20-w8a8-int8 --no-progress > $d/int8.out 2> $d/int8.err
  OMP_NUM_THREADS=$t synq-hf evaluate $d/r20-w8a8-int8 --data $S/cifar10/test-lossless-first1017.parquet --no-progress > $d/int8_eval.out 2> $d/int8_eval.err
done
echo done > $OUT/DONE
