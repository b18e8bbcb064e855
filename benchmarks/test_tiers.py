"""Time the README's two test tiers: wall and CPU seconds of each, and the tests that cost the most.

    python benchmarks/test_tiers.py                       # both tiers, exactly as .ci/run runs them
    python benchmarks/test_tiers.py --tier fast --top 20  # one tier, its 20 most expensive tests

Prints one JSON object: per tier the command, the exit code, the ``failed`` test ids (and pytest's last output
when it failed), ``wall_s`` (on this machine, now), ``cpu_s`` (user +
system of pytest and its workers and subprocesses) and the ``top`` tests by CPU seconds. The budgets (README,
pyproject.toml) are wall times on 2 idle CPU cores: on a busy machine the wall time is not the budget's, but the
CPU seconds still are (a 2-core tier cannot finish faster than ``cpu_s / 2``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tier_commands() -> dict[str, str]:
    """The pytest commands of .ci/run (the README's), by tier: ``-m "not slow"`` is fast, ``-m slow`` is slow."""
    commands = {}
    for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines():
        if line.startswith("python -m pytest"):
            commands["slow" if re.search(r"-m slow\b", line) else "fast"] = line
    return commands


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_tier(command: str, top: int) -> dict:
    """Run one tier's command from the repository root with the per-test timer; its timings."""
    with tempfile.TemporaryDirectory() as tmp:
        times = Path(tmp) / "times.jsonl"
        argv = [sys.executable if a == "python" else a for a in shlex.split(command)]
        argv += ["-p", "benchmarks.pytest_cpu_times", "-p", "no:cacheprovider"]
        env = {**os.environ, "SYNQ_TEST_TIMES": str(times),
               "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        cpu, wall = children_cpu(), time.perf_counter()
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True)
        wall, cpu = time.perf_counter() - wall, children_cpu() - cpu
        tests = [json.loads(line) for line in times.read_text().splitlines()] if times.exists() else []
    summary = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    failed = [t["nodeid"] for t in tests if t.get("outcome") == "failed"]
    if proc.returncode and not failed:  # a failure outside a test's call (collection, a worker): pytest's lines
        failed = [line for line in proc.stdout.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return {
        "command": command, "returncode": proc.returncode, "summary": summary, "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1), "tests": len(tests), "tests_cpu_s": round(sum(t["cpu_s"] for t in tests), 1),
        "failed": failed, "output_tail": proc.stdout[-3000:] if proc.returncode else "",
        "top": sorted(tests, key=lambda t: -t["cpu_s"])[:top],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tier", choices=("fast", "slow", "both"), default="both")
    parser.add_argument("--top", type=int, default=10, help="list this many most expensive tests per tier")
    args = parser.parse_args(argv)
    commands = tier_commands()
    tiers = ("fast", "slow") if args.tier == "both" else (args.tier,)
    result = {"cpus": os.cpu_count(), "load_avg_1min_before": round(os.getloadavg()[0], 2),
              "tiers": {t: run_tier(commands[t], args.top) for t in tiers}}
    result["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, indent=2))
    return max(t["returncode"] for t in result["tiers"].values())


if __name__ == "__main__":
    sys.exit(main())
