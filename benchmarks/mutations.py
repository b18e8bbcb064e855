"""Mutation check of the SynQ loss wiring (issue 21): every wrong wiring must fail at least one fast test.

Each mutation is one textual change to the package (the CAM term's sign, tau forced to 1, the per-batch transform
skipped, ...). For each, the repository's tracked and new files are copied to a temporary folder (never the
checkout), the change is applied there, the fast wiring tests run against that copy, and the copy is removed. A
mutation whose code is no longer found stops the run with an error naming it: the table must follow the code.

    python benchmarks/mutations.py --json                      # the wiring tests, every mutation (a few minutes)
    python benchmarks/mutations.py --json --only cam_sign      # one mutation
    python benchmarks/mutations.py --json --full-tier          # the whole fast tier (-m "not slow") per mutation
    python benchmarks/mutations.py --check                     # only that every mutation still applies (seconds)

Prints ``{"tests": [...], "mutations": [{"name", "what", "file", "failed": [test ids], "first_failed", "caught",
"seconds"}], "all_caught": bool}`` and exits 1 when a mutation is not caught.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAINER = "synq_hf/training/trainer.py"
QUANTIZERS = "synq_hf/quant/quantizers.py"


@dataclass(frozen=True)
class Mutation:
    """Replace the one occurrence of ``old`` in ``file`` by ``new``."""

    name: str
    what: str
    file: str
    old: str
    new: str


MUTATIONS: tuple[Mutation, ...] = (
    # the wirings issue 21 found untested
    Mutation("cam_sign", "the CAM term's sign flipped", TRAINER,
             "loss = loss + cfg.lambda_cam * cam", "loss = loss - cfg.lambda_cam * cam"),
    Mutation("tau_one", "tau forced to 1 (every sample gets CE)", TRAINER,
             "selective_ce(s_logits, t_logits, y, cfg.tau)", "selective_ce(s_logits, t_logits, y, 1.0)"),
    Mutation("skip_batch_transform", "the per-batch filter/augmentation skipped in compute_loss", TRAINER,
             "if self.batch_transform.active:", "if False:"),
    Mutation("kd_temperature_one", "the KD temperature forced to 1", TRAINER,
             "kd = kd_loss(s_logits, t_logits, cfg.kd_temperature)", "kd = kd_loss(s_logits, t_logits, 1.0)"),
    Mutation("lambda_ce_ignored", "lambda_CE ignored", TRAINER,
             "loss = cfg.kd_weight * kd + cfg.lambda_ce * ce", "loss = cfg.kd_weight * kd + ce"),
    Mutation("difficulty_from_student", "difficulty from the student's logits instead of the teacher's", TRAINER,
             "selective_ce(s_logits, t_logits, y, cfg.tau)", "selective_ce(s_logits, s_logits, y, cfg.tau)"),
    Mutation("cam_target_argmax", "cam_target forced to argmax", TRAINER,
             'cam_classes = y if cfg.cam_target == "label" else None', "cam_classes = None"),
    Mutation("lsq_grad_x10", "the weight-LSQ gradient scale x10", QUANTIZERS,
             "grad_factor = 1.0 / (per_scale * qmax) ** 0.5", "grad_factor = 10.0 / (per_scale * qmax) ** 0.5"),
    # a sign flip of each loss term
    Mutation("kd_sign", "the KD term's sign flipped", TRAINER,
             "loss = cfg.kd_weight * kd + cfg.lambda_ce * ce", "loss = -cfg.kd_weight * kd + cfg.lambda_ce * ce"),
    Mutation("ce_sign", "the selective-CE term's sign flipped", TRAINER,
             "loss = cfg.kd_weight * kd + cfg.lambda_ce * ce", "loss = cfg.kd_weight * kd - cfg.lambda_ce * ce"),
    Mutation("hast_sign", "the HAST feature-alignment term's sign flipped", TRAINER,
             "loss = loss + cfg.hast_weight * fa", "loss = loss - cfg.hast_weight * fa"),
    Mutation("perturbed_sign", "the perturbed-sample term's sign flipped", TRAINER,
             "loss = loss + cfg.perturbed_weight * adv", "loss = loss - cfg.perturbed_weight * adv"),
)
"""Every mutation of the issue-21 table; ``cam_sign`` is both the CAM wiring found untested and its sign flip."""

WIRING_TESTS = (
    "tests/training/test_trainer_wiring.py",
    "tests/training/test_losses.py",
    "tests/integration/test_demo_guard.py",
)
"""The fast tests a mutation must fail (``--full-tier`` runs ``-m "not slow"`` over the whole suite instead)."""


def apply(mutation: Mutation, root: Path) -> None:
    """Apply ``mutation`` to the copy at ``root``; ``ValueError`` when its code is not found exactly once."""
    path = root / mutation.file
    text = path.read_text()
    count = text.count(mutation.old)
    if count != 1:
        raise ValueError(f"mutation {mutation.name!r}: {mutation.old!r} occurs {count} times in {mutation.file} "
                         "(expected once): update benchmarks/mutations.py to follow the code")
    path.write_text(text.replace(mutation.old, mutation.new))


def repo_files() -> list[str]:
    """Tracked files and new files git does not ignore (what the fast tests can read)."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return [f for f in out.splitlines() if f and (ROOT / f).is_file()]


