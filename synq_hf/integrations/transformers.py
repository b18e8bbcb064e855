"""transformers integration: ``quant_method="synq"`` for ``from_pretrained`` / ``save_pretrained``.

Registered on ``import synq_hf`` (before any ``from_pretrained``, or transformers would warn
"Unknown quantization type" and silently load a float model). Two paths:

* a folder saved with ``quantization_config.quant_method == "synq"`` reloads with its quantizers
  and calibrated ranges (all tensors live in ``model.safetensors``): logits are identical. Quantized
  weights are saved packed (integer codes, :mod:`synq_hf.quant.packing`, the qmap in the safetensors
  metadata); folders with float weights (synq_hf format 1-2) still load;
* ``from_pretrained(float_id, quantization_config=SynQConfig(...))`` returns a fake-quantized,
  not yet calibrated model ready for ``SynQTrainer`` (which calibrates before fine-tuning).

Either way ``model.config.quantization_config`` becomes the model-shaping part
(``SynQConfig.quantization_config()``), so ``save_pretrained`` records no synthesis or training settings.
"""

from __future__ import annotations

import json
from typing import Any

from transformers.quantizers import HfQuantizer, register_quantization_config, register_quantizer
from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING

from ..apply import act_quantizers, quantize_model
from ..config import SynQConfig
from ..quant import WeightQuantizer
from ..quant.packing import (
    QMAP_METADATA_KEY,
    expect_packed_weights,
    pack_model,
    read_qmap,
    unpack_packed_weights,
)

QUANT_METHOD = "synq"


class SynQHfQuantizer(HfQuantizer):
    """Swaps in synq_hf fake-quant modules on the meta model, before transformers loads the weights."""

    requires_calibration = False

    def __init__(self, quantization_config: SynQConfig, **kwargs: Any) -> None:
        super().__init__(quantization_config, **kwargs)

    def _process_model_before_weight_loading(self, model: Any, checkpoint_files: Any = None, **kwargs: Any) -> Any:
        quantize_model(model, self.quantization_config)
        ignore = set(model._keys_to_ignore_on_load_missing or ())
        # save_pretrained writes model.config.quantization_config: only what shapes the model, no run settings
        model.config.quantization_config = self.quantization_config.quantization_config()
        if not self.pre_quantized:  # a float checkpoint has no quantizer tensors: not worth a warning
            model._keys_to_ignore_on_load_missing = ignore | {r"_quantizer\."}
            return model
        self._qmap = _read_qmap(checkpoint_files)
        if self._qmap is not None:  # packed codes load into buffers; unpacked after loading
            model._keys_to_ignore_on_load_missing = ignore | set(expect_packed_weights(model, self._qmap))
        return model

    def _process_model_after_weight_loading(self, model: Any, **kwargs: Any) -> Any:
        if self.pre_quantized and getattr(self, "_qmap", None) is not None:
            unpack_packed_weights(model, self._qmap)
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

    def get_state_dict_and_metadata(self, model: Any) -> tuple[dict[str, Any], dict[str, str]]:
        """The packed state dict (integer weight codes) and its qmap, for ``save_pretrained``."""
        tensors, qmap = pack_model(model)
        return tensors, {QMAP_METADATA_KEY: json.dumps(qmap)}

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


def _read_qmap(checkpoint_files: Any) -> dict[str, Any] | None:
    """The qmap of the first safetensors checkpoint file, or None (float weights: a format 1-2 folder)."""
    for path in checkpoint_files or ():
        if str(path).endswith(".safetensors"):
            return read_qmap(path)
    return None
