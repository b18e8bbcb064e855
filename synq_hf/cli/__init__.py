"""The ``synq-hf`` command line: one module per subcommand, each exposing ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..errors import SynQError
from ..version import __version__

# Subcommand modules in the order ``synq-hf --help`` lists them; each defines ``register(subparsers)``
# which adds its parser and sets ``func=run`` (``run(args) -> int``).
_COMMANDS: tuple[str, ...] = ("demo", "quantize", "synthesize", "evaluate", "export", "push")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synq-hf",
        description="Zero-shot quantization of image classifiers (SynQ, ICLR 2025).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"synq-hf {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``synq-hf`` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("timm").setLevel(logging.WARNING)  # per-load INFO lines add nothing for CLI users
    try:
        return int(args.func(args) or 0)
    except SynQError as e:
        print(f"synq-hf {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"synq-hf {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
