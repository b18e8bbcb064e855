"""Dataset loading (parquet, save_to_disk, ImageFolder, Hub offline), column detection and preprocessing."""

from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from synq_hf.data import build_eval_transform, collate_images, detect_columns, load_image_dataset
from synq_hf.errors import DataError

CIFAR_CFG = {
    "input_size": (3, 32, 32),
    "mean": (0.485, 0.456, 0.406),
    "std": (0.229, 0.224, 0.225),
    "interpolation": "bilinear",
    "crop_pct": 1.0,
}


def _images(n: int, size: int = 8, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def _dataset(n: int = 6, image: str = "img", label: str = "label") -> datasets.Dataset:
    features = datasets.Features({image: datasets.Image(), label: datasets.ClassLabel(names=["a", "b", "c"])})
    return datasets.Dataset.from_dict(
        {image: _images(n), label: [i % 3 for i in range(n)]}, features=features
    )


def test_parquet_file_prefix_and_glob(tmp_path: Path) -> None:
    ds = _dataset()
    ds.to_parquet(str(tmp_path / "part-0.parquet"))
    _dataset(4).to_parquet(str(tmp_path / "part-1.parquet"))
    for spec in (str(tmp_path / "part-0.parquet"), f"parquet:{tmp_path / 'part-0.parquet'}"):
        loaded = load_image_dataset(spec)
        assert len(loaded) == 6 and loaded.features["label"].names == ["a", "b", "c"]
        assert np.array_equal(np.asarray(loaded[3]["img"]), np.asarray(ds[3]["img"]))
    assert len(load_image_dataset(str(tmp_path / "part-*.parquet"))) == 10
    with pytest.raises(DataError, match="no parquet file matches"):
        load_image_dataset(str(tmp_path / "missing-*.parquet"))


def test_save_to_disk_dataset_and_dict(tmp_path: Path) -> None:
    _dataset(5).save_to_disk(str(tmp_path / "single"))
    assert len(load_image_dataset(str(tmp_path / "single"))) == 5
    datasets.DatasetDict({"train": _dataset(6), "test": _dataset(3)}).save_to_disk(str(tmp_path / "dict"))
    assert len(load_image_dataset(str(tmp_path / "dict"))) == 3  # default: test
    assert len(load_image_dataset(str(tmp_path / "dict"), split="train")) == 6
    with pytest.raises(DataError, match="no split 'val'.*train, test"):
        load_image_dataset(str(tmp_path / "dict"), split="val")
    datasets.DatasetDict({"a": _dataset(2), "b": _dataset(2)}).save_to_disk(str(tmp_path / "ambiguous"))
    with pytest.raises(DataError, match="several splits"):
        load_image_dataset(str(tmp_path / "ambiguous"))


def test_imagefolder(tmp_path: Path) -> None:
    for cls, n in (("cat", 2), ("dog", 3)):
        (tmp_path / cls).mkdir()
        for i, img in enumerate(_images(n, seed=n)):
            img.save(tmp_path / cls / f"{i}.png")
    ds = load_image_dataset(str(tmp_path))
    assert len(ds) == 5 and ds.features["label"].names == ["cat", "dog"]
    assert sorted(ds["label"]) == [0, 0, 1, 1, 1]
    assert detect_columns(ds) == ("image", "label")


def test_not_a_dataset_folder(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="not a dataset folder.*readme.txt"):
        load_image_dataset(str(tmp_path))
    with pytest.raises(DataError, match="does not exist"):
        load_image_dataset(str(tmp_path / "nope" / "deeper"))


def test_hub_dataset_offline_hint() -> None:
    with pytest.raises(DataError, match="parquet:PATH.*save_to_disk.*ImageFolder.*HF_HUB_OFFLINE"):
        load_image_dataset("synq-hf-tests/no-such-dataset", split="test")


def test_column_detection_and_errors() -> None:
    ds = _dataset(image="img", label="fine_label")
    assert detect_columns(ds) == ("img", "fine_label")
    renamed = ds.rename_columns({"img": "photo", "fine_label": "cls"})
    assert detect_columns(renamed) == ("photo", "cls")  # found by Image()/ClassLabel feature type
    with pytest.raises(DataError, match="no image column 'picture'.*photo, cls"):
        detect_columns(renamed, image_column="picture")
    with pytest.raises(DataError, match="no label column 'y'.*photo, cls"):
        detect_columns(renamed, label_column="y")
    plain = datasets.Dataset.from_dict({"x": [1, 2], "y": [0, 1]})
    with pytest.raises(DataError, match="cannot find an image column.*x, y"):
        detect_columns(plain)
    unlabeled = datasets.Dataset.from_dict(
        {"image": _images(2)}, features=datasets.Features({"image": datasets.Image()})
    )
    with pytest.raises(DataError, match="cannot find a label column"):
        detect_columns(unlabeled)
    assert detect_columns(unlabeled, require_label=False) == ("image", None)


def test_load_checks_named_columns(tmp_path: Path) -> None:
    _dataset().to_parquet(str(tmp_path / "d.parquet"))
    with pytest.raises(DataError, match="no label column 'target'.*img, label"):
        load_image_dataset(str(tmp_path / "d.parquet"), label_column="target")


def test_cifar_transform_is_identity_resize() -> None:
    t = build_eval_transform(CIFAR_CFG)
    img = _images(1, size=32)[0]
    out = t(img)
    raw = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255
    expected = (raw - torch.tensor(CIFAR_CFG["mean"]).view(3, 1, 1)) / torch.tensor(CIFAR_CFG["std"]).view(
        3, 1, 1
    )
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("crop_mode", ["center", "squash"])
@pytest.mark.parametrize("input_size", [(3, 24, 24), (3, 24, 16)])
def test_transform_resize_and_crop_matches_timm(crop_mode: str, input_size: tuple) -> None:
    from timm.data import create_transform

    cfg = {
        "input_size": input_size,
        "mean": (0.5, 0.5, 0.5),
        "std": (0.25, 0.25, 0.25),
        "interpolation": "bicubic",
        "crop_pct": 0.75,
        "crop_mode": crop_mode,
    }
    for img in (_images(1, size=40)[0].resize((40, 50)), _images(1, size=40)[0].resize((60, 30))):
        ours = build_eval_transform(cfg)(img)
        ref = create_transform(**cfg)(img)
        assert ours.shape == input_size
        torch.testing.assert_close(ours, ref)
    with pytest.raises(DataError, match="crop_mode 'diagonal'"):
        build_eval_transform({**cfg, "crop_mode": "diagonal"})


def _odd_images() -> list[Image.Image]:
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((37, 50), (61, 29), (16, 16))]


