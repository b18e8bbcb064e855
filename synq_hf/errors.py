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


class AlreadyQuantizedError(SynQError):
    """A synq-quantized model (a folder ``save_pretrained`` wrote) was given where a float teacher is needed."""

    @classmethod
    def for_model(cls, model_id: str, base_model: str | None = None) -> AlreadyQuantizedError:
        """The one-line refusal for ``model_id``, pointing to ``synq_hf.load_model`` and its float base model."""
        start = f"start from its float base model {base_model!r}" if base_model else "start from the float model"
        return cls(f"{model_id!r} is already quantized: load it with synq_hf.load_model({model_id!r}) to evaluate, "
                   f"export or push it; to quantize again, {start}")
