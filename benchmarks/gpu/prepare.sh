#!/usr/bin/env bash
# Here, before the device call of run.sh: what the GPU machine lacks, in two folders .gitignore ignores (the call carries them).
#   .whl/      datasets, evaluate and the two packages they need beyond the device image (which has torch, timm,
#              transformers, accelerate, huggingface_hub, pyarrow): Python 3.12 wheels at this checkout's versions
#   .gpu/data  the shared ResNet-20 and ViT teachers and the two CIFAR-10 test files (the fidelity runs), ~15 MB
# Usage (from the repository root): bash benchmarks/gpu/prepare.sh
set -eu
cd "$(git rev-parse --show-toplevel)"
SHARED=${SHARED:-../shared/data}
mkdir -p .whl .gpu/data/teachers .gpu/data/cifar10
version() { python3 -c "import importlib.metadata as m; print(m.version('$1'))"; }
for pkg in datasets evaluate dill multiprocess; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl "$pkg==$(version $pkg)"
done
cp -r "$SHARED/teachers/cifar10-resnet20" "$SHARED/teachers/cifar10-vit-tiny" .gpu/data/teachers/
cp "$SHARED/cifar10/test-lossless-first1017.parquet" "$SHARED/cifar10/test-jpeg-q75.parquet" .gpu/data/cifar10/
cp "$SHARED/README.md" .gpu/data/ 2>/dev/null || true
du -sh .whl .gpu
