"""Top-1/top-5 accuracy of a (float or quantized) classifier on a labeled image dataset."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import BatchSampler, DataLoader
from tqdm.auto import tqdm

from .data import build_eval_transform, detect_columns, make_batch_transform, raw_images
from .distributed import processes
from .errors import DataError
from .model_info import model_logits, model_num_classes
from .pipeline import LoadedModel

__all__ = ["check_labels", "evaluate_model", "topk_hits"]

logger = logging.getLogger(__name__)

def check_labels(dataset: Any, label_column: str, num_classes: int | None) -> None:
    """Fail early when the dataset's labels cannot index the model's classes."""
    import datasets

    feature = dataset.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        if num_classes is not None and feature.num_classes > num_classes:
            raise DataError(
                f"the dataset has {feature.num_classes} classes in {label_column!r} but the model outputs "
                f"{num_classes}: evaluate on a dataset with the model's label space"
            )
    elif not (isinstance(feature, datasets.Value) and feature.dtype.startswith(("int", "uint"))):
        raise DataError(f"label column {label_column!r} must hold integer class ids, not {feature}")
    labels = np.asarray(dataset.with_format("numpy")[label_column])
    if labels.size and labels.min() < 0:
        raise DataError(f"label column {label_column!r} has negative labels (an unlabeled split?)")
    if num_classes is not None and labels.size and labels.max() >= num_classes:
        raise DataError(
            f"label column {label_column!r} has label {int(labels.max())} but the model outputs only "
            f"{num_classes} classes"
        )


def _resolve_device(device: str | torch.device | None, model: nn.Module) -> torch.device:
    if device is None:
        param = next(model.parameters(), None)
        return param.device if param is not None else torch.device("cpu")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise DataError(f"invalid device {device!r}: {e}") from e


@torch.inference_mode()
def evaluate_model(
    model: nn.Module | LoadedModel,
    dataset: Any,
    data_config: dict[str, Any] | None = None,
    *,
    batch_size: int = 256,
    limit: int | None = None,
    device: str | torch.device | None = None,
    image_column: str | None = None,
    label_column: str | None = None,
    progress: bool = True,
    distributed: bool | None = None,
) -> dict[str, Any]:
    """Top-1/top-5 accuracy (percent) of ``model`` on ``dataset`` with the model's eval preprocessing.

    Under ``accelerate launch``/``torchrun`` with several processes (``distributed=None``: detected; ``False``:
    every process evaluates everything) every process must call this: each evaluates a contiguous slice and the
    correct counts are summed, so every process returns the numbers a single process would.
    """
    if isinstance(model, LoadedModel):
        data_config = data_config or model.data_config
        model = model.model
    if data_config is None:
        raise DataError("evaluate_model needs the model's data_config (mean/std/input size)")
    if batch_size < 1:
        raise DataError(f"batch_size must be positive, got {batch_size}")
    image_col, label_col = detect_columns(dataset, image_column, label_column, require_label=True)
    assert label_col is not None
    if limit is not None:
        if limit < 1:
            raise DataError(f"limit must be positive, got {limit}")
        dataset = dataset.select(range(min(limit, len(dataset))))
    n = len(dataset)
    if n == 0:
        raise DataError("the dataset is empty")
    num_classes = model_num_classes(model)
    check_labels(dataset, label_col, num_classes)
    procs = processes(distributed)
    start, stop = procs.rank * n // procs.world, (procs.rank + 1) * n // procs.world

    transform = build_eval_transform(data_config)
    view = raw_images(dataset.select_columns([image_col, label_col]), image_col).with_transform(
        make_batch_transform(transform, image_col, label_col)
    )
    # Index with whole batches so the transform runs once per batch (Arrow decodes in bulk).
    sampler = BatchSampler(range(start, stop), batch_size=batch_size, drop_last=False)
    loader = DataLoader(view, sampler=sampler, batch_size=None, num_workers=0)

    dev = _resolve_device(device, model)
    was_training = model.training
    model.eval().to(dev)
    k = min(5, num_classes) if num_classes else 5
    correct = np.zeros(2, dtype=np.int64)  # top-1, top-5 hits of this process's slice
    error = None
    try:
        with tqdm(total=stop - start, desc="evaluate", unit="img", disable=not (progress and procs.is_main)) as bar:
            for batch in loader:
                x = batch["pixel_values"].to(dev, non_blocking=True)
                logits = model_logits(model, x).float()
                top = logits.topk(min(k, logits.shape[-1]), dim=-1).indices.cpu().numpy()
                correct += topk_hits(top, batch["labels"].numpy())
                bar.update(x.shape[0])
    except Exception as e:
        if procs.world == 1:
            raise
        error = f"evaluating samples {start}..{stop - 1} failed: {type(e).__name__}: {e}"
        logger.exception("evaluate: %s", error)
    finally:
        model.train(was_training)
    procs.check(error)
    top1, top5 = (int(c) for c in np.sum(procs.gather(correct), axis=0))
    return {"num_samples": n, "top1": 100.0 * (top1 / n), "top5": 100.0 * (top5 / n)}


def topk_hits(ranked: np.ndarray, labels: np.ndarray, top_k: tuple[int, ...] = (1, 5)) -> np.ndarray:
    """How many rows of ``ranked`` (class indices, best first) hold their label within the first k, per k."""
    hits = ranked == labels.reshape(-1, 1)
    return np.array([int(hits[:, :k].any(axis=1).sum()) for k in top_k], dtype=np.int64)
