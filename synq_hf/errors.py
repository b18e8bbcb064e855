"""Exceptions raised by synq_hf: every user-facing failure is a ``SynQError`` with a clear message."""

from __future__ import annotations


class SynQError(Exception):
    """Base class: the CLI prints these as one readable line instead of a traceback."""


class ConfigError(SynQError, ValueError):
    """A ``SynQConfig`` field (or a command-line option) has a value that is not allowed."""


class ModelLoadError(SynQError):
    """A model id or folder could not be resolved, downloaded or loaded."""


class UnsupportedModelError(SynQError):
    """The model loaded, but synq_hf does not know how to quantize or synthesize for it."""


class DataError(SynQError):
    """A dataset could not be loaded or lacks what is needed (columns, labels, image size)."""


class CheckpointError(SynQError):
    """A saved folder is missing files, is corrupt, or belongs to another model."""
