"""Export of quantized models to integer runtimes: ONNX QDQ (``pip install 'synq-hf[export]'``)."""

from .onnx import export_onnx, require_onnx

__all__ = ["export_onnx", "require_onnx"]
