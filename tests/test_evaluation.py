"""evaluate_model and its top-k counting, on models whose accuracy is known by construction."""

from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from synq_hf.data import build_eval_transform
from synq_hf.errors import DataError
from synq_hf.evaluation import evaluate_model, topk_hits
from synq_hf.pipeline import LoadedModel

CFG = {
    "input_size": (3, 16, 16),
    "mean": (0.5, 0.4, 0.3),
    "std": (0.2, 0.25, 0.3),
    "interpolation": "bilinear",
    "crop_pct": 1.0,
}


class LabelOracle(nn.Module):
    """Reads the label painted into the image; ranks the true class at position ``label % shift_mod``."""

    def __init__(self, num_classes: int = 10, shift_mod: int = 1) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.shift_mod = shift_mod
        self.dummy = nn.Parameter(torch.zeros(()))
        self.register_buffer("mean", torch.tensor(CFG["mean"]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(CFG["std"]).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pixel = (x * self.std + self.mean)[:, 0].mean(dim=(1, 2)) * 255
        label = torch.round((pixel - 10) / 20).long()
        top = label + label % self.shift_mod  # the true label ends up at rank label % shift_mod
        classes = torch.arange(self.num_classes)
        return -((top[:, None] - classes[None]) % self.num_classes).float() + self.dummy


def _painted(labels: list[int], size: int = 16) -> datasets.Dataset:
    images = [Image.fromarray(np.full((size, size, 3), 20 * lab + 10, np.uint8)) for lab in labels]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=features)


LABELS = [i % 10 for i in range(23)]


def test_oracle_is_exact() -> None:
    result = evaluate_model(LabelOracle(), _painted(LABELS), CFG, batch_size=4, progress=False)
    assert result == {"num_samples": 23, "top1": 100.0, "top5": 100.0}


@pytest.mark.parametrize("shift_mod", [3, 7])
def test_ranked_model_matches_expectation(shift_mod: int) -> None:
    ranks = np.array([lab % shift_mod for lab in LABELS])
    result = evaluate_model(
        LabelOracle(shift_mod=shift_mod), _painted(LABELS), CFG, batch_size=5, progress=False
    )
    assert result["top1"] == pytest.approx(100 * np.mean(ranks == 0))
    assert result["top5"] == pytest.approx(100 * np.mean(ranks < 5))
    assert result["top1"] < 100


def test_limit_and_loaded_model_and_resizing() -> None:
    loaded = LoadedModel(
        model=LabelOracle(), model_id="oracle", library="timm", family="cnn", data_config=CFG, num_classes=10
    )
    big = _painted(LABELS, size=40)  # resized (uniform images keep their value) to 16x16
    result = evaluate_model(loaded, big, batch_size=8, limit=7, progress=False)
    assert result == {"num_samples": 7, "top1": 100.0, "top5": 100.0}


def test_float_pixel_values_dataset() -> None:
    transform = build_eval_transform(CFG)
    labels = [3, 1, 4, 1, 5]
    pixels = [
        transform(Image.fromarray(np.full((16, 16, 3), 20 * lab + 10, np.uint8))).numpy() for lab in labels
    ]
    ds = datasets.Dataset.from_dict(
        {"pixel_values": pixels, "label": labels},
        features=datasets.Features(
            {"pixel_values": datasets.Array3D((3, 16, 16), "float32"), "label": datasets.Value("int64")}
        ),
    )
    assert evaluate_model(LabelOracle(), ds, CFG, progress=False)["top1"] == 100.0


def test_label_space_checks() -> None:
    with pytest.raises(DataError, match="10 classes.*model outputs 5"):
        evaluate_model(LabelOracle(num_classes=5), _painted(LABELS), CFG, progress=False)
    ints = datasets.Dataset.from_dict({"image": _painted([1, 7])["image"], "label": [1, 7]})
    with pytest.raises(DataError, match="label 7 but the model outputs only 5"):
        evaluate_model(LabelOracle(num_classes=5), ints, CFG, progress=False)
    negative = datasets.Dataset.from_dict({"image": _painted([1, 2])["image"], "label": [1, -1]})
    with pytest.raises(DataError, match="negative labels"):
        evaluate_model(LabelOracle(), negative, CFG, progress=False)
    with pytest.raises(DataError, match="no label column 'target'"):
        evaluate_model(LabelOracle(), _painted(LABELS), CFG, label_column="target", progress=False)


def test_transformers_model_matches_manual_logits() -> None:
    import transformers as tf

    torch.manual_seed(0)
    model = tf.ViTForImageClassification(
        tf.ViTConfig(
            image_size=16,
            patch_size=8,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            num_labels=10,
        )
    ).eval()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(12)]
    labels = rng.integers(0, 10, 12).tolist()
    ds = datasets.Dataset.from_dict(
        {"image": images, "label": labels},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")}),
    )
    t = build_eval_transform(CFG)
    with torch.no_grad():
        logits = model(torch.stack([t(im) for im in images])).logits
    expected_top1 = 100 * (logits.argmax(-1).numpy() == np.array(labels)).mean()
    expected_top5 = 100 * np.mean([lab in row for lab, row in zip(labels, logits.topk(5).indices.tolist())])
    result = evaluate_model(model, ds, CFG, batch_size=5, progress=False)
    assert result["top1"] == pytest.approx(expected_top1) and result["top5"] == pytest.approx(expected_top5)
    assert not model.training


def test_topk_hits_counts_labels_within_the_first_k() -> None:
    """The cases the removed ``evaluate`` metric was tested on, as ranked class indices."""
    logits = torch.tensor([[0.1, 0.5, 0.2, 0.0, 0.9, 0.3], [0.9, 0.1, 0.2, 0.3, 0.4, 0.5]])
    ranked = logits.topk(5).indices.numpy()
    assert topk_hits(ranked, np.array([1, 5])).tolist() == [0, 2]
    assert topk_hits(ranked, np.array([4, 0]), top_k=(1, 2)).tolist() == [2, 2]
    ranked = np.array([[2, 0, 1, 3, 4], [7, 8, 9, 1, 2], [3, 0, 1, 2, 4]])
    assert topk_hits(ranked, np.array([2, 3, 4])).tolist() == [1, 2]


def test_package_data_covers_every_asset() -> None:
    tomllib = pytest.importorskip("tomllib")

    root = Path(__file__).resolve().parent.parent
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["synq_hf"]
    assets = [p.relative_to(root / "synq_hf") for p in (root / "synq_hf" / "assets").rglob("*") if p.is_file()]
    assert assets and all(any(a.match(p) and len(a.parts) == len(Path(p).parts) for p in patterns) for a in assets)


@pytest.mark.smoke
@pytest.mark.parametrize("depth,expected", [(20, 91.64), (56, 92.72)])
def test_shared_teachers_float_accuracy(shared_data: Path, depth: int, expected: float) -> None:
    from synq_hf import load_image_dataset, load_model

    loaded = load_model(f"local-dir:{shared_data / 'teachers' / f'cifar10-resnet{depth}'}")
    data = load_image_dataset(str(shared_data / "cifar10" / "test-lossless-first1017.parquet"))
    result = evaluate_model(loaded, data, progress=False)
    assert result["num_samples"] == 1017
    assert round(result["top1"], 2) == expected
