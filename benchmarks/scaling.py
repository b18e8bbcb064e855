"""Sharded synthesis and evaluation: wall time on 1 process x 1 thread against N processes x 1 thread.

    python benchmarks/scaling.py --json                        # shared ResNet-20, 4 groups of 64, JPEG-10k eval
    python benchmarks/scaling.py --json --groups 8 --iterations 50 --processes 2
    python benchmarks/scaling.py --json --serial-images 0        # skip the 224-px serial-cost probe

Both runs go through ``torchrun`` (the same start-up cost), CPU/gloo, ``OMP_NUM_THREADS=1``. Inside each run
the teacher load, the synthesis (first barrier to the gathered result, gather included) and the evaluation
(counts gathered) are timed separately; the process start-up is reported as ``launch_s``. Prints one JSON
object: raw times of every run (``--repeats``, interleaved 1, N, 1, N, ...), speedup = best t(1) / best t(N),
efficiency = speedup / N, whether the N-process images are
bit-identical to the 1-process ones, and the load average before and after (this machine is shared).
With ``--serial-images N`` (default 512) it also times, at 224 px, what does not shrink with more processes:
gathering N images to every process, building the ``datasets.Dataset`` and saving it (for the N-GPU model).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from shared_data import JPEG10K, TEACHERS  # noqa: E402  (benchmarks/ is the script's folder)

TEACHER = TEACHERS / "cifar10-resnet20"


def worker(args: argparse.Namespace) -> None:
    """One process of a run (under torchrun): load, synthesize sharded, evaluate sharded; rank 0 reports."""
    import torch

    torch.set_num_threads(1)
    import synq_hf.models  # noqa: F401  (registers cifar_resnet20 with timm)
    from synq_hf.config import SynQConfig
    from synq_hf.data import load_image_dataset
    from synq_hf.distributed import processes
    from synq_hf.evaluation import evaluate_model
    from synq_hf.hub.loading import load_model
    from synq_hf.synthesis import generate_synthetic

    procs = processes()
    t0 = time.perf_counter()
    loaded = load_model(f"local-dir:{args.teacher}")
    data = load_image_dataset(f"parquet:{args.eval_data}")
    if args.eval_limit:
        data = data.select(range(args.eval_limit))
    load_s = time.perf_counter() - t0

    cfg = SynQConfig(synthesis_batch_size=args.batch, synthesis_log_every=args.iterations)
    procs.barrier()
    t0 = time.perf_counter()
    images = generate_synthetic(loaded.model, cfg, data_config=loaded.data_config, num_images=args.groups * args.batch,
                                iterations=args.iterations, seed=0, device="cpu", progress=False)
    synthesis_s = time.perf_counter() - t0

    procs.barrier()
    t0 = time.perf_counter()
    metrics = evaluate_model(loaded.model, data, loaded.data_config, batch_size=256, device="cpu", progress=False)
    eval_s = time.perf_counter() - t0
    report = {"processes": procs.world, "load_s": load_s, "synthesis_s": synthesis_s, "eval_s": eval_s,
              "eval": metrics,
              "images_sha256": hashlib.sha256(images.pixels.numpy().tobytes() + images.labels.numpy().tobytes())
              .hexdigest()}
    if args.serial_images:
        report.update(serial_costs(args.serial_images, procs))
    if procs.is_main:
        print("RESULT " + json.dumps(report), flush=True)


def serial_costs(num_images: int, procs) -> dict:
    """The parts that do not shrink with more processes, at 224 px: gather + assembly, Dataset build, save.

    Zero synthesis iterations of a tiny BN model, so only noise init, the gather of the pixels to every
    process, the concatenation, ``to_dataset`` and ``save_to_disk`` are timed.
    """
    import timm
    import torch

    from synq_hf.config import SynQConfig
    from synq_hf.synthesis import generate_synthetic
    from synq_hf.synthesis.dataset import to_dataset

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=1000).eval()
    dc = {"input_size": (3, 224, 224), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    procs.barrier()
    t0 = time.perf_counter()
    images = generate_synthetic(model, SynQConfig(synthesis_batch_size=256), data_config=dc, num_images=num_images,
                                iterations=0, seed=0, device="cpu", progress=False)
    gather_s = time.perf_counter() - t0
    out = {"serial_images": num_images, "serial_gb": images.pixels.numel() * 4 / 1e9, "gather_s": gather_s}
    if procs.is_main:
        t0 = time.perf_counter()
        data = to_dataset(images, teacher_id="tiny", data_config=dc, num_classes=1000)
        out["to_dataset_s"] = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            data.save_to_disk(tmp)
            out["save_s"] = time.perf_counter() - t0
    procs.barrier()
    return out


def launch(n: int, args: argparse.Namespace) -> dict:
    """Run the worker under ``torchrun --nproc_per_node n``; its report plus the whole command's wall time."""
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or "torchrun"
    cmd = [torchrun, "--standalone", "--nproc_per_node", str(n), __file__, "--worker", "--groups", str(args.groups),
           "--batch", str(args.batch), "--iterations", str(args.iterations), "--teacher", str(args.teacher),
           "--eval-data", str(args.eval_data), "--eval-limit", str(args.eval_limit or 0),
           "--serial-images", str(args.serial_images)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                       os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"the {n}-process run failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    report = json.loads(line.removeprefix("RESULT "))
    report["command_s"] = wall
    report["launch_s"] = wall - report["load_s"] - report["synthesis_s"] - report["eval_s"] - sum(
        report.get(k, 0.0) for k in ("gather_s", "to_dataset_s", "save_s"))
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object (the default output)")
    p.add_argument("--processes", type=int, default=2, help="processes of the sharded run (default 2)")
    p.add_argument("--groups", type=int, default=4, help="synthesis groups (default 4)")
    p.add_argument("--batch", type=int, default=64, help="images per group (default 64)")
    p.add_argument("--iterations", type=int, default=20, help="synthesis iterations (default 20)")
    p.add_argument("--teacher", type=Path, default=TEACHER)
    p.add_argument("--eval-data", type=Path, default=JPEG10K, help="parquet file (default: the JPEG-10k set)")
    p.add_argument("--eval-limit", type=int, default=0, help="evaluate only the first N images (0: all)")
    p.add_argument("--repeats", type=int, default=2, help="runs of each, interleaved; best of them (default 2)")
    p.add_argument("--serial-images", type=int, default=512,
                   help="224-px images for timing the serial gather/Dataset/save steps (0: skip; default 512)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    for path in (args.teacher, args.eval_data):
        if not path.exists():
            raise SystemExit(f"{path} does not exist (see /work/shared/data/README.md)")
    load_before = os.getloadavg()
    runs: dict[int, list[dict]] = {1: [], args.processes: []}
    for _ in range(args.repeats):  # interleaved, so load changes hit both alike
        for n in runs:
            runs[n].append(launch(n, args))
    load_after = os.getloadavg()
    one, many = (min(runs[n], key=lambda r: r["synthesis_s"]) for n in runs)
    out = {"teacher": args.teacher.name, "groups": args.groups, "batch": args.batch, "iterations": args.iterations,
           "eval_images": one["eval"]["num_samples"], "processes": args.processes, "threads_per_process": 1,
           "cpus": os.cpu_count(), "repeats": args.repeats, "loadavg_before": [round(x, 2) for x in load_before],
           "loadavg_after": [round(x, 2) for x in load_after]}
    for key in ("synthesis_s", "eval_s", "load_s", "launch_s", "command_s", "gather_s", "to_dataset_s", "save_s"):
        if key in one:
            for n in runs:
                out[f"{key}_{n}"] = [round(r[key], 2) for r in runs[n]]
    if args.serial_images:
        out["serial_images"], out["serial_gb"] = args.serial_images, round(one["serial_gb"], 3)
    for what in ("synthesis", "eval"):  # best of the repeats of each
        speedup = min(r[f"{what}_s"] for r in runs[1]) / min(r[f"{what}_s"] for r in runs[args.processes])
        out[f"{what}_speedup"] = round(speedup, 3)
        out[f"{what}_efficiency"] = round(speedup / args.processes, 3)
    out["identical_images"] = len({r["images_sha256"] for n in runs for r in runs[n]}) == 1
    out["identical_eval"] = all(r["eval"] == one["eval"] for n in runs for r in runs[n])
    out["eval"] = one["eval"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
