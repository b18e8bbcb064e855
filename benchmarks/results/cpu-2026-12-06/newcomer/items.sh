#!/usr/bin/env bash
# Issue 22's items, each as a user meets it: the command, its exit code and the lines it prints (stderr last
# lines). Run from the repository root, as root (the permission cases switch to the unprivileged user `nobody`,
# who must be able to run the venv's interpreter: e.g. chmod o+x on the folders above a pyenv python;
# for whom file permissions apply). Writes items.md (a table) in the folder given as $1 (default: ./items-out).
set -u
OUT=$(realpath -m "${1:-items-out}")
rm -rf "$OUT"; mkdir -p "$OUT"
REPO=$(pwd)
S=$(realpath ../shared/data)
T=$OUT/work; mkdir -p "$T"; chmod 1777 "$T"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONPATH=$REPO PYTHONDONTWRITEBYTECODE=1 OMP_NUM_THREADS=1
AS_NOBODY=(setpriv --reuid=65534 --regid=65534 --clear-groups env HOME=$T/home)
mkdir -p "$T/home" && chmod 777 "$T/home"
TEACHER=local-dir:$S/teachers/cifar10-resnet20
LOSSLESS=$S/cifar10/test-lossless-first1017.parquet
JPEG=$S/cifar10/test-jpeg-q75.parquet
TINY=(--w-bits 4 --a-bits 4 --num-images 32 --synthesis-iterations 2 --max-steps 2 --train-batch-size 16 --no-progress)
echo "| item | command | exit | output (last lines; paths shortened to \$T) |" > "$OUT/items.md"
echo "|---|---|---|---|" >> "$OUT/items.md"

row() {  # row ITEM COMMAND... : run, record exit code, seconds and the last lines of stdout+stderr
  local item=$1; shift
  local start=$(date +%s.%N)
  ( cd "$T" && "$@" ) > "$OUT/last.log" 2>&1
  local rc=$?
  local secs=$(printf "%.0f" "$(echo "$(date +%s.%N) - $start" | bc)")
  local shown=$(grep -v -e "Creating parquet" -e "^{'" -e "^\s*$" -e "it/s\]" -e "examples/s\]" "$OUT/last.log" \
                | tail -n 3 | sed "s#$T#\$T#g; s#$S#../shared/data#g; s#$REPO#.#g" | tr '\n' ' ' | sed 's/|/\\|/g')
  local cmd=$(echo "$*" | sed "s#$T#\$T#g; s#$S#../shared/data#g; s#$REPO#.#g; s#setpriv --reuid=65534 --regid=65534 --clear-groups env HOME=\$T/home#(as nobody)#")
  echo "| $item | \`$cmd\` | $rc (${secs} s) | $shown |" >> "$OUT/items.md"
  cp "$OUT/last.log" "$OUT/$(echo "$item" | tr -c 'a-zA-Z0-9\n' '_' | cut -c1-60).log"
}

python - <<EOF
import datasets, numpy as np
from PIL import Image
rng = np.random.default_rng(0)
feat = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
gray = [Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8), mode="L") for _ in range(16)]
datasets.Dataset.from_dict({"img": gray, "label": [i % 10 for i in range(16)]}, features=feat).to_parquet("$T/gray.parquet")
rgb = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(4)]
f2 = datasets.Features({"img": datasets.Image(), "label": datasets.Value("int64")})
datasets.Dataset.from_dict({"img": rgb, "label": [0, 3, 12, 1]}, features=f2).to_parquet("$T/labels12.parquet")
datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}).to_parquet("$T/noimage.parquet")
EOF

