"""transformers integration: ``quant_method="synq"`` for ``from_pretrained`` / ``save_pretrained``.

Registered on ``import synq_hf`` (before any ``from_pretrained``, or transformers would warn
"Unknown quantization type" and silently load a float model). Two paths:

* a folder saved with ``quantization_config.quant_method == "synq"`` reloads with its quantizers
  and calibrated ranges (all tensors live in ``model.safetensors``): logits are identical;
* ``from_pretrained(float_id, quantization_config=SynQConfig(...))`` returns a fake-quantized,
  not yet calibrated model ready for ``SynQTrainer`` (which calibrates before fine-tuning).

Either way ``model.config.quantization_config`` becomes the model-shaping part
(``SynQConfig.quantization_config()``), so ``save_pretrained`` records no synthesis or training settings.
"""

from __future__ import annotations

from typing import Any

from transformers.quantizers import HfQuantizer, register_quantization_config, register_quantizer
from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING

from ..config import SynQConfig
from ..quant import WeightQuantizer, act_quantizers, quantize_model

QUANT_METHOD = "synq"


class SynQHfQuantizer(HfQuantizer):
    """Swaps in synq_hf fake-quant modules on the meta model, before transformers loads the weights."""

    requires_calibration = False

    def __init__(self, quantization_config: SynQConfig, **kwargs: Any) -> None:
        super().__init__(quantization_config, **kwargs)

    def _process_model_before_weight_loading(self, model: Any, **kwargs: Any) -> Any:
        quantize_model(model, self.quantization_config)
        # save_pretrained writes model.config.quantization_config: only what shapes the model, no run settings
        model.config.quantization_config = self.quantization_config.quantization_config()
        if not self.pre_quantized:  # a float checkpoint has no quantizer tensors: not worth a warning
            ignore = set(model._keys_to_ignore_on_load_missing or ())
            model._keys_to_ignore_on_load_missing = ignore | {r"_quantizer\."}
        return model

    def _process_model_after_weight_loading(self, model: Any, **kwargs: Any) -> Any:
        # Quantizer buffers absent from a float checkpoint come back as uninitialized memory.
        if not self.pre_quantized:
            for m in model.modules():
                if isinstance(m, WeightQuantizer):
                    m.reset_range()
            for q in act_quantizers(model):
                q.reset()
                if q.learnable:
                    q.scale.data.fill_(1.0)
                    q.zero_point.data.zero_()
        return model

    def is_serializable(self, safe_serialization: Any = None) -> bool:
        return True

    @property
    def is_trainable(self) -> bool:
        return True

    @property
    def is_qat_trainable(self) -> bool:
        return True


def register() -> None:
    """Register ``SynQConfig`` and ``SynQHfQuantizer`` under ``quant_method="synq"`` (idempotent)."""
    if AUTO_QUANTIZATION_CONFIG_MAPPING.get(QUANT_METHOD) is not SynQConfig:
        AUTO_QUANTIZATION_CONFIG_MAPPING.pop(QUANT_METHOD, None)
        register_quantization_config(QUANT_METHOD)(SynQConfig)
    if AUTO_QUANTIZER_MAPPING.get(QUANT_METHOD) is not SynQHfQuantizer:
        AUTO_QUANTIZER_MAPPING.pop(QUANT_METHOD, None)
        register_quantizer(QUANT_METHOD)(SynQHfQuantizer)
