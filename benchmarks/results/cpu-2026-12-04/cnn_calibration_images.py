"""ResNet-20 PTQ (searched ranges) calibrated on the raw vs the low-pass filtered synthetic images (256 x 200, seed 0).

    python benchmarks/results/cpu-2026-12-04/cnn_calibration_images.py   # ~10 CPU-min, one JSON line per model
"""
import copy
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
import cifar10_accuracy as base
import torch

from synq_hf import SynQConfig, SynQQuantizer, load_image_dataset, load_model
from synq_hf.apply import calibrate, iter_batches, quantize_model
from synq_hf.data import build_eval_transform, detect_columns
from synq_hf.lowpass import low_pass_filter
from synq_hf.model_info import model_logits

torch.set_num_threads(1)
teacher = load_model(f"local-dir:{base.SHARED / 'teachers' / 'cifar10-resnet20'}")
q = SynQQuantizer(teacher, SynQConfig(num_images=256, synthesis_iterations=200), device="cpu")
t0 = time.time()
ds = q.synthesize(progress=False)
print("synth", time.time() - t0, flush=True)
raw = ds.with_format("torch")[:]["pixel_values"].float()
filt = low_pass_filter(raw, q.config.lpf_d0)
tf = build_eval_transform(teacher.data_config)
tests = {}
for n in ("lossless", "jpeg"):
    d = load_image_dataset(f"parquet:{base.DATA_FILES[n]}")
    ic, lc = detect_columns(d)
    tests[n] = (torch.stack([tf(im) for im in d[ic]]), torch.tensor(d[lc]))
@torch.no_grad()
def top1(m):
    return {n: round(100 * sum(int((model_logits(m, x[i:i+500]).argmax(-1) == y[i:i+500]).sum()) for i in range(0, len(x), 500)) / len(x), 2) for n, (x, y) in tests.items()}
print("float", top1(teacher.model), flush=True)
for bits in ("W8A8", "W4A4"):
    for src, imgs in (("raw", raw), ("lpf", filt)):
        cfg = q.config.replace(w_bits=int(bits[1]), a_bits=int(bits[3]))
        st = quantize_model(copy.deepcopy(teacher.model), cfg)
        calibrate(st, iter_batches(imgs, 64), progress=False)
        print(json.dumps({"bits": bits, "calib": src, **top1(st.eval())}), flush=True)
