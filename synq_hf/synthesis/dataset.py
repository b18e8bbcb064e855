"""Turn synthetic tensors into a ``datasets.Dataset`` that records how it was made, and its dataset card."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
from huggingface_hub import DatasetCard, DatasetCardData

from ..hub.outputs import public_name
from ..version import __version__

if TYPE_CHECKING:
    from .types import SyntheticImages

INFO_KEY = "synq_hf"


def synthetic_features(shape: tuple[int, int, int], class_names: list[str] | None, num_classes: int) -> datasets.Features:
    """``pixel_values`` (float32 ``Array3D``, normalized space) and ``label`` (``ClassLabel``)."""
    label = datasets.ClassLabel(names=list(class_names)) if class_names else datasets.ClassLabel(num_classes=num_classes)
    return datasets.Features({"pixel_values": datasets.Array3D(shape=tuple(shape), dtype="float32"), "label": label})


def provenance(images: SyntheticImages, teacher_id: str, data_config: dict[str, Any]) -> dict[str, Any]:
    """Everything needed to reproduce the images: teacher, resolved config, seed, version, restarts."""
    return {
        "generator": "synq_hf.synthesize",
        "synq_hf_version": __version__,
        "teacher": public_name(teacher_id),  # never a local path
        "family": images.family,
        "seed": images.seed,
        "num_images": int(images.labels.numel()),
        "calibration_centres": images.calibration_centres,
        "restarts": images.restarts,
        "normalization": {"mean": list(data_config["mean"]), "std": list(data_config["std"])},
        "config": images.config.to_dict(),
        "final_losses": images.history[-1] if images.history else {},
    }


def to_dataset(images: SyntheticImages, *, teacher_id: str, data_config: dict[str, Any],
               class_names: list[str] | None = None, num_classes: int | None = None) -> datasets.Dataset:
    """A ``datasets.Dataset`` of the images; ``info.description`` is the JSON provenance (teacher, config, seed)."""
    num_classes = num_classes or (len(class_names) if class_names else int(images.labels.max()) + 1)
    features = synthetic_features(tuple(images.pixels.shape[1:]), class_names, num_classes)
    meta = provenance(images, teacher_id, data_config)
    info = datasets.DatasetInfo(description=json.dumps(meta, sort_keys=True), features=features)
    data = {"pixel_values": images.pixels.float().numpy(), "label": images.labels.numpy().astype(np.int64)}
    return datasets.Dataset.from_dict(data, features=features, info=info)


def synthesis_metadata(dataset: datasets.Dataset) -> dict[str, Any]:
    """The provenance dict stored by :func:`to_dataset` (empty if the dataset was not made by synq_hf)."""
    try:
        meta = json.loads(dataset.info.description or "{}")
    except json.JSONDecodeError:
        return {}
    return meta if meta.get("generator") == "synq_hf.synthesize" else {}


_CARD = """---
{card_data}
---

# Synthetic images from `{teacher}`

Zero-shot quantization data made by synq_hf (SynQ, ICLR 2025) **without any real image**:
{n} images were optimized from Gaussian noise so that the teacher `{teacher}` recognizes them as their randomly
assigned labels ({method}).

- `pixel_values`: float32 `(C, H, W)` in the teacher's *normalized* input space (mean {mean}, std {std}); they
  are not viewable photos and must not be normalized again.
- `label`: the class each image was optimized towards.

## How it was made

| | |
|---|---|
| teacher | `{teacher}` ({family}) |
| seed | {seed} |
| iterations | {iterations} |
| batch size | {batch} |
| learning rate | {lr} ({optimizer}) |
| restarted groups (NaN/Inf) | {restarts} |
| synq_hf | {version} |

Reproduce with:

```bash
synq-hf synthesize {teacher} --out synthetic --num-images {n} --batch-size {batch} --iterations {iterations} --seed {seed}
```

The full resolved `SynQConfig`:

