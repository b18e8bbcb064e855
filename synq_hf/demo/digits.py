"""The offline demo teacher: a small BatchNorm CNN trained on scikit-learn's bundled handwritten digits.

scikit-learn ships the 1,797 8×8 grey digits of the UCI "Optical Recognition of Handwritten Digits"
set (CC BY 4.0) inside its wheel, so both the teacher and its held-out test images are available
without a network. The images are served as 3-channel (grey replicated) PIL images so they go
through the same preprocessing path as every other dataset: the teacher's ``pretrained_cfg``
(16×16 bilinear resize, mean/std of the training split) does the rest.

The committed weights (``synq_hf/assets/digits_teacher``) were trained by
``python -m synq_hf.demo.train_teacher``; ``config.json`` records the split and the float test
accuracy measured at training time.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

from ..errors import DataError, ModelLoadError

__all__ = [
    "ARCHITECTURE",
    "DIGITS_MEAN",
    "DIGITS_STD",
    "DigitsCNN",
    "LABEL_NAMES",
    "NUM_TEST",
    "SPLIT_SEED",
    "demo_teacher_metadata",
    "demo_teacher_path",
    "digits_dataset",
    "digits_split_indices",
    "load_demo_teacher",
    "split_fingerprint",
]

ARCHITECTURE = "synq_digits_cnn"
LABEL_NAMES: tuple[str, ...] = tuple(str(i) for i in range(10))
SPLIT_SEED = 0
"""Seed of the stratified train/test split (never change it: the committed weights were trained on it)."""
NUM_TEST = 500
"""Held-out test images (stratified over the 10 classes); the other 1,297 are the training split."""
INPUT_SIZE = 16
"""The 8×8 digits are upsampled (bilinear) to 16×16 so the network has room for two stride-2 stages."""
# Per-channel mean/std of the training split's 16×16 images in [0, 1]; train_teacher.py recomputes
# them and refuses to train if these constants are stale.
DIGITS_MEAN: tuple[float, float, float] = (0.3058, 0.3058, 0.3058)
DIGITS_STD: tuple[float, float, float] = (0.3191, 0.3191, 0.3191)

_WIDTHS = (16, 32, 32, 64)
_STRIDES = (1, 2, 1, 2)


class ConvBnReLU(nn.Sequential):
    """conv3×3 (no bias) → BatchNorm → ReLU, each its own module so quantizers can wrap them."""

    def __init__(self, in_chans: int, out_chans: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_chans)
        self.act = nn.ReLU()


class DigitsCNN(nn.Module):
    """Four Conv-BN-ReLU blocks (16, 32↓, 32, 64↓ channels), global average pool, Linear: ~34k params."""

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        global_pool: str = "avg",
        **kwargs: Any,
    ) -> None:
        super().__init__()
        if global_pool not in ("avg", ""):
            raise ValueError(f"DigitsCNN supports global_pool 'avg' or '', got {global_pool!r}")
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.num_features = self.head_hidden_size = _WIDTHS[-1]
        blocks, chans, reduction = [], in_chans, 1
        self.feature_info = []
        for i, (width, stride) in enumerate(zip(_WIDTHS, _STRIDES)):
            blocks.append(ConvBnReLU(chans, width, stride))
            chans, reduction = width, reduction * stride
            self.feature_info.append(dict(num_chs=width, reduction=reduction, module=f"features.{i}"))
        self.features = nn.Sequential(*blocks)
        self.global_pool = nn.AdaptiveAvgPool2d(1) if global_pool == "avg" else nn.Identity()
        self.flatten = nn.Flatten(1) if global_pool == "avg" else nn.Identity()
        self.head_drop = nn.Dropout(drop_rate)
        self.fc: nn.Module = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False) -> nn.Module | str:
        """The final ``Linear`` (or its attribute name), as timm's ``get_classifier``."""
        return "fc" if name_only else self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the head with a fresh ``Linear`` for ``num_classes`` (0 removes it)."""
        if global_pool is not None and global_pool not in ("avg", ""):
            raise ValueError(f"DigitsCNN supports global_pool 'avg' or '', got {global_pool!r}")
        if global_pool is not None:
            self.global_pool = nn.AdaptiveAvgPool2d(1) if global_pool == "avg" else nn.Identity()
            self.flatten = nn.Flatten(1) if global_pool == "avg" else nn.Identity()
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The four blocks: an (N, 64, H/4, W/4) feature map."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool, dropout, then the classifier unless ``pre_logits``."""
        x = self.head_drop(self.flatten(self.global_pool(x)))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


