"""Image classification datasets (parquet, save_to_disk, ImageFolder, Hub) and the model's eval preprocessing.

``load_image_dataset`` returns a ``datasets.Dataset`` whatever the source; ``detect_columns`` finds its
image and label columns; ``build_eval_transform`` and ``collate_images`` turn images into the
normalized tensors a model expects, with the model's own library (timm's eval transform or the
transformers image processor).
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import DataError

__all__ = [
    "EvalTransform",
    "build_eval_transform",
    "collate_images",
    "detect_columns",
    "load_image_dataset",
    "make_batch_transform",
    "raw_images",
    "select_split",
]

logger = logging.getLogger(__name__)

_IMAGE_COLUMNS = ("image", "img", "pixel_values")
_LABEL_COLUMNS = ("label", "labels", "fine_label")
_DEFAULT_SPLITS = ("test", "validation", "valid", "val", "eval")
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
_HUB_HINT = (
    "To use data without the Hub, pass 'parquet:PATH' (a .parquet file or glob), a folder written by "
    "Dataset.save_to_disk(), or an ImageFolder directory (one subfolder per class). With HF_HUB_OFFLINE=1 "
    "(or HF_DATASETS_OFFLINE=1) only datasets already in the Hugging Face cache can be used."
)


# --------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------


def select_split(data: Any, split: str | None, where: str) -> Any:
    """Pick ``split`` from a ``DatasetDict`` (default: test, validation, or the only split)."""
    import datasets

    if isinstance(data, datasets.Dataset):
        return data
    names = list(data.keys())
    if split is not None:
        if split not in data:
            raise DataError(f"{where} has no split {split!r}; available splits: {', '.join(names)}")
        return data[split]
    for name in _DEFAULT_SPLITS:
        if name in data:
            return data[name]
    if len(names) == 1:
        return data[names[0]]
    raise DataError(f"{where} has several splits ({', '.join(names)}); choose one with split=/--split")


def _is_parquet_spec(spec: str) -> bool:
    return spec.startswith("parquet:") or spec.lower().endswith(".parquet") or ".parquet" in Path(spec).name


def _load_parquet(pattern: str, split: str | None) -> Any:
    import datasets

    files = sorted(glob.glob(os.path.expanduser(pattern)))
    if not files:
        raise DataError(f"no parquet file matches {pattern!r}")
    if split not in (None, "train"):
        logger.info("split %r ignored: parquet files %s form a single split", split, pattern)
    try:
        return datasets.load_dataset("parquet", data_files=files, split="train")
    except Exception as e:  # pyarrow raises many types for damaged files
        raise DataError(f"cannot read parquet {pattern!r}: {type(e).__name__}: {e}") from e


def _has_class_subfolders(folder: Path) -> bool:
    for sub in folder.iterdir():
        if sub.is_dir() and any(p.suffix.lower() in _IMAGE_SUFFIXES for p in sub.rglob("*") if p.is_file()):
            return True
    return False


def _load_folder(folder: Path, split: str | None) -> Any:
    import datasets

    if (
        (folder / "dataset_info.json").is_file()
        or (folder / "dataset_dict.json").is_file()
        or (folder / "state.json").is_file()
    ):
        try:
            data = datasets.load_from_disk(str(folder))
        except Exception as e:
            raise DataError(f"cannot read the save_to_disk folder {str(folder)!r}: {e}") from e
        return select_split(data, split, repr(str(folder)))
    if _has_class_subfolders(folder):
        try:
            data = datasets.load_dataset("imagefolder", data_dir=str(folder))
        except Exception as e:
            raise DataError(f"cannot read the ImageFolder directory {str(folder)!r}: {e}") from e
        return select_split(data, split, repr(str(folder)))
    parquet = sorted(str(p) for p in folder.rglob("*.parquet"))
    if parquet:
        return _load_parquet(str(folder / "**" / "*.parquet") if len(parquet) > 1 else parquet[0], split)
    contents = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())[:15]
    raise DataError(
        f"{str(folder)!r} is not a dataset folder: expected a save_to_disk folder (dataset_info.json/"
        f"dataset_dict.json), an ImageFolder (class subfolders of images) or parquet files; it contains: "
        f"{', '.join(contents) or 'nothing'}"
    )


def _load_hub(repo: str, split: str | None) -> Any:
    import datasets

    try:
        data = datasets.load_dataset(repo, split=split) if split else datasets.load_dataset(repo)
    except (ConnectionError, OSError) as e:
        raise DataError(f"cannot fetch dataset {repo!r} from the Hub ({e}). {_HUB_HINT}") from e
    except ValueError as e:  # unknown split and similar
        raise DataError(f"cannot load dataset {repo!r}: {e}") from e
    except Exception as e:
        from huggingface_hub import errors as hf_errors

        if isinstance(
            e, (hf_errors.HfHubHTTPError, hf_errors.OfflineModeIsEnabled, hf_errors.HFValidationError)
        ):
            raise DataError(f"cannot fetch dataset {repo!r} from the Hub ({e}). {_HUB_HINT}") from e
        raise
    return select_split(data, split, f"Hub dataset {repo!r}")


def load_image_dataset(
    spec: str,
    *,
    split: str | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
) -> Any:
    """Load a labeled image dataset from ``parquet:PATH``, a folder (save_to_disk/ImageFolder) or a Hub id."""
    spec = spec.strip()
    if not spec:
        raise DataError("empty dataset spec: pass parquet:PATH, a dataset folder or a Hub dataset id")
    path = Path(os.path.expanduser(spec))
    if _is_parquet_spec(spec):
        dataset = _load_parquet(spec.removeprefix("parquet:"), split)
    elif path.is_dir():
        dataset = _load_folder(path, split)
    elif path.exists():
        raise DataError(
            f"{spec!r} is a file but not a .parquet file; pass a parquet file or a dataset folder"
        )
    elif spec.startswith((".", "/", "~")) or spec.count("/") > 1:  # Hub ids are NAME or ORG/NAME
        raise DataError(f"dataset path {spec!r} does not exist")
    else:
        dataset = _load_hub(spec, split)
    detect_columns(dataset, image_column, label_column, require_label=label_column is not None)
    return dataset


# --------------------------------------------------------------------------------------------------
# columns
# --------------------------------------------------------------------------------------------------


def _is_image_struct(feature: Any) -> bool:
    """An image stored as a plain struct ``{bytes, path}`` (parquet written without datasets' metadata)."""
    return isinstance(feature, dict) and "bytes" in feature and set(feature) <= {"bytes", "path"}


def raw_images(dataset: Any, column: str) -> Any:
    """``dataset`` with ``column`` left undecoded (``{bytes, path}`` dicts): :func:`collate_images` decodes them
    itself, naming the file of a broken image instead of failing deep inside ``datasets``."""
    import datasets

    feature = dataset.features.get(column)
    if isinstance(feature, datasets.Image) and feature.decode:
        return dataset.cast_column(column, datasets.Image(decode=False))
    return dataset


def _decode(image: dict[str, Any]) -> Any:
    """A PIL image from a ``{bytes, path}`` dict; a broken or missing file is a one-line ``DataError``."""
    import io

    from PIL import Image, UnidentifiedImageError

    data, path = image.get("bytes"), image.get("path")
    where = f"image {path!r}" if path else "an image in the dataset"
    if data is None and path is None:
        raise DataError("an image entry has neither bytes nor path (expected an image struct {bytes, path})")
    try:
        pil = Image.open(io.BytesIO(data) if data is not None else path)
        pil.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise DataError(f"cannot read {where}: {e}; remove or replace that file") from None
    return pil


def detect_columns(
    dataset: Any,
    image_column: str | None = None,
    label_column: str | None = None,
    *,
    require_label: bool = True,
) -> tuple[str, str | None]:
    """Find the image and label columns (named ones are checked; otherwise the usual names/features)."""
    import datasets

    features = dataset.features
    columns = list(dataset.column_names)

    def check(name: str, what: str) -> str:
        if name not in columns:
            raise DataError(
                f"the dataset has no {what} column {name!r}; its columns are: {', '.join(columns)}"
            )
        return name

    if image_column is not None:
        image = check(image_column, "image")
    else:
        found = [c for c in _IMAGE_COLUMNS if c in columns]
        found += [c for c, f in features.items() if isinstance(f, datasets.Image) or _is_image_struct(f)]
        if not found:
            raise DataError(
                f"cannot find an image column (tried {', '.join(_IMAGE_COLUMNS)} and Image() features); "
                f"the dataset's columns are: {', '.join(columns)}. Name it with image_column=/--image-column"
            )
        image = found[0]
    if label_column is not None:
        label: str | None = check(label_column, "label")
    else:
        found = [c for c in _LABEL_COLUMNS if c in columns]
        found += [c for c, f in features.items() if isinstance(f, datasets.ClassLabel)]
        label = found[0] if found else None
        if label is None and require_label:
            raise DataError(
                f"cannot find a label column (tried {', '.join(_LABEL_COLUMNS)} and ClassLabel features); "
                f"the dataset's columns are: {', '.join(columns)}. Name it with label_column=/--label-column"
            )
    return image, label


# --------------------------------------------------------------------------------------------------
# preprocessing
# --------------------------------------------------------------------------------------------------


_CROP_MODES = ("center", "squash", "border")  # the eval crop modes timm's create_transform implements


def _timm_steps(data_config: dict[str, Any]) -> tuple[Callable[[Any], Any], Callable[[torch.Tensor], torch.Tensor]]:
    """``timm.data.create_transform(**data_config, is_training=False)`` split at its ``ToTensor``: the PIL
    resize/crop steps, and its ``Normalize``."""
    from timm.data import create_transform
    from torchvision import transforms as T

    keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
    steps = list(create_transform(**{k: data_config[k] for k in keys if k in data_config}, is_training=False).transforms)
    cut = next(i for i, step in enumerate(steps) if "ToTensor" in type(step).__name__)
    normalize = steps[-1]
    if not isinstance(normalize, T.Normalize):  # pragma: no cover - timm's eval transform ends with Normalize
        raise DataError(f"timm's eval transform ends with {type(normalize).__name__}, not Normalize")
    return T.Compose(steps[:cut]), normalize


def _image_processor(config: dict[str, Any]) -> Any:
    """The transformers image processor a ``preprocessor_config.json`` dict describes (``AutoImageProcessor``)."""
    import json
    import tempfile

    from transformers import AutoImageProcessor

    # A file, not from_dict: AutoImageProcessor has none, and only from_pretrained resolves the class and backend
    with tempfile.TemporaryDirectory(prefix="synq-hf-processor-") as tmp:
        Path(tmp, "preprocessor_config.json").write_text(json.dumps(config), encoding="utf-8")
        try:
            return AutoImageProcessor.from_pretrained(tmp)
        except (ValueError, KeyError, OSError) as e:
            raise DataError(f"transformers cannot build the image processor in preprocessor_config.json: {e}") from e


class EvalTransform:
    """The model's eval preprocessing as its library defines it, in two steps so a batch normalizes at once:
    :meth:`to_uint8` (resize and crop) and :meth:`normalize` (scale to [0, 1], subtract mean, divide by std).

    timm models use ``timm.data.create_transform(**data_config, is_training=False)``; transformers models
    (``data_config["image_processor"]``: their ``preprocessor_config.json``) the ``AutoImageProcessor`` it names.
    Hand-written here is only what neither library does: decoding undecoded ``{bytes, path}`` images, taking
    uint8 arrays (HWC or CHW, made PIL images first), warning once on odd modes or sizes, one-line ``DataError``s.
    """

    def __init__(self, data_config: dict[str, Any]) -> None:
        from torchvision import transforms as T

        _, h, w = (int(v) for v in data_config["input_size"])
        self.crop_size = (h, w)
        self.crop_pct = float(data_config.get("crop_pct") or 1.0)
        processor = data_config.get("image_processor")
        if processor is not None:
            self.processor = _image_processor(dict(processor))
            self._resize_crop = None
            self._normalize = T.Normalize(data_config["mean"], data_config["std"])
        else:
            crop_mode = str(data_config.get("crop_mode") or "center")
            if crop_mode not in _CROP_MODES:
                raise DataError(f"crop_mode {crop_mode!r} is not supported (use one of {', '.join(_CROP_MODES)})")
            self.processor = None
            self._resize_crop, self._normalize = _timm_steps({**data_config, "crop_mode": crop_mode})
        self._warned = False

    def _check_once(self, mode: str, h: int, w: int) -> None:
        """Warn once when images are not RGB, or (for a model that does not crop) of another aspect ratio."""
        if self._warned:
            return
        reasons = []
        if mode not in ("RGB", "RGBA"):
            reasons.append(f"mode {mode} (converted to RGB)")
        if self.crop_pct >= 1.0 and h * self.crop_size[1] != w * self.crop_size[0]:  # another aspect ratio
            reasons.append(f"size {w}x{h} (resized to {self.crop_size[1]}x{self.crop_size[0]})")
        if reasons:
            self._warned = True
            logger.warning("the images are %s for a model expecting 3x%dx%d RGB input; check that this is the "
                           "right data", " and ".join(reasons), *self.crop_size)

    @staticmethod
    def _to_pil(image: Any) -> Any:
        """A PIL image from a uint8 (or [0, 255] integer) array, HWC or CHW, with 1, 3 or 4 channels."""
        from PIL import Image

        arr = np.asarray(image)
        if arr.dtype.kind in "iu" and arr.dtype != np.uint8:  # e.g. nested lists from a python-format column
            if arr.size and (arr.min() < 0 or arr.max() > 255):
                raise DataError(f"integer pixels must lie in [0, 255], got [{arr.min()}, {arr.max()}]")
            arr = arr.astype(np.uint8)
        if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
            arr = arr.transpose(1, 2, 0)
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))):
            raise DataError(f"expected an image (H, W, C) or (C, H, W), got shape {tuple(np.shape(image))}")
        if arr.dtype != np.uint8:
            raise DataError(f"expected uint8 pixels or already-normalized float arrays, got {arr.dtype}")
        return Image.fromarray(np.ascontiguousarray(arr))  # L, RGB or RGBA from the shape

    def to_uint8(self, image: Any) -> torch.Tensor:
        """Resize and crop one PIL image, ``{bytes, path}`` dict or uint8 array to a uint8 (3, H, W) tensor."""
        from torchvision.transforms import functional as F

        if isinstance(image, dict):  # an undecoded {bytes, path} image (raw_images or plain parquet)
            image = _decode(image)
        if not hasattr(image, "convert"):
            image = self._to_pil(image)
        self._check_once(image.mode, image.height, image.width)
        if image.mode != "RGB":
            image = image.convert("RGB")
        if self.processor is None:
            return F.pil_to_tensor(self._resize_crop(image))
        pixels = self.processor(image, do_rescale=False, do_normalize=False, return_tensors="pt")["pixel_values"][0]
        if tuple(pixels.shape[-2:]) != self.crop_size:
            raise DataError(
                f"the image processor ({type(self.processor).__name__}) makes {tuple(pixels.shape[-2:])} images but "
                f"the model expects {self.crop_size}: fix size/crop_size in preprocessor_config.json"
            )
        return pixels if pixels.dtype == torch.uint8 else pixels.round().clamp_(0, 255).to(torch.uint8)

    def normalize(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        """Scale a uint8 (…, 3, H, W) tensor to [0, 1] (as ``ToTensor`` does) and apply the model's ``Normalize``."""
        return self._normalize(batch_uint8.float().div_(255.0))

    def __call__(self, image: Any) -> torch.Tensor:
        return self.normalize(self.to_uint8(image))


def build_eval_transform(data_config: dict[str, Any]) -> EvalTransform:
    """The model's evaluation preprocessing (timm's or the image processor's): image → normalized (3, H, W)."""
    return EvalTransform(data_config)


def collate_images(images: Sequence[Any], transform: EvalTransform) -> torch.Tensor:
    """Stack PIL/uint8 images (resized, normalized) or already-normalized float arrays into (N, 3, H, W)."""
    if len(images) == 0:
        raise DataError("empty batch of images")
    first = images[0]
    is_float = not hasattr(first, "convert") and not isinstance(first, dict) and np.asarray(first).dtype.kind == "f"
    if is_float:  # already-normalized pixel values (e.g. synthetic images)
        batch = torch.as_tensor(np.stack([np.asarray(x, dtype=np.float32) for x in images]))
        if batch.ndim != 4 or tuple(batch.shape[1:]) != (3, *transform.crop_size):
            raise DataError(
                f"float pixel_values must have shape (3, {transform.crop_size[0]}, {transform.crop_size[1]}) "
                f"to match the model, got {tuple(batch.shape[1:])}"
            )
        return batch
    return transform.normalize(torch.stack([transform.to_uint8(x) for x in images]))


def make_batch_transform(
    transform: EvalTransform, image_column: str, label_column: str | None
) -> Callable[[dict[str, list]], dict[str, torch.Tensor]]:
    """A ``Dataset.with_transform`` function producing ``pixel_values`` (and ``labels``) tensors."""

    def apply(batch: dict[str, list]) -> dict[str, torch.Tensor]:
        out = {"pixel_values": collate_images(batch[image_column], transform)}
        if label_column is not None:
            out["labels"] = torch.as_tensor(np.asarray(batch[label_column], dtype=np.int64))
        return out

    return apply