def copy_repo(dest: Path) -> Path:
    """Copy the repository's files into ``dest/repo``; ``dest/shared`` points at the shared data, as beside the
    checkout. Returns the copy's root."""
    root = dest / "repo"
    for f in repo_files():
        target = root / f
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, target)
    shared = ROOT.parent / "shared"
    if shared.exists():
        (dest / "shared").symlink_to(shared.resolve())
    return root


_FAILED = re.compile(r"^(?:FAILED|ERROR) (\S+)", re.MULTILINE)


def run_tests(root: Path, tests: list[str], marker: str | None, timeout: int) -> tuple[list[str], int, str]:
    """Run pytest in the copy (its own package first on the path); (failed test ids, exit code, output tail)."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", "-o", "addopts=", *tests]
    if marker:
        cmd += ["-m", marker]
    env = {**os.environ, "PYTHONPATH": str(root), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return ["(timed out)"], -1, str(e)[-2000:]
    out = proc.stdout + proc.stderr
    return _FAILED.findall(out), proc.returncode, out[-3000:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=None, help="comma-separated mutation names (default: all)")
    parser.add_argument("--full-tier", action="store_true", help='run the whole fast tier (-m "not slow")')
    parser.add_argument("--check", action="store_true", help="only check that every mutation applies; run nothing")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per pytest run")
    parser.add_argument("--json", action="store_true", help="print the table as JSON (default: one line each)")
    args = parser.parse_args(argv)

    chosen = list(MUTATIONS)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(names) - {m.name for m in MUTATIONS})
        if unknown:
            raise SystemExit(f"unknown mutation(s) {unknown}; choose from {[m.name for m in MUTATIONS]}")
        chosen = [m for m in MUTATIONS if m.name in names]
    tests = ["tests"] if args.full_tier else list(WIRING_TESTS)
    marker = "not slow"

    if args.check:
        with tempfile.TemporaryDirectory(prefix="synq-mutation-") as tmp:
            root = Path(tmp)
            for m in chosen:
                for f in {m.file}:
                    (root / f).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(ROOT / f, root / f)
                try:
                    apply(m, root)
                except ValueError as e:
                    raise SystemExit(str(e)) from None
        print(f"all {len(chosen)} mutations apply")
        return 0

    with tempfile.TemporaryDirectory(prefix="synq-mutation-") as tmp:  # the unmutated baseline must pass
        root = copy_repo(Path(tmp))
        failed, code, tail = run_tests(root, tests, marker, args.timeout)
        if code != 0:
            raise SystemExit(f"the unmutated tests fail ({failed}); fix them first:\n{tail}")

    rows = []
    for m in chosen:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="synq-mutation-") as tmp:
            root = copy_repo(Path(tmp))
            try:
                apply(m, root)
            except ValueError as e:
                raise SystemExit(str(e)) from None
            failed, code, _ = run_tests(root, tests, marker, args.timeout)
        row = {"name": m.name, "what": m.what, "file": m.file, "failed": failed,
               "first_failed": failed[0] if failed else None, "caught": code != 0 and bool(failed),
               "seconds": round(time.perf_counter() - start, 1)}
        rows.append(row)
        if not args.json:
            print(f"{m.name:26s} {'caught' if row['caught'] else 'NOT CAUGHT':10s} {row['first_failed']} "
                  f"(+{max(len(failed) - 1, 0)} more, {row['seconds']:.0f} s)", flush=True)
    result = {"tests": tests, "marker": marker, "mutations": rows, "all_caught": all(r["caught"] for r in rows)}
    if args.json:
        print(json.dumps(result, indent=1))
    return 0 if result["all_caught"] else 1


if __name__ == "__main__":
    sys.exit(main())
