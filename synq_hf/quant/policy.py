"""``LayerPolicy``: which modules get quantized and with how many bits, derived from a ``SynQConfig``."""

from __future__ import annotations

from fnmatch import fnmatchcase

from ..config import SynQConfig
from .quantizers import ActQuantizer, WeightQuantizer

GENIE_BITS = 8
"""Bit-width of the first and last layer under ``layer_rule="genie"`` (Genie, BRECQ, QDrop)."""


class LayerPolicy:
    """Answers "quantize module NAME? with which quantizers?" for one model and config.

    ``first``/``last`` name the model's first layer and classifier, which get ``first_layer_bits``
    / ``last_layer_bits`` when set, or 8 bits under ``layer_rule="genie"``. ``include`` / ``exclude`` globs match
    module names. Mixed precision: ``layer_w_bits`` (layer name -> weight bits) and ``layer_a_bits`` (activation
    quantizer name -> bits) win over both; a budget fills them (``synq_hf.mixed``).
    """

    def __init__(self, config: SynQConfig, *, first: str | None, last: str | None, symmetric_weights: bool) -> None:
        self.config, self.first, self.last = config, first, last
        self.symmetric_weights = symmetric_weights

    def enabled(self, name: str) -> bool:
        """Whether module ``name`` should be quantized (include/exclude globs)."""
        if self.config.include and not any(fnmatchcase(name, p) for p in self.config.include):
            return False
        return not any(fnmatchcase(name, p) for p in self.config.exclude)

    def _override(self, name: str) -> int | None:
        if self.config.layer_rule == "genie" and name in (self.first, self.last):
            return GENIE_BITS
        if name == self.first and self.config.first_layer_bits is not None:
            return self.config.first_layer_bits
        if name == self.last and self.config.last_layer_bits is not None:
            return self.config.last_layer_bits
        return None

    def pinned_w_bits(self, name: str) -> int | None:
        """The weight bits ``first_layer_bits``/``last_layer_bits`` fix for layer ``name`` (None: a budget chooses)."""
        return self._override(name)

    @property
    def first_reads_float(self) -> bool:
        """Whether the first layer's input (the image) stays float even where the placement would quantize it."""
        return self.config.layer_rule == "genie"

    def classifier_input_bits(self, name: str) -> int:
        """Bits of activation quantizer ``name`` whose only reader is the classifier (through pooling): the last
        layer's under ``layer_rule="genie"``, its own otherwise."""
        if self.config.layer_rule == "genie" and self.last is not None:
            return self.a_bits(self.last)
        return self.a_bits(name)

    def w_bits(self, name: str) -> int:
        return self.config.layer_w_bits.get(name) or self._override(name) or self.config.w_bits

    def a_bits(self, name: str) -> int:
        return self._override(name) or self.config.a_bits

    def weight_quantizer(self, name: str) -> WeightQuantizer:
        per_channel = self.config.weight_granularity == "per_channel"
        c = self.config
        return WeightQuantizer(self.w_bits(name), self.symmetric_weights, per_channel, range_init=c.weight_range_init,
                               learnable=c.learnable_weight_scale, search_p=c.range_search_p)

    def act_quantizer(self, name: str, bits: int | None = None) -> ActQuantizer:
        """An activation quantizer for the tensor called ``name`` (bits from the owning layer's policy)."""
        c = self.config
        bits = c.layer_a_bits.get(name) or bits or self.a_bits(name)
        q = ActQuantizer(bits, c.act_symmetric, c.ema_momentum, c.ste, c.learnable_act_scale,
                         range_init=c.act_range_init, search_p=c.range_search_p)
        q.name = name
        return q
