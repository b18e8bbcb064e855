"""The ``synq-hf`` command line: one module per subcommand, each exposing ``register(subparsers)``."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..distributed import launched
from ..errors import SynQError
from ..version import __version__

# Subcommand modules in the order ``synq-hf --help`` lists them; each defines ``register(subparsers)``
# which adds its parser and sets ``func=run`` (``run(args) -> int``).
_COMMANDS: tuple[str, ...] = ("demo", "quantize", "synthesize", "evaluate", "export", "push")

LAUNCHABLE: tuple[str, ...] = ("quantize", "synthesize")
"""Subcommands that run under ``accelerate launch``/``torchrun``: every process shares the work, the main one writes."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synq-hf",
        description="Zero-shot quantization of image classifiers (SynQ, ICLR 2025).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"synq-hf {__version__}")
    debug_help = "on an error, print the traceback before the one-line message"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    for command in sub.choices.values():  # also after the subcommand: `synq-hf quantize ... --debug`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``synq-hf`` console script; returns the process exit code.

    Results go to stdout; logs, progress bars and Trainer logs to stderr. SIGTERM is handled like Ctrl-C:
    a command with a work folder keeps it and prints the exact command that resumes it.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    args.argv, args.stdout = argv, sys.stdout
    previous = _on_sigterm_raise_interrupt()
    bars = _hide_datasets_bars() if getattr(args, "no_progress", False) else None
    rank, world = launched()
    try:
        if world > 1 and args.command not in LAUNCHABLE:
            from .common import refuse_multi_process

            refuse_multi_process(f"`synq-hf {args.command}`", "for several GPUs or machines run `synq-hf quantize`, "
                                 "`synq-hf synthesize`, a recipe (`accelerate launch recipes/X.py`) or the Python API")
        with contextlib.redirect_stdout(sys.stderr), _package_logging(rank == 0):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return _interrupted(args, "interrupted", 128 + _LAST_SIGNAL[0])
    except SynQError as e:
        trainer = sys.modules.get("synq_hf.training.trainer")  # only loaded when something was trained
        if trainer is not None and isinstance(e, trainer.TrainingInterrupted):
            signum = getattr(e, "signum", None) or int(signal.SIGTERM)
            return _interrupted(args, f"stopped by signal {signum} (fine-tuning checkpoint saved)", 128 + signum)
        _error(args, str(e))
        _kept_work(args)
        return 1
    except Exception as e:
        if world == 1:  # a bug in one process: the traceback as usual
            raise
        # under a launcher an unexpected failure is one line on this process too (the launcher stops the others)
        _error(args, f"process {rank} of {world}: {type(e).__name__}: {e}")
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if bars:
            import datasets

            datasets.enable_progress_bars()
        if world > 1:
            from ..distributed import end_processes

            end_processes()  # a process group left to the interpreter's exit can abort a finished process


def _error(args: argparse.Namespace, message: str) -> None:
    """The one-line error of a command (with ``--debug``, the traceback of the exception being handled first)."""
    if getattr(args, "debug", False):
        traceback.print_exc(file=sys.stderr)
    print(f"synq-hf {args.command}: error: {message}", file=sys.stderr)


_LAST_SIGNAL = [int(signal.SIGINT)]


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (redirections and test captures)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ assigns it; the property always wins
        pass


@contextlib.contextmanager
def _package_logging(main: bool = True) -> Iterator[None]:
    """INFO lines of the ``synq_hf`` logger on stderr while a command runs (other processes: warnings only).

    The root logger is left alone.
    """
    package = logging.getLogger("synq_hf")
    handler, level = _StderrHandler(), package.level
    package.addHandler(handler)
    package.setLevel(logging.INFO if main else logging.WARNING)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(level)


def _hide_datasets_bars() -> bool:
    """``--no-progress`` also hides datasets' own bars; returns whether they were shown before."""
    import datasets

    shown = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    return shown


def _on_sigterm_raise_interrupt() -> Any:
    """Make SIGTERM raise KeyboardInterrupt (main thread only); returns the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return None
    _LAST_SIGNAL[0] = int(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        _LAST_SIGNAL[0] = signum
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


def _kept_work(args: argparse.Namespace) -> None:
    """After a failure: if the work folder was kept (it holds synthetic images or checkpoints), say where it is and
    how to continue once the problem is fixed, instead of starting the work over."""
    resume = getattr(args, "resume_command", None)
    work = getattr(args, "work_path", None)
    if resume and work is not None and Path(work).is_dir():
        print(f"synq-hf {args.command}: the work done so far is kept in {work}; after fixing that, resume with:\n"
              f"  {resume}", file=sys.stderr)


def _interrupted(args: argparse.Namespace, what: str, code: int) -> int:
    resume = getattr(args, "resume_command", None)
    work = getattr(args, "work_path", None)
    if resume and work is not None and Path(work).is_dir():
        print(f"synq-hf {args.command}: {what}; the work folder {work} is kept. Resume with:\n  {resume}",
              file=sys.stderr)
    elif launched()[0] > 0:  # another process of a launch: the main one says what was kept
        print(f"synq-hf {args.command}: {what}", file=sys.stderr)
    else:
        print(f"synq-hf {args.command}: {what}; nothing was written", file=sys.stderr)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
