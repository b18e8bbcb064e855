"""What every ``synq-hf`` subcommand shares: the device, the thread count, the work folder and resuming."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import shutil
import sys
import time
import types
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from ..distributed import Processes, default_device, launched, processes
from ..errors import CheckpointError, ConfigError
from ..hub.outputs import OutputError, check_output, output_error

logger = logging.getLogger(__name__)

SMALL_MODEL_PARAMS = 1_000_000
"""Models with fewer parameters run on one CPU thread: their small ops gain little from more, and lose a lot
when the cores are busy (the digits demo: 27 s on one thread, 3 min 40 s on two busy cores)."""

RUN_FILE = "run.json"


def resolve_device(spec: str | None) -> torch.device:
    """``--device`` as a ``torch.device`` (default: :func:`default_device`), refusing CUDA where there is none."""
    if spec is None:
        return default_device()
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {spec!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {spec}: CUDA is not available on this machine; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {spec}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type not in ("cpu", "mps", "xpu"):
        raise ConfigError(f"--device {spec}: unsupported device type {device.type!r}; use cpu or cuda")
    return device


def pick_threads(model: torch.nn.Module, device: torch.device) -> None:
    """One CPU thread for small models (unless OMP_NUM_THREADS is set): see :data:`SMALL_MODEL_PARAMS`."""
    if device.type != "cpu" or os.environ.get("OMP_NUM_THREADS"):
        return
    if sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMS and torch.get_num_threads() > 1:
        logger.debug("small model: using 1 CPU thread (set OMP_NUM_THREADS to choose)")
        torch.set_num_threads(1)


def default_work_dir(out: Path) -> Path:
    """The work folder beside ``--out``: ``<out>.synq-work``."""
    out = Path(out).expanduser()
    return out.with_name(out.name + ".synq-work")


LOCK_FILE = ".lock"


class WorkLock:
    """An exclusive lock on a work folder, so two runs never share one (``flock`` on ``DIR/.lock``).

    The operating system drops the lock when its process dies, so a lock left by a killed run never blocks the next
    one. The file holds the owner's pid for the message. Where ``fcntl`` is missing (Windows) the pid in the file
    decides: a live process holds the folder, a dead one's file is stale and taken over.
    """

    def __init__(self, work: Path) -> None:
        self.path = Path(work) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise a one-line ``OutputError`` naming the run (pid) that holds it."""
        for _ in range(10):  # retried only when the holder removed the file between our open and our lock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not self._lock(fd):
                os.close(fd)
                raise OutputError(f"another synq-hf run{self._owner()} is using the work folder {self.path.parent}; "
                                  "wait for it to finish, or give this run another --out or --work-dir")
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self._fd = fd
                return
            os.close(fd)
        raise OutputError(f"cannot lock the work folder {self.path.parent}: it keeps changing; try again")

    @staticmethod
    def _lock(fd: int) -> bool:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: the pid decides
            return WorkLock._pid_free(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True

    @staticmethod
    def _pid_free(fd: int) -> bool:  # pragma: no cover - only where fcntl is missing
        text = os.read(fd, 64).decode(errors="replace").strip()
        if not text.isdigit() or int(text) == os.getpid():
            return True
        try:
            os.kill(int(text), 0)
        except OSError:
            return True  # the owner is dead: a stale lock
        return False

    def _owner(self) -> str:
        try:
            pid = self.path.read_text(encoding="utf-8").strip()
        except OSError:
            return ""
        return f" (pid {pid})" if pid.isdigit() else ""

    def release(self) -> None:
        """Remove the lock file and drop the lock (idempotent)."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None


def open_work_dir(args: argparse.Namespace, fingerprint: dict[str, Any]) -> Path:
    """Create (or, with ``--resume``, reopen) the work folder, lock it, record how to resume; refuse a foreign one.

    ``fingerprint`` (model, method, config...) is saved in ``run.json``; ``--resume`` with different settings,
    or a work folder left by an interrupted run without ``--resume``, is refused with one line, and so is a work
    folder another live run holds (:class:`WorkLock`). The lock is ``args.work_lock`` until :func:`work_session` ends.
    """
    work = Path(args.work_dir or default_work_dir(args.out)).expanduser()
    run_file = work / RUN_FILE
    fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True))
    if work.exists() and not work.is_dir():
        raise OutputError(f"--work-dir {work} exists and is not a folder; choose another")
    if not work.parent.is_dir():
        raise OutputError(f"--work-dir {work}: the folder {work.parent} does not exist; create it first")
    created = not work.exists()
    lock = WorkLock(work)
    try:
        work.mkdir(exist_ok=True)
        lock.acquire()
    except OSError as e:
        raise OutputError(f"cannot write --work-dir {work}: {e.strerror or e}") from None
    try:
        _check_work_dir(args, work, run_file, fingerprint)
        if not run_file.is_file():
            run_file.write_text(json.dumps(fingerprint, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    except BaseException as e:
        lock.release()
        if created:
            shutil.rmtree(work, ignore_errors=True)
        if isinstance(e, OSError):
            raise OutputError(f"cannot write --work-dir {work}: {e.strerror or e}") from None
        raise
    args.resume_command = resume_command(args, work)
    args.work_path = work
    args.work_lock = lock
    return work


def _check_work_dir(args: argparse.Namespace, work: Path, run_file: Path, fingerprint: dict[str, Any]) -> None:
    if run_file.is_file():
        try:
            saved = json.loads(run_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{run_file} is unreadable ({e}); delete {work} to start over") from None
        if not args.resume:
            raise CheckpointError(f"--work-dir {work} holds an interrupted run: pass --resume to continue it, "
                                  "or delete that folder to start over")
        diff = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
        if diff:
            raise CheckpointError(f"--resume: the run in {work} used different settings ({', '.join(diff)}); "
                                  "resume with the same command, or delete that folder")
    elif args.resume:
        raise CheckpointError(f"--resume: {work} holds no interrupted run to continue")
    elif any(p.name != LOCK_FILE for p in work.iterdir()):
        raise OutputError(f"--work-dir {work} exists and is not an empty folder; choose another")


def resume_command(args: argparse.Namespace, work: Path) -> str:
    """The exact command line that resumes this run (its work folder as an absolute path)."""
    argv = list(getattr(args, "argv", None) or sys.argv[1:])
    if "--work-dir" in argv:
        i = argv.index("--work-dir")
        argv[i + 1 : i + 2] = [str(work.resolve())]
    else:
        argv += ["--work-dir", str(work.resolve())]
    argv = [a for a in argv if a != "--resume" and not a.startswith("--work-dir=")] + ["--resume"]
    return "synq-hf " + shlex.join(argv)


def close_work_dir(work: Path, names: tuple[str, ...]) -> None:
    """After success: remove what this run wrote in ``work`` (``names``, run.json and the lock), and ``work`` if
    empty."""
    for name in (*names, RUN_FILE, LOCK_FILE):
        path = work / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()
    try:
        work.rmdir()
    except OSError:
        pass  # it holds something else: leave it


@contextlib.contextmanager
def work_session(args: argparse.Namespace, fingerprint: dict[str, Any], items: tuple[str, ...]) -> Iterator[Path]:
    """:func:`open_work_dir` for the duration of a run: removed after success, kept when it holds progress.

    On any failure or interruption the folder is kept if one of ``items`` has content (synthesized groups,
    checkpoints), so the printed resume command works; a folder holding no progress is removed.
    """
    work = open_work_dir(args, fingerprint)
    try:
        yield work
    except BaseException:
        if not any(_has_content(work / name) for name in items):
            close_work_dir(work, items)
        raise
    else:
        close_work_dir(work, items)
    finally:
        args.work_lock.release()


def refuse_multi_process(what: str, hint: str) -> None:
    """Stop ``what`` (a one-process command) under a launcher with one line ending in ``hint``; no collective."""
    rank, world = launched()
    if world > 1:
        raise ConfigError(f"{what} runs in one process, but this is process {rank} of {world} (accelerate launch / "
                          f"torchrun); {hint}")


@contextlib.contextmanager
def run_session(args: argparse.Namespace, fingerprint: dict[str, Any], items: tuple[str, ...], *,
                uses_work: bool = True) -> Iterator[Processes]:
    """The processes of a run writing ``--out`` (one, or every one of a launch); yields them.

    The main process alone checks ``--out`` and holds the work folder (:func:`work_session`, when ``uses_work``);
    every process gets its path as ``args.work_path`` (for its share of the work) and the processes as
    ``args.procs``. A check that fails on one process stops every process with its one line
    (:meth:`Processes.together`).
    """
    procs = processes()
    with contextlib.ExitStack() as stack:
        with procs.together():
            if procs.is_main:
                check_output(args.out, overwrite=args.overwrite, create_parents=False)
                if uses_work:
                    stack.enter_context(work_session(args, fingerprint, items))
        args.work_path = procs.from_main(getattr(args, "work_path", None))
        args.procs = procs
        yield procs


def _has_content(path: Path) -> bool:
    return path.is_dir() and any(p.name != "groups.json" for p in path.iterdir())


class PartClock:
    """Wall time of each phase of a run, added up over the parts of an interrupted and resumed run.

    A part that fails or is interrupted saves its times (:meth:`save`, plus the earlier parts) to ``timings.json`` in
    the work folder; the part that resumes it reads them back as :attr:`earlier`, so the saved model reports the
    whole run, not only its last part.
    """

    FILE = "timings.json"

    def __init__(self, work: Path | None) -> None:
        self.path = Path(work) / self.FILE if work is not None else None
        self.earlier: dict[str, float] = {}
        if self.path is not None and self.path.is_file():
            try:
                self.earlier = {k: float(v) for k, v in json.loads(self.path.read_text(encoding="utf-8")).items()}
            except (OSError, ValueError, TypeError, AttributeError):
                logger.warning("%s is unreadable: the earlier parts' wall times are not counted", self.path)
        self.parts = int(self.earlier.pop("parts", 0)) + 1
        self.now: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time one phase (``synthesis_s``, ``finetune_s``) of this part, also when it fails or is interrupted."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.now[name] = self.now.get(name, 0.0) + time.perf_counter() - start

    def totals(self) -> dict[str, float]:
        """Every part's seconds added up, this one's so far included, and ``parts``."""
        out = {k: self.earlier.get(k, 0.0) + self.now.get(k, 0.0) for k in {*self.earlier, *self.now}}
        out["total_s"] = self.earlier.get("total_s", 0.0) + time.perf_counter() - self._start
        return {**out, "parts": self.parts}

    def save(self) -> None:
        """Write :meth:`totals` into the work folder (if there is one); never raises."""
        if self.path is None or not self.path.parent.is_dir():
            return
        try:
            self.path.write_text(json.dumps(self.totals(), sort_keys=True) + "\n", encoding="utf-8")
        except OSError as e:
            logger.warning("cannot record this part's wall time in %s: %s", self.path, e.strerror or e)


def add_hub_arguments(p: argparse.ArgumentParser) -> None:
    """``--revision`` and ``--token`` for subcommands that load MODEL (the names ``hf download`` uses)."""
    p.add_argument("--revision", metavar="REV", help="branch, tag or commit of a Hub MODEL (default: main)")
    p.add_argument("--token", metavar="TOKEN",
                   help="Hub token for private or gated models (default: HF_TOKEN or the `hf auth login` token; "
                   "a token on the command line ends up in your shell history)")


def hub_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The ``load_model`` keywords given by :func:`add_hub_arguments`."""
    return {"revision": args.revision, "token": args.token}


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """The options of every subcommand that loads and runs MODEL: ``--device``, ``--trust-remote-code``,
    ``--revision``/``--token`` and ``--no-progress`` (read back by :func:`load_cli_model`)."""
    p.add_argument("--device", metavar="D", help="torch device, e.g. cpu or cuda:0 (default: cuda if available)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow models that ship their own code")
    add_hub_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The options of the long runs (``quantize``, ``synthesize``): :func:`add_model_arguments` plus ``--work-dir``
    and ``--resume``, whose work survives an interruption (:func:`work_session`)."""
    add_model_arguments(p)
    p.add_argument("--work-dir", type=Path, metavar="DIR",
                   help="synthetic images and checkpoints, saved as they complete and kept if interrupted "
                   "(default: OUT.synq-work)")
    p.add_argument("--resume", action="store_true", help="continue the interrupted run kept in the work folder")


def start_run(args: argparse.Namespace) -> torch.device:
    """What a subcommand writing ``--out`` checks before any work (never after hours of it): ``--device``, and
    ``--out`` (a new folder in an existing one, or an earlier synq-hf output with ``--overwrite``)."""
    device = resolve_device(args.device)
    check_output(args.out, overwrite=args.overwrite, create_parents=False)
    return device


@contextlib.contextmanager
def writing_out(out: Path, flag: str = "--out") -> Iterator[None]:
    """An ``OSError`` while writing ``--out`` (disk full, no permission) becomes a one-line ``OutputError``."""
    try:
        yield
    except OutputError:
        raise
    except OSError as e:
        raise output_error(out, e, flag=flag) from e


def load_cli_model(args: argparse.Namespace, device: torch.device | None = None) -> Any:
    """``load_model(MODEL)`` with the options of :func:`add_model_arguments`; with ``device``, small models on
    the CPU get one thread (:func:`pick_threads`)."""
    from ..hub.loading import load_model

    loaded = load_model(args.model, trust_remote_code=args.trust_remote_code, **hub_kwargs(args))
    if device is not None:
        pick_threads(loaded.model, device)
    return loaded


# --------------------------------------------------------------------------------------------------
# SynQConfig fields as flags
# --------------------------------------------------------------------------------------------------

_NOT_FLAGS = ("quant_method", "version", "method")  # method: `synq-hf quantize --method` sets it


def config_flag(name: str) -> str:
    """The command-line flag of a ``SynQConfig`` field: ``w_bits`` -> ``--w-bits`` (the same on every subcommand)."""
    return "--" + name.replace("_", "-")


def _flag_type(hint: Any) -> tuple[Any, bool]:
    """(the scalar type of a field's annotation, whether it is a list), ``X | None`` read as ``X``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
        origin = typing.get_origin(hint)
    if origin is list:
        return typing.get_args(hint)[0], True
    if origin is dict:
        return dict, False
    if origin is typing.Literal:
        return type(typing.get_args(hint)[0]), False
    return hint, False


CONFIG_GROUPS: dict[str, tuple[str, str]] = {
    "quantizer": ("quantizer", "what shapes the quantized model (saved with it as its quantization_config)"),
    "calibration": ("calibration", "the images and the searches that set the quantization ranges"),
    "synthesis": ("synthesis", "the synthetic images made from the model itself (no real data)"),
    "fine-tuning": ("fine-tuning (--method synq)", "SynQ's loss (Eq. 6) and its SGD schedule"),
    "mixed": ("mixed precision", "per-layer bits chosen under a size or average-bits budget"),
    "reconstruction": ("block reconstruction (--method reconstruct)",
                       "Genie/BRECQ-style reconstruction block by block: AdaRound, LSQ, QDrop, SynQ on top"),
    "run": ("run", "seed, device, work folder and the Hub"),
}
"""``--help`` groups, in the order shown (the README's SynQConfig groups): key -> (title, description)."""

_PART_GROUPS = {"QuantizationSettings": "quantizer", "SynthesisSettings": "synthesis", "LossSettings": "fine-tuning",
                "ScheduleSettings": "fine-tuning", "SynQConfig": "run"}
"""The group of a field without a ``group`` in its metadata: the settings part (dataclass) that declares it."""

_PART_FIRST = ("ScheduleSettings",)
"""Parts whose flags come first in a shared group (the schedule's learning rate, batch and steps are set more
often than the loss weights and extras)."""


def _part_of(name: str) -> str:
    """The settings dataclass that declares a ``SynQConfig`` field (its name)."""
    import dataclasses

    from ..config import SynQConfig

    for cls in SynQConfig.__mro__:
        if dataclasses.is_dataclass(cls) and name in cls.__dict__.get("__annotations__", {}):
            return cls.__name__
    return "SynQConfig"


def config_field_group(name: str) -> str:
    """The ``--help`` group of a ``SynQConfig`` field: its metadata's ``group``, else its part's.

    A part not listed in :data:`_PART_GROUPS` (a new settings dataclass) is its own group, named after its class.
    """
    from ..config import SynQConfig

    group = SynQConfig.__dataclass_fields__[name].metadata.get("group")
    if group:
        return group
    part = _part_of(name)
    return _PART_GROUPS.get(part, part)


def config_groups(parser: argparse.ArgumentParser, fields: Iterable[str] | None = None,
                  extra: Iterable[str] = ("run",)) -> dict[str, Any]:
    """Create the ``--help`` groups of ``fields`` (default: every flag field) plus ``extra``, in
    :data:`CONFIG_GROUPS` order, and return them by key, so a command files its own options beside the fields."""
    import dataclasses

    from ..config import SynQConfig

    names = [f.name for f in dataclasses.fields(SynQConfig) if f.name not in _NOT_FLAGS]
    wanted = set(fields) if fields is not None else set(names)
    keys = {config_field_group(n) for n in names if n in wanted} | set(extra)
    order = [k for k in CONFIG_GROUPS if k in keys] + sorted(k for k in keys if k not in CONFIG_GROUPS)
    parts = {c.__name__: c for c in SynQConfig.__mro__}
    groups = {}
    for key in order:
        if key in CONFIG_GROUPS:
            title, description = CONFIG_GROUPS[key]
        else:  # a settings part without an entry: named after its class, described by its docstring
            doc = (getattr(parts.get(key), "__doc__", None) or "").strip()
            title, description = key.removesuffix("Settings").lower(), doc.split("\n")[0] or None
        groups[key] = parser.add_argument_group(title, description)
    return groups


def add_config_arguments(parser: argparse.ArgumentParser, fields: Iterable[str] | None = None,
                         groups: dict[str, Any] | None = None, config_group: Any = None) -> None:
    """``--config`` and one flag per ``SynQConfig`` field (all of them, or ``fields``), generated from the dataclass.

    Types, choices and help come from the fields; the default shown is the field's. Each flag goes to its field's
    ``--help`` group (:func:`config_field_group`; ``groups`` from :func:`config_groups`, created here if absent);
    ``--config`` goes to ``config_group`` (default: the first group).
    A flag left out leaves the value of ``--config`` (or the field default) alone: see :func:`config_from_args`.
    """
    import dataclasses

    from ..config import SynQConfig

    groups = groups if groups is not None else config_groups(parser, fields)
    first = next(iter(groups.values()))
    (config_group or first).add_argument("--config", metavar="JSON",
                       help="every SynQConfig setting as a JSON file or an inline JSON object ('{\"w_bits\": 3}'), "
                       "read first; the flags change single fields")
    hints = typing.get_type_hints(SynQConfig)
    wanted = set(fields) if fields is not None else None
    chosen = [f for f in dataclasses.fields(SynQConfig)
              if f.name not in _NOT_FLAGS and (wanted is None or f.name in wanted)]
    for f in sorted(chosen, key=lambda f: _part_of(f.name) not in _PART_FIRST):  # stable: field order otherwise
        kind, many = _flag_type(hints[f.name])
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        shown = "" if default is None else f" (default: {default})"  # a None default's help says what None means
        help_text = f"{f.metadata.get('help', '')}{shown}".replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif kind is dict:
            kwargs.update(type=_json_object, metavar="JSON")
        else:
            kwargs.update(type=kind, metavar={int: "N", float: "X"}.get(kind, "PATTERN" if many else "S"))
            if many:
                kwargs["nargs"] = "*"
            if f.metadata.get("choices"):
                kwargs.update(choices=f.metadata["choices"], metavar=None)
        group = groups.get(config_field_group(f.name)) or first
        group.add_argument(config_flag(f.name), **kwargs)


def _json_object(text: str) -> dict[str, Any]:
    """A dict-valued field's flag: an inline JSON object such as ``'{"conv1": 8}'``."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not a JSON object ({e}): {text!r}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"conv1\": 8}}', got {text!r}")
    return value


def config_from_args(args: argparse.Namespace, preset: str | None = None) -> Any:
    """The ``SynQConfig`` of a command: ``--config`` (file or inline JSON), then ``preset`` (a loss preset), then
    every field flag given on the command line; a value that is not allowed is named by its flag."""
    import dataclasses

    from ..config import SynQConfig, check_field

    config = SynQConfig.from_json(args.config) if getattr(args, "config", None) else SynQConfig()
    if preset:
        config = config.with_loss_preset(preset)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(SynQConfig)
             if f.name not in _NOT_FLAGS and hasattr(args, f.name)}
    for f in dataclasses.fields(SynQConfig):
        if given.get(f.name) is not None:
            check_field(f, given[f.name], config_flag(f.name))
    return config.replace(**given)


class DeprecatedFlag(argparse.Action):
    """An old flag kept working for a field: sets it and says once, on stderr, which flag replaces it."""

    def __init__(self, option_strings: list[str], dest: str, replacement: str = "", **kwargs: Any) -> None:
        self.replacement = replacement
        super().__init__(option_strings, dest, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"synq-hf: {option_string} is deprecated and will be removed in 1.0; use {self.replacement}",
              file=sys.stderr)
        setattr(namespace, self.dest, True if self.nargs == 0 else values)


def add_deprecated_flag(parser: argparse.ArgumentParser, old: str, field: str, **kwargs: Any) -> None:
    """Keep ``old`` working as the flag of ``field`` (hidden from --help), with a one-line deprecation message."""
    parser.add_argument(old, dest=field, action=DeprecatedFlag, replacement=config_flag(field),
                        help=argparse.SUPPRESS, **kwargs)


def result(args: argparse.Namespace, text: str) -> None:
    """Print a result line to stdout (logs, progress bars and Trainer dicts go to stderr)."""
    print(text, file=getattr(args, "stdout", None) or sys.stdout, flush=True)