# 1-2. README numbers (the demo, the PTQ W8A8 example)
row "demo (README quickstart)" synq-hf demo --no-progress
row "PTQ W8A8 example" synq-hf quantize $TEACHER --method ptq --w-bits 8 --a-bits 8 --calibration-data $JPEG --calibration-skip 1017 --calibration-num-images 256 --out resnet20-w8a8-ptq --no-progress
row "PTQ W8A8 example: evaluate" synq-hf evaluate resnet20-w8a8-ptq --data $LOSSLESS --no-progress
# 3. cards from what ran
row "card: PTQ row names its ranges" grep -m1 "this model" resnet20-w8a8-ptq/README.md
row "card: calibration images used (SynQ, 32 synthetic images)" bash -c "synq-hf quantize $TEACHER ${TINY[*]} --out syn32 >/dev/null 2>&1; grep -e '| \`calibration_num_images\`' syn32/README.md"
# 4. checks before the work
row "--eval-data labels beyond the classes" synq-hf quantize $TEACHER --w-bits 4 --a-bits 4 --eval-data $T/labels12.parquet --out q1
row "--eval-data without an image column" synq-hf quantize $TEACHER --w-bits 4 --a-bits 4 --eval-data $T/noimage.parquet --out q2
row "--calibration-data with too few rows" synq-hf quantize $TEACHER --method ptq --calibration-data $T/gray.parquet --calibration-skip 10 --calibration-num-images 8 --out q3
mkdir -p "$T/ro" && chmod 555 "$T/ro"
row "--out in an unwritable folder (as nobody)" "${AS_NOBODY[@]}" synq-hf quantize $TEACHER --w-bits 4 --a-bits 4 --out $T/ro/q
row "existing unwritable --out, --overwrite (as nobody)" bash -c "cp -r resnet20-w8a8-ptq $T/rw-q && chmod 555 $T/rw-q && ${AS_NOBODY[*]} synq-hf quantize $TEACHER --method ptq --calibration-data $JPEG --calibration-num-images 16 --out $T/rw-q --overwrite --no-progress"
row "grayscale --eval-data warns before the work" synq-hf quantize $TEACHER --method ptq --calibration-data $JPEG --calibration-num-images 16 --eval-data $T/gray.parquet --out q4 --no-progress
row "grayscale evaluate warns" synq-hf evaluate $TEACHER --data $T/gray.parquet --no-progress
row "--num-images 33" synq-hf quantize $TEACHER --w-bits 4 --a-bits 4 --synthesis-batch-size 16 --num-images 33 --out q5
mkdir -p "$T/late" && chmod 777 "$T/late"
row "failure after the work (folder made read-only during fine-tuning, as nobody)" bash -c "(${AS_NOBODY[*]} synq-hf quantize $TEACHER ${TINY[*]} --max-steps 40 --out $T/late/q > $T/late.log 2>&1; echo rc=\$? >> $T/late.log) & while ! grep -q 'train_runtime\|train_loss' $T/late.log 2>/dev/null && ! grep -q rc= $T/late.log; do sleep 0.2; if [ -d $T/late/q.synq-work/finetune ]; then chmod 555 $T/late; fi; done; wait; cat $T/late.log | grep -v '^{'"
chmod 777 "$T/late"
row "... the printed resume command (folder writable again)" bash -c "cmd=\$(grep -A1 'resume with' $T/late.log | tail -1); ${AS_NOBODY[*]} \$cmd > $T/late2.log 2>&1; echo rc=\$?; grep -e 'Total wall time' $T/late/q/README.md; grep -e resumed $T/late/q/results.json"
# 5. export
row "export to an unwritable folder (as nobody)" "${AS_NOBODY[@]}" synq-hf export resnet20-w8a8-ptq --format onnx --out $T/ro/m.onnx
echo "my notes" > "$T/notes.txt"
row "export over an unrelated file" synq-hf export resnet20-w8a8-ptq --format onnx --out notes.txt
row "export over an unrelated file, --overwrite" synq-hf export resnet20-w8a8-ptq --format onnx --out notes.txt --overwrite
row "export into missing folders" synq-hf export resnet20-w8a8-ptq --format onnx --out a/b/m.onnx
row "export, then again with --overwrite" bash -c "synq-hf export resnet20-w8a8-ptq --format onnx --out m.onnx 2>/dev/null && synq-hf export resnet20-w8a8-ptq --format onnx --out m.onnx --overwrite 2>&1 | tail -1"
# 6. the lock
row "second run on the same --out while the first runs" bash -c "synq-hf quantize $TEACHER ${TINY[*]} --max-steps 300 --out lk > lk1.log 2>&1 & P=\$!; while [ ! -f lk.synq-work/.lock ]; do sleep 0.2; done; sleep 1; synq-hf quantize $TEACHER ${TINY[*]} --out lk; echo rc=\$?; kill -9 \$P; wait \$P 2>/dev/null; echo 'first run killed (SIGKILL), lock file left:'; cat lk.synq-work/.lock"
row "... after the first was killed (stale lock): not blocked" bash -c "synq-hf quantize $TEACHER ${TINY[*]} --max-steps 300 --out lk 2>&1 | tail -1; synq-hf quantize $TEACHER ${TINY[*]} --max-steps 300 --out lk --resume 2>&1 | tail -1"
# 7. --help
row "quantize --help: lines and groups" bash -c "synq-hf quantize --help | wc -l; synq-hf quantize --help | grep -E '^[a-z][a-z (-]+[a-z)]:\$' | tr '\n' ' '"
# 8. the caller's teacher
row "finetune() leaves the teacher as it was; a copy trains" python - <<'EOF'
import copy, sys
import os
sys.path.insert(0, os.environ["PYTHONPATH"] + "/tests")
from _synq_tiny import cnn_pair, synthetic_dataset
from synq_hf.quant import quantize_model
from synq_hf.training import finetune
teacher, student, cfg = cnn_pair()
teacher.train()
args = {"use_cpu": True, "report_to": "none"}
finetune(teacher, student, synthetic_dataset(8), cfg, output_dir="ft1", max_steps=1, progress=False, training_args=args)
print("teacher.training", teacher.training, "all requires_grad", all(p.requires_grad for p in teacher.parameters()))
second = quantize_model(copy.deepcopy(teacher), cfg)
finetune(teacher, second, synthetic_dataset(8), cfg, output_dir="ft2", max_steps=1, progress=False, training_args=args)
print("a student copied after finetune() trained")
EOF
# 9. help() texts
row "help(synq_hf), SynQConfig, synthesize" python -c "import synq_hf; from synq_hf.synthesis import synthesize; print(synq_hf.__doc__.splitlines()[2]); print([l.strip() for l in synq_hf.SynQConfig.__doc__.splitlines() if l.strip().startswith('* quantizer')][0]); print(synthesize.__doc__.split('\`\`data_config\`\`')[1][:60])"
# 10. the Hub quickstart offline: refused at once, in one line
row "README Hub example, offline" synq-hf quantize timm/resnet18 --w-bits 4 --a-bits 4 --num-images 512 --synthesis-iterations 500 --max-steps 300 --out resnet18-synq-w4a4
echo "wrote $OUT/items.md"
