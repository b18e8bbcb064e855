"""Where the benchmark scripts run as ``python benchmarks/X.py`` find the shared data: ``../shared/data`` beside
the checkout, else ``/work/shared/data`` (a worktree elsewhere)."""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if not DATA.is_dir():
    DATA = Path("/work/shared/data")
TEACHERS = DATA / "teachers"
LOSSLESS = DATA / "cifar10" / "test-lossless-first1017.parquet"
JPEG10K = DATA / "cifar10" / "test-jpeg-q75.parquet"
