"""Top-k accuracy as an ``evaluate`` metric that ships inside synq_hf, so it loads offline.

Load it with ``evaluate.load(<path of this folder>)`` (``synq_hf.evaluation.load_topk_metric()`` does
that). Predictions are either logits (config ``"logits"``, the default: one row of class scores per
sample) or ranked class indices (config ``"indices"``: best first, e.g. the top-5 of each sample).
References are integer class labels. Results are fractions in [0, 1]: ``{"top1": ..., "top5": ...}``.
"""

from __future__ import annotations

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Top-k accuracy: the fraction of samples whose reference label is among the k highest-scoring
predictions. With logits, k is capped at the number of classes.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: per sample, a list of class scores (config "logits") or of class indices ranked
        best first (config "indices").
    references: integer class labels.
    top_k: tuple of k values to report (default (1, 5)); each gives a key "top{k}".
Returns:
    dict mapping "top{k}" to the fraction of correct samples (0.0 for an empty input).
Examples:
    >>> metric = evaluate.load("path/to/synq_hf/metrics/topk_accuracy")
    >>> metric.compute(predictions=[[0.1, 0.9], [0.8, 0.2]], references=[1, 1], top_k=(1,))
    {'top1': 0.5}
"""

_CITATION = ""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TopkAccuracy(evaluate.Metric):
    """Top-1/top-5 accuracy from logits or ranked index lists."""

    def _info(self) -> evaluate.MetricInfo:
        value = datasets.Value("int64") if self.config_name == "indices" else datasets.Value("float32")
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(value), "references": datasets.Value("int64")}
            ),
            reference_urls=[
                "https://github.com/huggingface/pytorch-image-models/blob/main/timm/utils/metrics.py"
            ],
        )

    def _compute(self, predictions, references, top_k=(1, 5)):  # noqa: D401 - evaluate's signature
        refs = np.asarray(references, dtype=np.int64).reshape(-1)
        if refs.size == 0:
            return {f"top{k}": 0.0 for k in top_k}
        preds = np.asarray(predictions)
        if preds.ndim != 2 or preds.shape[0] != refs.size:
            raise ValueError(f"expected one prediction row per reference, got shape {preds.shape}")
        if self.config_name == "indices":
            ranked = preds.astype(np.int64)
        else:
            width = min(max(top_k), preds.shape[1])
            part = np.argpartition(-preds, width - 1, axis=1)[:, :width]
            order = np.argsort(-np.take_along_axis(preds, part, axis=1), axis=1, kind="stable")
            ranked = np.take_along_axis(part, order, axis=1)
        hits = ranked == refs[:, None]
        return {f"top{k}": float(hits[:, :k].any(axis=1).mean()) for k in top_k}
