"""Reading a model folder: its ``config.json``, which kind of model it holds, and whether its weights are whole."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from ..errors import CheckpointError, ModelLoadError

__all__ = [
    "WEIGHT_FILES",
    "check_safetensors",
    "check_weights",
    "config_kind",
    "is_synq_config",
    "is_synq_folder",
    "read_folder_config",
    "read_json",
]

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "pytorch_model.pth",
    "model.pth",
)
"""Weight files a timm or transformers folder may hold, preferred first."""


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON object in ``path``; a ``CheckpointError`` if it is unreadable or not an object."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return data


def listing(folder: Path, limit: int = 15) -> str:
    """``it contains: a, b/, ...`` (or ``it is empty``), for error messages about a folder."""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "it is empty"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return "it contains: " + ", ".join(names[:limit]) + more


def read_folder_config(folder: Path) -> dict[str, Any]:
    """The ``config.json`` of a model folder; a ``ModelLoadError`` listing the folder when there is none."""
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise ModelLoadError(
            f"{str(folder)!r} is not a model folder (no config.json); {listing(folder)}. Expected config.json plus "
            "model.safetensors: a timm folder has 'architecture' in config.json, a transformers folder "
            "(save_pretrained) has 'model_type'."
        )
    return read_json(cfg_file)


def is_synq_config(config: dict[str, Any]) -> bool:
    """Whether a ``config.json`` dict is a synq_hf-quantized model's (``synq`` block or ``quant_method="synq"``)."""
    qcfg = config.get("quantization_config")
    return "synq" in config or (isinstance(qcfg, dict) and qcfg.get("quant_method") == "synq")


def is_synq_folder(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a synq_hf-quantized model (its config.json has the ``synq`` marker)."""
    try:
        return is_synq_config(read_json(Path(folder) / "config.json"))
    except CheckpointError:
        return False


def config_kind(config: dict[str, Any], where: str) -> Literal["synq", "timm", "transformers"]:
    """Which loader a ``config.json`` dict needs; a ``ModelLoadError`` when it names no model."""
    if is_synq_config(config):
        return "synq"
    if "architecture" in config:
        return "timm"
    if "model_type" in config or "architectures" in config:
        return "transformers"
    raise ModelLoadError(
        f"config.json of {where} names no model: expected 'architecture' (timm) or 'model_type' "
        f"(transformers); keys present: {', '.join(sorted(config)) or 'none'}"
    )


def check_safetensors(path: str | os.PathLike) -> None:
    """Open ``path`` with ``safetensors.safe_open`` (header and tensor extents checked against the file size)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(os.fspath(path), framework="pt"):
            pass
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"{path} is not a valid safetensors file (truncated or corrupt: {e}); re-download or re-save it"
        ) from e


def check_weights(folder: Path) -> None:
    """Refuse a folder without weights, or with a ``.safetensors`` file that is truncated or corrupt."""
    present = [name for name in WEIGHT_FILES if (folder / name).is_file()]
    if not present:
        raise CheckpointError(
            f"{str(folder)!r} has a config.json but no weights ({' or '.join(WEIGHT_FILES[:3])}); {listing(folder)}"
        )
    for f in sorted(folder.glob("*.safetensors")):
        check_safetensors(f)
