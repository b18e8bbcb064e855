"""The slow synthesis-quality guard's budget (256 images x 200 iterations, seed 0, one thread) on the shared ResNet-20:
label agreement, BN loss at iteration 1 and of the returned images, CPU and wall seconds. Run from the repo root."""

import resource
import time

import timm
import torch

import synq_hf.models  # noqa: F401  (registers cifar_resnet20)
from synq_hf import SynQConfig
from synq_hf.model_info import model_logits
from synq_hf.synthesis.api import generate_synthetic
from synq_hf.synthesis.cnn import BNStatsObjective

torch.set_num_threads(1)
t = time.time()
teacher = timm.create_model("local-dir:../shared/data/teachers/cifar10-resnet20", pretrained=True).eval()
dc = timm.data.resolve_model_data_config(teacher)
out = generate_synthetic(teacher, SynQConfig(synthesis_log_every=50), data_config=dc, num_images=256, iterations=200,
                         seed=0, progress=False)
with torch.no_grad():
    agree = (model_logits(teacher, out.pixels).argmax(-1) == out.labels).float().mean().item()
first = [h["bn"] for h in out.history if h["iteration"] == 1]
with BNStatsObjective(teacher, beta=10.0, gamma=2.0, augment=False) as objective:
    _, parts = objective(out.pixels.view(1, 256, 3, 32, 32), out.labels.view(1, 256))
r = resource.getrusage(resource.RUSAGE_SELF)
print("agree", agree, "first", first, "final", parts["bn"].tolist(), "cpu", r.ru_utime + r.ru_stime,
      "wall", time.time() - t)
