"""The committed demo teacher: loads strictly through timm, reaches the accuracy recorded when it was trained,
on a deterministic held-out split of scikit-learn's digits."""

import json
import sys

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file
from timm.data import resolve_model_data_config

import synq_hf  # noqa: F401  registers the architectures
from synq_hf.demo import digits as D
from synq_hf.demo.train_teacher import train
from synq_hf.evaluation import evaluate_model


@pytest.fixture(scope="module")
def teacher() -> torch.nn.Module:
    return timm.create_model(f"local-dir:{D.demo_teacher_path()}", pretrained=True).eval()


def test_split_is_deterministic_stratified_and_disjoint():
    test, train_idx = D.digits_split_indices("test"), D.digits_split_indices("train")
    assert np.array_equal(test, D.digits_split_indices("test"))
    assert len(test) == D.NUM_TEST and len(train_idx) == 1797 - D.NUM_TEST
    assert not set(test) & set(train_idx) and len(set(test) | set(train_idx)) == 1797
    _, labels = D._raw_digits()
    expected = np.bincount(labels) * D.NUM_TEST / len(labels)
    assert np.all(np.abs(np.bincount(labels[test]) - expected) < 1)
    # the committed weights were trained on exactly this split (no test image leaked into training)
    assert D.split_fingerprint() == D.demo_teacher_metadata()["test_indices_sha256"]
    with pytest.raises(synq_hf.DataError, match="choose 'train' or 'test'"):
        D.digits_split_indices("validation")


def test_dataset_columns_and_pixels():
    import datasets

    ds = D.digits_dataset("test")
    assert len(ds) == D.NUM_TEST
    assert isinstance(ds.features["image"], datasets.Image)
    assert ds.features["label"].names == [str(i) for i in range(10)]
    img = ds[0]["image"]
    assert isinstance(img, Image.Image) and img.mode == "RGB" and img.size == (8, 8)
    pixels = np.stack([np.asarray(im) for im in ds.select(range(50))["image"]])
    assert pixels.min() == 0 and pixels.max() == 255
    assert np.array_equal(pixels[..., 0], pixels[..., 2])  # grey replicated into RGB
    images, labels = D._raw_digits()
    first = D.digits_split_indices("test")[0]
    assert np.array_equal(pixels[0, ..., 0], images[first]) and ds[0]["label"] == labels[first]


def test_committed_weights_load_strictly(teacher):
    folder = D.demo_teacher_path()
    tensors = load_file(str(folder / "model.safetensors"))
    assert set(tensors) == set(teacher.state_dict())
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, tensors[key]), key
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == D.ARCHITECTURE and config["num_classes"] == 10
    n_params = sum(p.numel() for p in teacher.parameters())
    assert 20_000 <= n_params <= 60_000
    # every ReLU is its own module and BatchNorm is present: what CNN quantization and synthesis need
    assert sum(isinstance(m, torch.nn.ReLU) for m in teacher.modules()) == 4
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in teacher.modules()) == 4
    cfg = resolve_model_data_config(teacher)
    assert tuple(cfg["input_size"]) == (3, 16, 16) and cfg["interpolation"] == "bilinear"
    assert tuple(cfg["mean"]) == D.DIGITS_MEAN and tuple(cfg["std"]) == D.DIGITS_STD
    assert list(teacher.pretrained_cfg["label_names"]) == [str(i) for i in range(10)]


def test_teacher_reaches_recorded_accuracy_through_the_package_evaluation(teacher):
    meta = D.demo_teacher_metadata()
    result = evaluate_model(teacher, D.digits_dataset("test"), resolve_model_data_config(teacher), progress=False)
    assert result["num_samples"] == meta["num_test"] == D.NUM_TEST
    correct = round(result["top1"] * result["num_samples"] / 100)
    assert abs(correct - meta["float_test_correct"]) <= 1  # one image of slack for BLAS differences
    assert result["top1"] >= 95.0


def test_load_demo_teacher_matches_local_dir_load(teacher):
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(D.load_demo_teacher()(x), teacher(x))


def test_training_script_writes_a_loadable_teacher(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the script runs: a tiny net is slower with more threads on a busy CPU
    try:
        meta = train(tmp_path / "t", {"epochs": 1})
    finally:
        torch.set_num_threads(threads)
    assert meta["test_indices_sha256"] == D.split_fingerprint() and meta["num_test"] == D.NUM_TEST
    model = timm.create_model(f"local-dir:{tmp_path / 't'}", pretrained=True)
    assert json.loads((tmp_path / "t" / "config.json").read_text())["synq_hf_demo"]["recipe"]["epochs"] == 1
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_missing_scikit_learn_names_the_demo_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    D._raw_digits.cache_clear()
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # as if scikit-learn were not installed
    try:
        with pytest.raises(synq_hf.DataError, match=r"pip install 'synq-hf\[demo\]'"):
            D.digits_dataset("test")
    finally:
        D._raw_digits.cache_clear()
