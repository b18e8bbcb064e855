#!/usr/bin/env bash
# The README's PTQ table (CLI section), re-measured on the code as submitted, 1 thread (the CLI default for these).
set -u
OUT=/work/cache/newcomer/readme/ptq_table; rm -rf $OUT; mkdir -p $OUT
S=../shared/data
run() {  # name model bits seed [extra...]
  local name=$1 model=$2 bits=$3 seed=$4; shift 4
  synq-hf quantize local-dir:$S/teachers/$model --method ptq --w-bits $bits --a-bits $bits \
    --calibration-data $S/cifar10/test-jpeg-q75.parquet --calibration-skip 1017 --calibration-num-images 256 \
    --seed $seed --out $OUT/$name --no-progress "$@" > /dev/null 2> $OUT/$name.err
  echo "$name $(synq-hf evaluate $OUT/$name --data $S/cifar10/test-lossless-first1017.parquet --no-progress 2>/dev/null | grep -o 'top-1 [0-9.]*')" >> $OUT/table.txt
  rm -rf $OUT/$name
}
for m in cifar10-resnet20 cifar10-resnet56; do
  for b in 4 3; do for s in 0 1 2; do run $m-w$b-s$s $m $b $s; done; done
  for b in 4 3; do run $m-w$b-minmax $m $b 0 --config '{"act_range_init": "minmax", "weight_range_init": "minmax"}'; done
done
echo done >> $OUT/table.txt
