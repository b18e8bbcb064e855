"""``synq_hf_quantized``: the timm architecture a packed synq_hf folder names, so timm alone cannot load it.

A packed folder's ``config.json`` says ``"architecture": "synq_hf_quantized"`` (the real one is under
``synq.architecture``). Without synq_hf, timm answers "Unknown model (synq_hf_quantized)"; with synq_hf
imported, this entry point raises a ``CheckpointError`` saying how to load the folder. Either way
``timm.create_model("local-dir:FOLDER", pretrained=True)`` never returns a float model silently.
"""

from __future__ import annotations

from typing import Any

from timm.models import register_model

from ..errors import CheckpointError

GUARD_ARCHITECTURE = "synq_hf_quantized"


@register_model
def synq_hf_quantized(pretrained: bool = False, **kwargs: Any) -> None:
    """Always raises: the folder holds packed integer weights that only synq_hf can load."""
    cfg = kwargs.get("pretrained_cfg")
    source = cfg.get("file") if isinstance(cfg, dict) else getattr(cfg, "file", None)
    where = source or "FOLDER"
    raise CheckpointError(
        f"{where} is a synq_hf-quantized model with packed integer weights, which timm alone cannot load: "
        f"use synq_hf.load_model({str(where)!r}) in Python or `synq-hf evaluate {where} --data ...`"
    )
