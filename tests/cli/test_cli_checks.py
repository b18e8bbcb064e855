"""``synq-hf quantize`` checks what it reads and writes before any work, locks its work folder, says how to resume
after a late failure (and the saved model then counts every part's time), and explains its options in groups."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import timm
import torch
from PIL import Image
from timm.models import save_for_hf

import synq_hf  # noqa: F401  (registers cifar_resnet20 with timm)
from synq_hf.cli import build_parser, main
from synq_hf.hub.outputs import OutputError
from synq_hf.quantizer import SynQQuantizer

REPO_ROOT = Path(__file__).resolve().parents[2]
README_GROUP = {"run": "bookkeeping"}  # --help's "run" group holds the README's bookkeeping fields (the seed)
TINY_SYNQ = ("--w-bits", "4", "--a-bits", "4", "--num-images", "8", "--synthesis-iterations", "2",
             "--max-steps", "2", "--train-batch-size", "4", "--calibration-num-images", "8",
             "--calibration-batch-size", "4", "--no-progress", "--device", "cpu")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init CIFAR ResNet-20 (10 classes) in timm's folder layout."""
    folder = tmp_path_factory.mktemp("teacher")
    torch.manual_seed(0)
    save_for_hf(timm.create_model("cifar_resnet20", pretrained=False).eval(), folder, safe_serialization=True)
    return folder


