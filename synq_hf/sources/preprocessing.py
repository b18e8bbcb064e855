"""The preprocessing a classifier expects and its class names, read from timm or transformers metadata.

synq_hf works with one timm-style ``data_config`` dict per model (``input_size``, ``mean``, ``std``,
``interpolation``, ``crop_pct``, ``crop_mode``): synthesis needs the size and normalization, evaluation the
resize and crop. timm models give it through ``timm.data.resolve_model_data_config``; transformers models
through their image processor config (:func:`transformers_data_config`), and a quantized transformers
folder gets an image processor config back (:func:`processor_from_data_config`). Resampling filters are
named by PIL's own ``Image.Resampling`` enum.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from torch import nn

from ..errors import ModelLoadError, UnsupportedModelError
from .download import hub_download_kwargs, hub_optional_file
from .folders import read_json

__all__ = [
    "PROCESSOR_FILE",
    "id2label_class_names",
    "processor_from_data_config",
    "read_image_processor_config",
    "resample_code",
    "resample_name",
    "timm_class_names",
    "timm_data_config",
    "transformers_data_config",
]

PROCESSOR_FILE = "preprocessor_config.json"


def resample_name(code: int | str) -> str:
    """PIL resampling filter code (``2``) or name (``"BILINEAR"``) -> timm's lower-case name (``"bilinear"``)."""
    from PIL import Image

    try:
        return (Image.Resampling(code) if isinstance(code, int) else Image.Resampling[str(code).upper()]).name.lower()
    except (ValueError, KeyError):
        return "bilinear"


def resample_code(name: str) -> int:
    """timm's interpolation name (``"bicubic"``) -> PIL's resampling code (``3``), bilinear when unknown."""
    from PIL import Image

    try:
        return int(Image.Resampling[str(name).upper()])
    except KeyError:
        return int(Image.Resampling.BILINEAR)


def timm_data_config(model: nn.Module) -> dict[str, Any]:
    """The eval preprocessing of a timm model (``timm.data.resolve_model_data_config``) as plain values."""
    from timm.data import resolve_model_data_config

    cfg = resolve_model_data_config(model)
    return {
        "input_size": tuple(int(v) for v in cfg["input_size"]),
        "mean": tuple(float(v) for v in cfg["mean"]),
        "std": tuple(float(v) for v in cfg["std"]),
        "interpolation": str(cfg.get("interpolation", "bilinear")),
        "crop_pct": float(cfg.get("crop_pct", 1.0)),
        "crop_mode": str(cfg.get("crop_mode", "center")),
    }


def _hw(value: Any) -> tuple[int, int] | None:
    if isinstance(value, int):
        return value, value
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            return int(value["height"]), int(value["width"])
        if "shortest_edge" in value:
            return int(value["shortest_edge"]), int(value["shortest_edge"])
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1])
    return None


def transformers_data_config(
    processor: dict[str, Any], model_config: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A ``preprocessor_config.json`` dict as synq_hf's timm-style ``data_config``.

    The dict itself is kept as ``data_config["image_processor"]``: evaluation preprocesses with that processor.
    """
    mean, std = processor.get("image_mean"), processor.get("image_std")
    if not processor.get("do_normalize", True):
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if mean is None or std is None:
        raise ModelLoadError("the image processor config has no image_mean/image_std")
    if (
        processor.get("do_rescale", True) is False
        or abs(float(processor.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-6
    ):
        raise UnsupportedModelError("only image processors that rescale pixels by 1/255 are supported")
    raw_size = processor.get("size")
    size = _hw(raw_size)
    fixed = not (isinstance(raw_size, dict) and "shortest_edge" in raw_size)  # (height, width) resize
    crop = _hw(processor.get("crop_size")) if processor.get("do_center_crop") else None
    crop_pct = processor.get("crop_pct")
    crop_mode = "squash" if fixed else "center"
    if crop is not None and size is not None:
        final = crop
        crop_pct = crop_pct or min(crop[0] / size[0], 1.0)
    elif size is not None:
        final = size
        if fixed:
            crop_pct = None  # resized straight to (height, width): nothing is cropped
    else:
        image_size = (model_config or {}).get("image_size")
        if image_size is None:
            raise ModelLoadError(
                "the image processor config has no 'size' and the model config no 'image_size'"
            )
        final = _hw(image_size) or (224, 224)
    return {
        "input_size": (3, int(final[0]), int(final[1])),
        "mean": tuple(float(v) for v in (mean if isinstance(mean, (list, tuple)) else [mean] * 3)),
        "std": tuple(float(v) for v in (std if isinstance(std, (list, tuple)) else [std] * 3)),
        "interpolation": resample_name(processor.get("resample", 2)),
        "crop_pct": float(crop_pct) if crop_pct else 1.0,
        "crop_mode": crop_mode,
        "image_processor": dict(processor),
    }


def processor_from_data_config(data_config: dict[str, Any]) -> dict[str, Any]:
    """The model's image processor config: the one ``data_config`` came from, else a ``ViTImageProcessor``
    (resize to the input size) or ``CLIPImageProcessor`` (shorter side, then center crop) reproducing it."""
    if data_config.get("image_processor"):
        return dict(data_config["image_processor"])
    _, h, w = (int(v) for v in data_config["input_size"])
    crop_pct = float(data_config.get("crop_pct") or 1.0)
    out: dict[str, Any] = {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": True,
        "resample": resample_code(str(data_config.get("interpolation", "bilinear"))),
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [float(v) for v in data_config["mean"]],
        "image_std": [float(v) for v in data_config["std"]],
        "size": {"height": h, "width": w},
    }
    if crop_pct < 1.0:
        out.update(size={"shortest_edge": math.floor(h / crop_pct)}, do_center_crop=True,
                   crop_size={"height": h, "width": w}, image_processor_type="CLIPImageProcessor", crop_pct=crop_pct)
    return out


def read_image_processor_config(
    source: Path | str, *, hub: bool = False, **hub_kwargs: Any
) -> dict[str, Any] | None:
    """The ``preprocessor_config.json`` dict of a folder or Hub repo, or None when there is none.

    ``hub_kwargs`` (``revision``, ``token``, ``cache_dir``, ``local_files_only``) go to the Hub download.
    """
    if hub:
        path = hub_optional_file(str(source), PROCESSOR_FILE, hub_download_kwargs(**hub_kwargs))
        return read_json(path) if path is not None else None
    path = Path(source) / PROCESSOR_FILE
    return read_json(path) if path.is_file() else None


def timm_class_names(model: nn.Module) -> list[str] | None:
    """Class names of a timm model (its ``label_names``/descriptions, or the ImageNet subset it was trained on)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("label_names")
    n = int(getattr(model, "num_classes", 0) or 0)
    if names and len(names) == n:
        descriptions = cfg.get("label_descriptions")
        if isinstance(descriptions, dict):
            return [str(descriptions.get(name, name)) for name in names]
        return [str(v) for v in names]
    if cfg.get("hf_hub_id") or cfg.get("url"):
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(model)
        if subset:
            info = ImageNetInfo(subset)
            return [info.label_name_to_description(name) for name in info.label_names()]
    return None


def id2label_class_names(config: Any) -> list[str] | None:
    """Class names from a transformers config's ``id2label``; None when they are missing or ``LABEL_<i>``."""
    id2label = getattr(config, "id2label", None) or {}
    names = [str(id2label.get(i, id2label.get(str(i), ""))) for i in range(config.num_labels)]
    if not all(names) or all(re.fullmatch(r"LABEL_\d+", n) for n in names):
        return None
    return names