default_cfgs = generate_default_cfgs(
    {
        ARCHITECTURE: {
            "url": "",
            "num_classes": 10,
            "input_size": (3, INPUT_SIZE, INPUT_SIZE),
            "pool_size": (INPUT_SIZE // 4, INPUT_SIZE // 4),
            "crop_pct": 1.0,
            "interpolation": "bilinear",
            "mean": DIGITS_MEAN,
            "std": DIGITS_STD,
            "first_conv": "features.0.conv",
            "classifier": "fc",
            "label_names": LABEL_NAMES,
            "license": "cc-by-4.0",
        }
    }
)


@register_model
def synq_digits_cnn(pretrained: bool = False, **kwargs: Any) -> DigitsCNN:
    """The synq_hf demo teacher: a 34k-parameter BN CNN for 16×16 handwritten digits (10 classes)."""
    return build_model_with_cfg(
        DigitsCNN, ARCHITECTURE, pretrained, feature_cfg=dict(flatten_sequential=True), **kwargs
    )


# -- the committed teacher -----------------------------------------------------------------------


def demo_teacher_path() -> Path:
    """Folder of the committed demo teacher (timm Hub layout: ``config.json`` + ``model.safetensors``)."""
    path = Path(str(resources.files("synq_hf") / "assets" / "digits_teacher"))
    missing = [f for f in ("config.json", "model.safetensors") if not (path / f).is_file()]
    if missing:
        raise ModelLoadError(
            f"the demo teacher is missing {', '.join(missing)} in {path}: reinstall synq-hf, or rebuild it "
            "with `python -m synq_hf.demo.train_teacher`"
        )
    return path


def demo_teacher_metadata() -> dict[str, Any]:
    """What ``train_teacher.py`` recorded: split seed and fingerprint, float test accuracy, recipe."""
    with open(demo_teacher_path() / "config.json", encoding="utf-8") as fh:
        return dict(json.load(fh).get("synq_hf_demo", {}))


def load_demo_teacher() -> nn.Module:
    """The committed teacher in eval mode, loaded strictly through timm's ``local-dir:`` scheme."""
    import timm

    return timm.create_model(f"local-dir:{demo_teacher_path()}", pretrained=True).eval()


# -- the data --------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (1797, 8, 8) in 0-255, labels int64) from scikit-learn's bundled copy."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # scikit-learn comes with the demo extra
        raise DataError("the demo data needs scikit-learn: pip install 'synq-hf[demo]'") from e
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    return images, digits.target.astype(np.int64)


def digits_split_indices(split: Literal["train", "test"] = "test") -> np.ndarray:
    """Sorted indices into ``load_digits()`` of a split: stratified, 500 test / 1,297 train, fixed seed."""
    if split not in ("train", "test"):
        raise DataError(f"split={split!r} is not a split of the demo digits; choose 'train' or 'test'")
    _, labels = _raw_digits()
    rng = np.random.default_rng(SPLIT_SEED)
    counts = np.bincount(labels, minlength=len(LABEL_NAMES))
    quota = counts * NUM_TEST / len(labels)
    per_class = np.floor(quota).astype(int)
    # Largest remainder: hand the leftover test slots to the classes with the biggest fractional quota.
    leftover = NUM_TEST - per_class.sum()
    per_class[np.argsort(-(quota - per_class), kind="stable")[:leftover]] += 1
    test = np.concatenate(
        [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in enumerate(per_class)]
    )
    mask = np.zeros(len(labels), dtype=bool)
    mask[test] = True
    return np.flatnonzero(mask if split == "test" else ~mask)


def split_fingerprint() -> str:
    """SHA-256 of the test indices: ties the committed weights to the split they were trained on."""
    return hashlib.sha256(digits_split_indices("test").astype("<i8").tobytes()).hexdigest()


def digits_dataset(split: Literal["train", "test"] = "test") -> Any:
    """The demo digits as a ``datasets.Dataset`` with an ``image`` (RGB PIL, 8×8) and a ``label`` column."""
    import datasets
    from PIL import Image

    images, labels = _raw_digits()
    idx = digits_split_indices(split)
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=list(LABEL_NAMES))}
    )
    pil = [Image.fromarray(images[i]).convert("RGB") for i in idx]
    return datasets.Dataset.from_dict(
        {"image": pil, "label": labels[idx].tolist()},
        features=features,
        info=datasets.DatasetInfo(
            description="scikit-learn's 8x8 handwritten digits (UCI optdigits, CC BY 4.0), "
            f"synq_hf demo {split} split",
            license="cc-by-4.0",
            features=features,
        ),
        split=split,
    )
