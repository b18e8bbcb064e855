#!/usr/bin/env bash
set -u
OUT=${OUT:-/work/cache/newcomer/readme}
S=../shared/data
for cap in avx2; do
  d=$OUT/t1_$cap; rm -rf $d; mkdir -p $d
  export ATEN_CPU_CAPABILITY=$cap OMP_NUM_THREADS=1
  python -c "import torch; print(torch.backends.cpu.get_cpu_capability())" > $d/capability.txt
  synq-hf demo --out $d/synq-demo-w4a4 --no-progress > $d/demo.out 2> $d/demo.err
  synq-hf quantize local-dir:$S/teachers/cifar10-resnet20 --method ptq --w-bits 8 --a-bits 8 \
    --calibration-data $S/cifar10/test-jpeg-q75.parquet --calibration-skip 1017 \
    --calibration-num-images 256 --out $d/resnet20-w8a8-ptq --no-progress > $d/ptq.out 2> $d/ptq.err
  synq-hf evaluate $d/resnet20-w8a8-ptq --data $S/cifar10/test-lossless-first1017.parquet --no-progress > $d/ptq_eval.out 2> $d/ptq_eval.err
  synq-hf quantize local-dir:$S/teachers/cifar10-resnet20 --method ptq --w-bits 8 --a-bits 8 \
    --deploy-placement int8 --calibration-data $S/cifar10/test-jpeg-q75.parquet --calibration-skip 1017 \
    --calibration-num-images 256 --out $d/r20-w8a8-int8 --no-progress > $d/int8.out 2> $d/int8.err
  synq-hf evaluate $d/r20-w8a8-int8 --data $S/cifar10/test-lossless-first1017.parquet --no-progress > $d/int8_eval.out 2> $d/int8_eval.err
done
echo done > $OUT/DONE_avx2
