"""Which loss term, layer and quantizer range drive a fine-tuning blow-up: per-step gradient norms by term.

Runs SynQ fine-tuning of the shared ResNet-20 on a cached synthetic set and, every step, takes the gradient of
each loss term (KD, selective CE, CAM) separately, recording its norm, the layer where it is largest, and the
activation quantizer whose input saturates most (share of values outside its range). Prints one JSON line per
step. Gradient clipping is whatever ``--set max_grad_norm=...`` says (0 reproduces the pre-fix behaviour).

    python benchmarks/diagnose_finetune.py --synthetic /tmp/syn512 --steps 100 \
        --set act_range_init=minmax --set weight_range_init=minmax --set max_grad_norm=0

``--cam-flat 0`` restores the CAM normalization without a floor (the divisor of a nearly flat map can then be
float noise); the last line says how the run ended (``{"end": "completed"}`` or the divergence message).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import datasets
import torch

_SPEC = importlib.util.spec_from_file_location("cifar10_accuracy", Path(__file__).with_name("cifar10_accuracy.py"))
bench = importlib.util.module_from_spec(_SPEC)
sys.modules["cifar10_accuracy"] = bench
_SPEC.loader.exec_module(bench)

from synq_hf.apply import act_quantizers, quantize_model  # noqa: E402
from synq_hf.training import SynQTrainer, TrainingDiverged, build_training_args  # noqa: E402


class DiagnosticTrainer(SynQTrainer):
    """SynQTrainer that also records each term's gradient norm and the most saturated activation quantizer."""

    def _record(self, parts: dict[str, torch.Tensor]) -> None:
        cfg = self.synq_config
        weights = {"kd": cfg.kd_weight, "ce": cfg.lambda_ce, "cam": cfg.lambda_cam}
        params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        row: dict[str, object] = {"step": self.state.global_step + 1}
        for term, w in weights.items():
            if term not in parts or w == 0 or not parts[term].requires_grad:
                continue
            grads = torch.autograd.grad(w * parts[term], [p for _, p in params], retain_graph=True, allow_unused=True)
            norms = {n: float(g.norm()) for (n, _), g in zip(params, grads) if g is not None}
            top = max(norms, key=norms.get)
            row[term] = {"value": round(float(parts[term].detach()), 4), "grad_norm": round(sum(v * v for v in norms.values())
                                                                                  ** 0.5, 3),
                         "top_layer": top, "top_layer_norm": round(norms[top], 3)}
        row["saturation"] = self._saturation
        print(json.dumps(row), flush=True)
        super()._record(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--synthetic", required=True, help="a synthetic set saved by cifar10_accuracy.py --synthetic")
    p.add_argument("--bits", default="W4A4")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cam-flat", type=float, default=None, help="floor of the CAM divisor (default: the library's)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.cam_flat is not None:
        import functools

        import synq_hf.training.cam as cam

        cam.minmax_normalize = functools.partial(cam.minmax_normalize, flat=args.cam_flat)
    (w, a), = bench.parse_bits(args.bits)
    teacher = bench.load_model(f"local-dir:{bench.DEFAULT_TEACHER}")
    budget = bench.BUDGETS["cpu"]
    cfg = bench.SynQConfig(train_batch_size=budget.train_batch_size, max_steps=args.steps, w_bits=w, a_bits=a,
                           seed=args.seed, **bench.parse_overrides(args.set))
    cfg = bench.SynQQuantizer(teacher, cfg, device=args.device).config
    synthetic = datasets.load_from_disk(args.synthetic)
    student = quantize_model(copy.deepcopy(teacher.model), cfg).requires_grad_(True)
    quantizers = act_quantizers(student)

    def saturation_hook(q: torch.nn.Module, inputs: tuple, _out: object) -> None:
        if q.mode == "quantize":
            x = inputs[0].detach()
            share = float(((x < q.min_val) | (x > q.max_val)).float().mean())
            if share > trainer._saturation.get("share", -1):
                trainer._saturation = {"quantizer": q.name, "share": round(share, 4),
                                       "range": [round(float(q.min_val), 3), round(float(q.max_val), 3)]}

    for q in quantizers:
        q.register_forward_hook(saturation_hook)
    with tempfile.TemporaryDirectory() as tmp:
        targs = build_training_args(cfg, tmp, progress=False, save_strategy="no", use_cpu=args.device == "cpu")
        trainer = DiagnosticTrainer(student, teacher.model, targs, synthetic, cfg)
        trainer._saturation = {}
        orig = trainer._record

        def reset_then_record(parts: dict[str, torch.Tensor]) -> None:
            orig(parts)
            trainer._saturation = {}

        trainer._record = reset_then_record
        try:
            trainer.train()
            end = "completed"
        except TrainingDiverged as e:
            end = str(e)
    print(json.dumps({"end": end}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
