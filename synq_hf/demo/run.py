"""``run_demo``: the offline main job — zero-shot W4A4 quantization of the bundled digits teacher.

Everything is local: the teacher's weights ship with the package and the held-out digits come from
scikit-learn. The run synthesizes images from the teacher, builds the PTQ baseline on them,
fine-tunes with SynQ, evaluates float / PTQ / SynQ on the 500 real held-out images and writes a
Hub-ready folder (model, config, results.json, model card).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ..config import SynQConfig

DEMO_CONFIG = SynQConfig(
    w_bits=4,
    a_bits=4,
    num_images=256,
    synthesis_iterations=150,
    calibration_num_images=256,
    train_batch_size=64,
    learning_rate=1e-3,
    max_steps=200,
    seed=0,
)
"""W4A4 with a budget sized to finish in under a minute on one free CPU core (BENCHMARKS.md, "Offline demo")."""


def run_demo(
    out_dir: str | os.PathLike, *, config: SynQConfig = DEMO_CONFIG, overwrite: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Quantize the digits teacher zero-shot, evaluate it on real held-out digits, save to ``out_dir``.

    Returns ``results.json``'s record (``fp_top1``, ``ptq_top1``, ``synq_top1``, timings...) plus
    ``wall_s`` and ``out_dir``.
    """
    from ..quantizer import SynQQuantizer
    from . import demo_teacher_path, digits_dataset

    start = time.perf_counter()
    quantizer = SynQQuantizer.from_pretrained(f"local-dir:{demo_teacher_path()}", config)
    quantizer.recipe = "synq-hf demo"
    test = digits_dataset("test")
    quantizer.synthesize(progress=progress)
    quantizer.ptq(progress=progress)
    quantizer.quantize(progress=progress)
    for which in ("float", "ptq", "synq"):
        quantizer.evaluate(test, which=which, progress=progress)
    quantizer.results["eval_data"] = "scikit-learn digits (500 held-out images)"
    quantizer.results["eval_split"] = "test"
    folder = quantizer.save_pretrained(out_dir, overwrite=overwrite)
    record = quantizer.results_json()
    record.update(wall_s=round(time.perf_counter() - start, 1), out_dir=Path(folder).name)
    return record
