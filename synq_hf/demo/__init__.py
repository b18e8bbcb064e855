"""The offline demo: a small CNN teacher trained on scikit-learn's bundled digits, and its held-out data."""

from .digits import (
    DigitsCNN,
    demo_teacher_metadata,
    demo_teacher_path,
    digits_dataset,
    digits_split_indices,
    load_demo_teacher,
    synq_digits_cnn,
)

__all__ = [
    "DigitsCNN",
    "demo_teacher_metadata",
    "demo_teacher_path",
    "digits_dataset",
    "digits_split_indices",
    "load_demo_teacher",
    "synq_digits_cnn",
]