@pytest.mark.parametrize("pretrained_cfg", [
    {"input_size": (3, 16, 16), "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3), "crop_pct": 0.875,
     "interpolation": "bicubic"},
    {"input_size": (3, 16, 16), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "crop_pct": 1.0,
     "crop_mode": "squash"},
])
def test_timm_model_preprocessing_is_timms_create_transform(pretrained_cfg: dict) -> None:
    import timm
    from timm.data import create_transform, resolve_model_data_config

    from synq_hf.sources.preprocessing import timm_data_config

    model = timm.create_model("resnet10t", pretrained=False, num_classes=3, pretrained_cfg_overlay=pretrained_cfg)
    ours = build_eval_transform(timm_data_config(model))
    reference = create_transform(**resolve_model_data_config(model), is_training=False)
    images = _odd_images()
    expected = torch.stack([reference(img) for img in images])
    assert torch.equal(collate_images(images, ours), expected)
    assert torch.equal(collate_images([np.asarray(img) for img in images], ours), expected)  # uint8 arrays via PIL


def test_transformers_model_preprocessing_is_its_image_processor(tmp_path: Path) -> None:
    import transformers as tf

    from synq_hf.hub.loading import load_model

    config = tf.ViTConfig(image_size=24, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, num_labels=3)
    tf.ViTForImageClassification(config).save_pretrained(tmp_path)
    tf.ViTImageProcessor(size={"height": 24, "width": 24}, image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3],
                         resample=3).save_pretrained(tmp_path)
    processor = tf.AutoImageProcessor.from_pretrained(tmp_path)
    ours = build_eval_transform(load_model(str(tmp_path)).data_config)
    images = _odd_images()
    expected = processor(images, return_tensors="pt")["pixel_values"]
    got = collate_images(images, ours)
    assert got.shape == (3, 3, 24, 24)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_collate_pil_uint8_and_float() -> None:
    t = build_eval_transform(CIFAR_CFG)
    imgs = _images(3, size=32)
    from_pil = collate_images(imgs, t)
    from_hwc = collate_images([np.asarray(i) for i in imgs], t)
    from_chw = collate_images([torch.from_numpy(np.array(i)).permute(2, 0, 1) for i in imgs], t)
    assert from_pil.shape == (3, 3, 32, 32)
    torch.testing.assert_close(from_hwc, from_pil)
    torch.testing.assert_close(from_chw, from_pil)
    synthetic = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    torch.testing.assert_close(collate_images(list(synthetic), t), torch.from_numpy(synthetic))
    with pytest.raises(DataError, match="must have shape \\(3, 32, 32\\)"):
        collate_images([np.zeros((3, 16, 16), np.float32)], t)
    gray = Image.fromarray(np.full((32, 32), 128, np.uint8))
    assert collate_images([gray], t).shape == (1, 3, 32, 32)


def test_written_processor_config_reproduces_the_data_config(tmp_path: Path) -> None:
    """A processor config synq_hf writes (a quantized transformers model without one) makes the model's input size."""
    import json

    import transformers as tf

    from synq_hf.sources.preprocessing import processor_from_data_config, transformers_data_config

    for crop_pct in (0.75, 1.0):
        cfg = {"input_size": (3, 24, 24), "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.25, 0.3), "interpolation": "bicubic",
               "crop_pct": crop_pct, "crop_mode": "center"}
        written = processor_from_data_config(cfg)
        (tmp_path / "preprocessor_config.json").write_text(json.dumps(written))
        processor = tf.AutoImageProcessor.from_pretrained(tmp_path)
        back = transformers_data_config(written)
        assert back["input_size"] == (3, 24, 24) and back["crop_pct"] == pytest.approx(crop_pct)
        expected = processor(_odd_images(), return_tensors="pt")["pixel_values"]
        assert expected.shape == (3, 3, 24, 24)
        torch.testing.assert_close(collate_images(_odd_images(), build_eval_transform(back)), expected, rtol=0, atol=1e-6)
        assert processor_from_data_config(back) == written  # the config it came from, unchanged