def _parquet(path: Path, n: int = 12, *, classes: int = 10, mode: str = "RGB", labels: list[int] | None = None,
             image_column: str = "img") -> Path:
    rng = np.random.default_rng(0)
    shape = (32, 32, 3) if mode == "RGB" else (32, 32)
    pics = [Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode) for _ in range(n)]
    features = datasets.Features({image_column: datasets.Image(), "label": datasets.ClassLabel(num_classes=classes)})
    labels = labels if labels is not None else [i % classes for i in range(n)]
    datasets.Dataset.from_dict({image_column: pics, "label": labels}, features=features).to_parquet(str(path))
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _parquet(tmp_path_factory.mktemp("data") / "images.parquet")


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any synthesis, calibration or fine-tuning fails the test: the checks must come first."""
    def forbidden(self: SynQQuantizer, *args: object, **kwargs: object) -> None:
        raise AssertionError("the work started before the inputs were checked")

    for name in ("synthesize", "ptq", "quantize"):
        monkeypatch.setattr(SynQQuantizer, name, forbidden)


def _quantize(teacher: Path, out: Path, *extra: str) -> int:
    return main(["quantize", f"local-dir:{teacher}", "--out", str(out), *extra])


def _error(capsys: pytest.CaptureFixture) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("synq-hf quantize: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# -- checks before the work -----------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["labels beyond the classes", "more classes", "no image column", "missing",
                                  "broken image"])
def test_eval_data_is_checked_before_any_work(case: str, teacher: Path, tmp_path: Path, no_work: None,
                                               capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "eval.parquet"
    if case == "labels beyond the classes":
        features = datasets.Features({"img": datasets.Image(), "label": datasets.Value("int64")})
        pics = [Image.new("RGB", (32, 32))] * 3
        datasets.Dataset.from_dict({"img": pics, "label": [0, 4, 12]}, features=features).to_parquet(str(path))
        expected = "has label 12 but the model outputs only 10 classes"
    elif case == "more classes":
        _parquet(path, classes=100)
        expected = "has 100 classes"
    elif case == "no image column":
        datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}).to_parquet(str(path))
        expected = "cannot find an image column"
    elif case == "missing":
        path = tmp_path / "nowhere" / "eval.parquet"
        expected = "eval.parquet"
    else:
        features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
        broken = [{"bytes": b"not an image", "path": "broken.png"}]
        datasets.Dataset.from_dict({"img": broken, "label": [1]}, features=features).to_parquet(str(path))
        expected = "cannot read image 'broken.png'"
    out = tmp_path / "q"
    assert _quantize(teacher, out, *TINY_SYNQ, "--eval-data", str(path)) == 1
    line = _error(capsys)
    assert f"--eval-data {path}" in line and expected in line, line
    assert not out.exists() and not (tmp_path / "q.synq-work").exists()  # nothing written


@pytest.mark.parametrize("case", ["too few rows", "no image column"])
def test_calibration_data_is_checked_before_any_work(case: str, teacher: Path, tmp_path: Path, no_work: None,
                                                     capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "cal.parquet"
    if case == "too few rows":
        _parquet(path, n=6)
        expected = "6 images (1 after skipping 5); 4 were requested"
    else:
        datasets.Dataset.from_dict({"text": ["a"] * 8, "label": [0] * 8}).to_parquet(str(path))
        expected = "cannot find an image column"
    out = tmp_path / "q"
    assert _quantize(teacher, out, "--method", "ptq", "--calibration-data", str(path), "--calibration-skip", "5",
                     "--calibration-num-images", "4", "--no-progress") == 1
    line = _error(capsys)
    assert f"--calibration-data {path}" in line and expected in line, line
    assert not out.exists()


def test_an_unwritable_out_is_refused_before_any_work(teacher: Path, data: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "q"
    args = ("--method", "ptq", "--calibration-data", str(data), "--calibration-num-images", "4", "--no-progress")
    assert _quantize(teacher, out, *args) == 0  # an earlier output, to be replaced with --overwrite
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != out and real_access(p, mode, **kw))
    monkeypatch.setattr(SynQQuantizer, "ptq", lambda *a, **k: pytest.fail("the work started"))
    assert _quantize(teacher, out, *args, "--overwrite") == 1
    assert f"cannot write --out {out}: permission denied" in _error(capsys)
    deep = tmp_path / "no" / "such" / "q"
    assert _quantize(teacher, deep, *TINY_SYNQ) == 1
    assert f"the folder {deep.parent} does not exist; create it first" in _error(capsys)
    assert not (tmp_path / "no").exists()


def test_num_images_hint_names_only_flags_quantize_has(teacher: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    assert _quantize(teacher, tmp_path / "q", *TINY_SYNQ, "--synthesis-batch-size", "8", "--num-images", "33") == 1
    line = _error(capsys)
    assert "--synthesis-batch-size" in line and "--batch-size " not in line and "(e.g. 3)" in line
    options = {o for a in build_parser()._subparsers._group_actions[0].choices["quantize"]._actions
               for o in a.option_strings}
    assert all(flag in options for flag in re.findall(r"--[a-z][a-z-]+", line))


def test_grayscale_eval_data_warns_before_the_work(teacher: Path, data: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture, no_work: None) -> None:
    gray = _parquet(tmp_path / "gray.parquet", mode="L")
    with pytest.raises(AssertionError, match="the work started"):  # the warning came first
        _quantize(teacher, tmp_path / "q", "--method", "ptq", "--calibration-data", str(data),
                  "--calibration-num-images", "4", "--eval-data", str(gray), "--no-progress")
    assert "the images are mode L (converted to RGB)" in capsys.readouterr().err


# -- a failure after the work, and resuming it ----------------------------------------------------------------


def test_a_failure_after_the_work_names_the_work_folder_and_resumes_with_every_parts_time(
        teacher: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "q"
    def full_disk(self: SynQQuantizer, *args: object, **kwargs: object) -> None:
        raise OutputError(f"cannot write --out {out}: No space left on device")

    with monkeypatch.context() as m:
        m.setattr(SynQQuantizer, "save_pretrained", full_disk)
        assert _quantize(teacher, out, *TINY_SYNQ, "--eval-data", str(data)) == 1
    err = capsys.readouterr().err
    work = tmp_path / "q.synq-work"
    assert "No space left on device" in err and f"the work done so far is kept in {work}" in err
    command = err.strip().splitlines()[-1].strip()
    assert command.startswith("synq-hf quantize ") and command.endswith(" --resume")
    first = json.loads((work / "timings.json").read_text())
    assert first["parts"] == 1 and first["finetune_s"] > 0 and first["synthesis_s"] > 0

    assert main(shlex.split(command)[1:]) == 0  # the printed command, as a user would paste it
    assert not work.exists()
    record = json.loads((out / "results.json").read_text())
    assert record["resumed"] == {"parts": 2, "summed": True}
    assert record["finetune_s"] >= round(first["finetune_s"], 1) and record["total_s"] >= round(first["total_s"], 1)
    card = (out / "README.md").read_text()
    assert "Total wall time (2 parts of a resumed run, added up)" in card


# -- the work-folder lock --------------------------------------------------------------------------------------


_HOLDER = """
import sys, time
from pathlib import Path
from synq_hf.cli.common import WorkLock
work = Path(sys.argv[1]); work.mkdir(exist_ok=True)
WorkLock(work).acquire()
print("locked", flush=True)
time.sleep(120)
"""


def _hold_lock(work: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(work)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_run_on_the_same_out_is_told_another_run_uses_it(teacher: Path, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture) -> None:
    out, work = tmp_path / "q", tmp_path / "q.synq-work"
    holder = _hold_lock(work)
    try:
        assert _quantize(teacher, out, *TINY_SYNQ) == 1
        line = _error(capsys)
        assert f"another synq-hf run (pid {holder.pid}) is using the work folder {work}" in line
        assert _quantize(teacher, out, *TINY_SYNQ, "--resume") == 1  # --resume does not take it over either
        assert f"(pid {holder.pid})" in _error(capsys)
    finally:
        holder.kill()  # SIGKILL: no cleanup, the lock file stays behind
        holder.wait()
    assert (work / ".lock").read_text().strip() == str(holder.pid)
    # the dead run's lock does not block: this run starts (and here finishes) normally
    assert _quantize(teacher, out, *TINY_SYNQ) == 0
    assert not work.exists() and (out / "results.json").is_file()


def test_an_interrupted_run_releases_the_lock(teacher: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    out, work = tmp_path / "q", tmp_path / "q.synq-work"
    real = SynQQuantizer.quantize

    def interrupted(self: SynQQuantizer, *args: object, **kwargs: object) -> None:
        assert (work / ".lock").is_file()
        raise KeyboardInterrupt

    monkeypatch.setattr(SynQQuantizer, "quantize", interrupted)
    assert _quantize(teacher, out, *TINY_SYNQ) == 128 + signal.SIGINT
    assert "Resume with" in capsys.readouterr().err and not (work / ".lock").exists()
    monkeypatch.setattr(SynQQuantizer, "quantize", real)
    assert _quantize(teacher, out, *TINY_SYNQ, "--resume") == 0


# -- --help -------------------------------------------------------------------------------------------------


def _help(command: str) -> str:
    parser = build_parser()._subparsers._group_actions[0].choices[command]
    return parser.format_help()


def test_quantize_help_groups_every_config_flag_as_the_readme_does() -> None:
    import dataclasses

    from synq_hf.cli.common import CONFIG_GROUPS, config_field_group, config_flag
    from synq_hf.config import SynQConfig

    text = _help("quantize")
    titles = ["most used"] + [CONFIG_GROUPS[k][0] for k in CONFIG_GROUPS]
    positions = [text.index(f"\n{t}:\n") for t in titles]
    assert positions == sorted(positions)
    sections = dict(zip(titles, re.split(r"\n(?:" + "|".join(re.escape(t) for t in titles) + r"):\n", text)[1:]))
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("| group | fields |"):]
    table = table[:table.index("\n\n")]
    for f in dataclasses.fields(SynQConfig):
        if f.name in ("quant_method", "version", "method"):  # method: the --method flag (most used)
            continue
        group = config_field_group(f.name)
        flag = config_flag(f.name)
        section = sections[CONFIG_GROUPS[group][0]]
        assert re.search(rf"\n  {re.escape(flag)}[ ,\n]", "\n" + section), (f.name, group)
        assert text.count(f"\n  {flag} ") + text.count(f"\n  {flag},") + text.count(f"\n  {flag}\n") == 1, f.name
        row = next(line for line in table.splitlines() if f"`{f.name}`" in line)
        assert row.startswith(f"| {README_GROUP.get(group, group)} |"), (f.name, group, row[:40])
    # the most used come first: the bits lead the quantizer group, the schedule the fine-tuning group
    assert re.findall(r"\n  (--[a-z-]+)", sections["quantizer"])[:2] == ["--w-bits", "--a-bits"]
    tuning = sections[CONFIG_GROUPS["fine-tuning"][0]]
    assert tuning.index("--learning-rate") < tuning.index("--lambda-cam") < tuning.index("--perturbed-loss")
    assert text.splitlines()[0].startswith("usage: synq-hf quantize MODEL --out DIR")


@pytest.mark.parametrize("command", ["quantize", "synthesize", "evaluate", "export", "demo", "push"])
def test_help_examples_parse_and_their_local_paths_exist_from_the_repository_root(command: str) -> None:
    text = _help(command)
    examples = text[text.index("example"):]
    joined = re.sub(r"\\\n\s*", " ", examples)
    lines = [line.split("#")[0].strip() for line in joined.splitlines() if line.strip().startswith("synq-hf ")]
    assert lines, command
    for line in lines:
        argv = shlex.split(line)[1:]
        build_parser().parse_args(argv)  # every example is a valid command line
        for arg in argv:
            local = arg.removeprefix("local-dir:").removeprefix("parquet:")
            if local.startswith("../shared/") and "*" not in local:
                if not (REPO_ROOT / local).exists():
                    pytest.skip("../shared/data is not beside this checkout")
                assert (REPO_ROOT / local).exists(), (command, arg)
