"""The README's examples print the numbers the README shows (within the tolerance it states), so they cannot drift.

A fenced block right after ``<!-- readme-check: ±T points -->`` is checked:

* a ``bash`` block: every ``synq-hf`` command runs in order (in a fresh folder, as a user would run it from the
  repository root), and a command whose comment says ``top-1 NN.NN`` must print a top-1 within ±T of it;
* a ``text`` block (sample output) after ``<!-- readme-check: ±T points, command: CMD -->``: ``CMD`` runs and
  every ``LABEL top-1 NN.NN`` line of the block must appear in its output within ±T, and every other line that
  names no measurement (e.g. ``saved to DIR``) must appear as printed.

The numbers are read from the README, never from this file: re-measure, edit the README, and this test follows.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
README = REPO_ROOT / "README.md"
MARKER = re.compile(r"<!-- readme-check: ±([\d.]+) points?(?:, command: (.+?))? -->\s*\n```(\w+)\n(.*?)```", re.S)
TOP1 = re.compile(r"top-1\s+(\d+\.\d+)")
SAMPLE_LINE = re.compile(r"^\s*(\S.*?)\s+top-1\s+(\d+\.\d+)", re.M)
TIMING = re.compile(r"\d+(\.\d+)? s\b")  # wall times differ from run to run: never compared


def readme_checks(text: str) -> list[tuple[float, str | None, str, str]]:
    """(tolerance, command, language, body) of every checked block of the README."""
    return [(float(t), cmd, lang, body) for t, cmd, lang, body in MARKER.findall(text)]


def commands(body: str) -> list[tuple[str, str]]:
    """(command, comment) of each ``synq-hf`` command of a bash block, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", body)
    out = []
    for line in joined.splitlines():
        code, _, comment = line.partition(" # ")
        if code.strip().startswith("synq-hf "):
            out.append((code.strip(), comment.strip()))
    return out


def _run(command: str, cwd: Path, shared: Path) -> str:
    """Run a README command as a user would (a fresh process, default threads), from ``cwd``; its stdout."""
    argv = [a.replace("../shared/data", str(shared)) for a in shlex.split(command)]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]), HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "synq_hf.cli", *argv[1:]],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{command}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_the_readme_marks_its_examples() -> None:
    """The checked blocks exist and hold what this test compares (fast: no example runs)."""
    checks = readme_checks(README.read_text(encoding="utf-8"))
    ran = [c for _, cmd, lang, body in checks for c, _ in (commands(body) if lang == "bash" else [(cmd, "")])]
    assert any(c == "synq-hf demo" for c in ran)
    assert any("--method ptq --w-bits 8 --a-bits 8" in c and "--deploy-placement" not in c for c in ran)
    assert any("--deploy-placement int8" in c for c in ran)
    numbers = sum(len(TOP1.findall(body)) for *_, body in checks)
    assert numbers >= 5, numbers  # the demo's three, the two W8A8 examples
    for tolerance, _, _, _ in checks:
        assert 0 < tolerance <= 2.0


@pytest.mark.slow
def test_readme_examples_print_the_readme_numbers(shared_data: Path, tmp_path: Path) -> None:
    checks = readme_checks(README.read_text(encoding="utf-8"))
    compared = []
    for i, (tolerance, command, lang, body) in enumerate(checks):
        cwd = tmp_path / f"block{i}"
        cwd.mkdir()
        if lang == "bash":
            for cmd, comment in commands(body):
                out = _run(cmd, cwd, shared_data)
                expected = TOP1.search(comment)
                if expected:
                    got = TOP1.search(out)
                    assert got, (cmd, out)
                    compared.append((cmd, float(expected.group(1)), float(got.group(1)), tolerance))
        else:
            assert command, "a sample-output block names the command that prints it"
            out = _run(command, cwd, shared_data)
            printed = dict(SAMPLE_LINE.findall(out))
            for label, value in SAMPLE_LINE.findall(body):
                assert label in printed, (label, out)
                compared.append((f"{command}: {label}", float(value), float(printed[label]), tolerance))
            for line in body.splitlines():
                if line.strip() and not SAMPLE_LINE.match(line) and not TIMING.search(line):
                    assert line.strip() in out, (line, out)  # e.g. "saved to synq-demo-w4a4 (...)"
    far = [c for c in compared if abs(c[1] - c[2]) > c[3]]
    assert compared and not far, "README vs printed (README, got, tolerance):\n" + "\n".join(map(str, far))


def test_ci_runs_exactly_the_readme_install_and_test_commands() -> None:
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    ci_lines = [line for line in ci.split("# --- the README's install and test commands", 1)[1].splitlines()[1:]
                if line.strip()]
    readme_lines = {line.split("  #")[0].rstrip() for line in README.read_text(encoding="utf-8").splitlines()}
    assert [line for line in ci_lines if line not in readme_lines] == []
    tiers = [line for line in ci_lines if line.startswith("python -m pytest")]
    assert len(tiers) == 2 and '-m "not slow"' in tiers[0] and tiers[1].endswith("-m slow")
