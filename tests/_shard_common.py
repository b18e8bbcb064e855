"""The seeded cases shared by tests/test_distributed.py and its torchrun worker tests/_shard_worker.py."""

import datasets
import numpy as np
import timm
import torch
from PIL import Image

from synq_hf import SynQConfig
from synq_hf.synthesis import SyntheticImages, generate_synthetic

DC = {"input_size": (3, 16, 16), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
      "interpolation": "bilinear", "crop_pct": 1.0}
GROUPS = 5  # odd, so the two processes get unequal shares


def teacher() -> torch.nn.Module:
    """A tiny random BatchNorm CNN, the same in every process."""
    torch.manual_seed(0)
    return timm.create_model("test_resnet", num_classes=10).eval()


def synthesize(model: torch.nn.Module, *, per_forward: int, checkpoint_dir=None) -> SyntheticImages:
    """GROUPS groups of 4 images, 3 iterations, seed 7; augmentation on so the per-unit RNG matters."""
    cfg = SynQConfig(synthesis_batch_size=4, synthesis_log_every=1, synthesis_groups_per_forward=per_forward,
                     synthesis_augment=True)
    return generate_synthetic(model, cfg, data_config=DC, num_images=4 * GROUPS, iterations=3, seed=7,
                              progress=False, checkpoint_dir=checkpoint_dir, fingerprint={"teacher": "tiny"})


def as_dict(images: SyntheticImages) -> dict:
    """What must be identical between runs: pixels, labels, restarts and the loss log."""
    return {"pixels": images.pixels, "labels": images.labels, "restarts": images.restarts,
            "history": images.history}


def evaluation_case() -> tuple[torch.nn.Module, datasets.Dataset, dict]:
    """A random CNN and 37 random labelled images (an odd count: uneven slices and a partial batch)."""
    torch.manual_seed(1)
    model = timm.create_model("test_resnet", num_classes=10).eval()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)) for _ in range(37)]
    labels = rng.integers(0, 10, 37).tolist()
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    return model, datasets.Dataset.from_dict({"image": images, "label": labels}, features=features), DC