```json
{config}
```
"""


def synthetic_dataset_card(dataset: datasets.Dataset, *, license: str | None = None,
                           base_data: DatasetCardData | None = None) -> DatasetCard:
    """A dataset card saying how the synthetic images were made (teacher, method, config, seed).

    ``base_data`` (e.g. the YAML ``push_to_hub`` wrote, with ``dataset_info``/``configs``) is kept and extended.
    """
    from .vit import PSAQ_BETAS

    meta = synthesis_metadata(dataset)
    if not meta:
        raise ValueError("this dataset carries no synq_hf synthesis metadata (was it made by synq_hf.synthesize?)")
    cfg = meta["config"]
    method = ("BatchNorm-statistics matching + hard-sample cross-entropy" if meta["family"] == "cnn"
              else "PSAQ-ViT patch-similarity entropy + cross-entropy + total variation")
    fields = base_data.to_dict() if base_data is not None else {}
    fields["tags"] = sorted(set(fields.get("tags") or []) | {"synthetic", "zero-shot-quantization", "synq"})
    fields["task_categories"] = ["image-classification"]
    fields["pretty_name"] = f"SynQ synthetic data ({meta['teacher']})"
    if license is not None:
        fields["license"] = license
    data = DatasetCardData(**fields)
    text = _CARD.format(
        card_data=data.to_yaml(), teacher=meta["teacher"], n=meta["num_images"], method=method,
        mean=meta["normalization"]["mean"], std=meta["normalization"]["std"], family=meta["family"],
        seed=meta["seed"], iterations=cfg["synthesis_iterations"], batch=cfg["synthesis_batch_size"],
        lr=cfg["synthesis_lr"],
        optimizer=(f"Adam, ReduceLROnPlateau x{cfg['synthesis_lr_factor']}, patience {cfg['synthesis_lr_patience']}"
                   if meta["family"] == "cnn" else f"Adam betas {PSAQ_BETAS}, two warm-up + cosine cycles, as PSAQ-ViT"),
        restarts=meta["restarts"], version=meta["synq_hf_version"], config=json.dumps(cfg, indent=2, sort_keys=True),
    )
    return DatasetCard(text)


def _hub_card(dataset: datasets.Dataset, repo_id: str, base_data: DatasetCardData,
              model_repo: str | None) -> DatasetCard:
    """The card of a pushed synthetic dataset: :func:`synthetic_dataset_card` (or, for images synq_hf did not
    make, a short one), linking to ``model_repo``, local paths and tokens scrubbed."""
    from ..hub.card import sanitize

    link = f"[{model_repo}](https://huggingface.co/{model_repo})" if model_repo else None
    if synthesis_metadata(dataset):
        card = synthetic_dataset_card(dataset, base_data=base_data)
        if link:
            card.text += f"\nThese images calibrated and fine-tuned {link}.\n"
    else:
        fields = base_data.to_dict()
        fields["tags"] = sorted(set(fields.get("tags") or []) | {"synthetic", "zero-shot-quantization", "synq"})
        fields["task_categories"] = ["image-classification"]
        origin = f"the base model of {link}" if link else "a classifier"
        card = DatasetCard(
            f"---\n{DatasetCardData(**fields).to_yaml()}\n---\n\n# {repo_id.split('/', 1)[-1]}\n\n"
            f"{len(dataset):,} synthetic images generated by synq-hf from {origin}: no real image was used.\n\n"
            f"```python\nfrom datasets import load_dataset\n\nds = load_dataset(\"{repo_id}\", split=\"train\")\n```\n"
        )
    return DatasetCard(sanitize(card.content))


def push_synthetic_dataset(dataset: datasets.Dataset, repo_id: str, *, private: bool | None = None,
                           token: str | None = None, commit_message: str | None = None,
                           revision: str | None = None, create_pr: bool = False,
                           model_repo: str | None = None) -> str:
    """``dataset.push_to_hub``, then its README rewritten as :func:`synthetic_dataset_card` (keeping its YAML).

    As ``push_to_hub`` does, only the split's earlier data files (``data/train-*``) are replaced; nothing else in
    the repo is deleted. ``model_repo`` (the quantized model the images made) is linked from the card. With
    ``create_pr`` the card goes into the same pull request. Returns the URL of the pull request or of the commit.
    """
    import huggingface_hub

    info = dataset.push_to_hub(repo_id, private=private, token=token, commit_message=commit_message,
                               revision=revision, create_pr=create_pr)
    target = getattr(info, "pr_revision", None) if create_pr else revision
    api = huggingface_hub.HfApi(token=token, library_name="synq-hf", library_version=__version__)
    readme = api.hf_hub_download(repo_id, "README.md", repo_type="dataset", revision=target)
    card = _hub_card(dataset, repo_id, DatasetCard.load(readme).data, model_repo)
    done = api.upload_file(path_or_fileobj=str(card).encode("utf-8"), path_in_repo="README.md", repo_id=repo_id,
                           repo_type="dataset", revision=target,
                           commit_message="Dataset card: how the synthetic images were made (synq-hf)")
    url = getattr(info, "pr_url", None) if create_pr else getattr(done, "commit_url", done)
    return str(url)
