"""The synthetic datasets.Dataset: features, provenance, seeds, save/load round trip, card."""

import json

import datasets
import pytest
import timm
import torch

from synq_hf import SynQConfig, synthesize
from synq_hf.synthesis import generate_synthetic, synthesis_metadata, synthetic_dataset_card

DC = {"input_size": (3, 32, 32), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
NAMES = ["cat", "dog", "ship"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return timm.create_model("test_resnet", num_classes=3).eval()


def _make(teacher, seed, **kw):
    cfg = SynQConfig(synthesis_batch_size=4, synthesis_log_every=2)
    return synthesize(teacher, cfg, data_config=DC, class_names=NAMES, teacher_id="test/tiny-resnet",
                      num_images=8, iterations=2, seed=seed, progress=False, **kw)


def test_features_and_provenance(teacher):
    ds = _make(teacher, seed=5)
    assert ds.features["pixel_values"] == datasets.Array3D(shape=(3, 32, 32), dtype="float32")
    assert ds.features["label"].names == NAMES and len(ds) == 8
    meta = synthesis_metadata(ds)
    assert meta["teacher"] == "test/tiny-resnet" and meta["seed"] == 5 and meta["family"] == "cnn"
    assert meta["config"]["synthesis_iterations"] == 2 and meta["config"]["seed"] == 5
    assert meta["config"]["synthesis_ce_beta"] == 10.0  # resolved for 32x32 inputs
    assert json.loads(ds.info.description)["num_images"] == 8
    pixels = ds.with_format("torch")[:]["pixel_values"]
    assert pixels.dtype == torch.float32 and pixels.shape == (8, 3, 32, 32)


def test_same_seed_same_pixels_other_seed_new_images(teacher):
    a, b, c = _make(teacher, seed=1), _make(teacher, seed=1), _make(teacher, seed=2)
    pa, pb, pc = (d.with_format("torch")[:]["pixel_values"] for d in (a, b, c))
    assert torch.equal(pa, pb) and a["label"] == b["label"]
    assert not torch.allclose(pa, pc)


def test_groups_per_forward_does_not_change_the_images(teacher):
    cfg = SynQConfig(synthesis_batch_size=4, synthesis_log_every=3)
    one = generate_synthetic(teacher, cfg, data_config=DC, num_images=8, iterations=3, seed=4, progress=False)
    two = generate_synthetic(teacher, cfg.replace(synthesis_groups_per_forward=2), data_config=DC,
                             num_images=8, iterations=3, seed=4, progress=False)
    assert torch.equal(one.labels, two.labels)
    torch.testing.assert_close(one.pixels, two.pixels, atol=1e-3, rtol=1e-3)


def test_save_load_round_trip(teacher, tmp_path):
    ds = _make(teacher, seed=3)
    ds.save_to_disk(str(tmp_path / "synthetic"))
    back = datasets.load_from_disk(str(tmp_path / "synthetic"))
    assert back.features == ds.features
    assert synthesis_metadata(back) == synthesis_metadata(ds)
    assert torch.equal(back.with_format("torch")[:]["pixel_values"], ds.with_format("torch")[:]["pixel_values"])


def test_calibration_centres_add_one_image_per_class(teacher):
    cfg = SynQConfig(synthesis_batch_size=4, synthesis_log_every=2, synthesis_calibration_centres=True)
    out = generate_synthetic(teacher, cfg, data_config=DC, num_images=4, iterations=2, progress=False)
    assert out.calibration_centres == 3 and out.pixels.shape[0] == 7
    assert out.labels[-3:].tolist() == [0, 1, 2]


def test_dataset_card_says_how_it_was_made(teacher):
    ds = _make(teacher, seed=9)
    card = synthetic_dataset_card(ds, license="apache-2.0")
    text = str(card)
    assert "test/tiny-resnet" in text and "--seed 9" in text and "BatchNorm-statistics" in text
    assert card.data.license == "apache-2.0" and "synthetic" in card.data.tags
    assert "ReduceLROnPlateau" in text and "cosine" not in text
    plain = datasets.Dataset.from_dict({"x": [1]})
    with pytest.raises(ValueError, match="no synq_hf synthesis metadata"):
        synthetic_dataset_card(plain)


def test_vit_dataset_card_names_the_psaq_vit_optimizer():
    """ViT synthesis runs PSAQ-ViT's Adam and warm-up + cosine cycles: the card must not claim the CNN plateau."""
    torch.manual_seed(0)
    vit = timm.create_model("test_vit", num_classes=3, img_size=32, patch_size=8).eval()
    ds = synthesize(vit, SynQConfig(synthesis_batch_size=4, synthesis_log_every=2), data_config=DC, class_names=NAMES,
                    teacher_id="test/tiny-vit", num_images=4, iterations=2, seed=0, progress=False)
    text = str(synthetic_dataset_card(ds))
    assert "warm-up + cosine" in text and "(0.5, 0.9)" in text and "ReduceLROnPlateau" not in text
