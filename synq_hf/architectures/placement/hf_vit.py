"""PSAQ-ViT placement for transformers ``ViTForImageClassification``, ``DeiTForImageClassification``
(and ``...WithTeacher``) and ``SwinForImageClassification``.

Same placement as the timm one: ``w_bits`` weights on the patch-embedding projection and every
Linear (classifier(s) included); ``a_bits`` activations on every Linear's input (q/k/v/o
projections, fc1, fc2, Swin's patch-merging reduction, the classifier), on q, k, v and the
pre-softmax scores, on every layer's output (``ViTLayer``/``DeiTLayer``/``SwinLayer``) and on the
logits. With ``vit_placement="psaq"`` (default) also the image, the patch embeddings, the embeddings after
the position add, the mid-block residual stream (layers become ``QuantViTLayer``/...) and the
``o_proj``/``fc2`` outputs, as PSAQ-ViT. Attention modules become subclasses with an explicit forward (``_hf_attention``), so the
state-dict keys of the float model are unchanged apart from the added quantizer buffers.
"""

from __future__ import annotations

from torch import nn

from ...errors import UnsupportedModelError
from ...quant.policy import LayerPolicy
from ._common import PsaqSites, classifier_names, place_transformer_quantizers

_VIT_CLASSES = (
    "ViTForImageClassification",
    "DeiTForImageClassification",
    "DeiTForImageClassificationWithTeacher",
)
_SWIN_CLASSES = ("SwinForImageClassification",)
HEADS = ("classifier", "cls_classifier", "distillation_classifier")
PATCH_CONV = "embeddings.patch_embeddings.projection"


def is_instance(model: nn.Module, class_names: tuple[str, ...]) -> bool:
    """isinstance against transformers classes, importing transformers only for its own models."""
    if not any(c.__module__.startswith("transformers.") for c in type(model).__mro__):
        return False
    import transformers

    return isinstance(model, tuple(getattr(transformers, n) for n in class_names))


def is_vit(model: nn.Module) -> bool:
    return is_instance(model, _VIT_CLASSES)


def is_swin(model: nn.Module) -> bool:
    return is_instance(model, _SWIN_CLASSES)


def first_last(model: nn.Module) -> tuple[str | None, str | None]:
    """``<base>.embeddings.patch_embeddings.projection`` and the (cls) classifier."""
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n.endswith(PATCH_CONV)]
    heads = classifier_names(model, HEADS)
    return (convs[0] if convs else None), (heads[0] if heads else None)


def apply(model: nn.Module, policy: LayerPolicy) -> None:
    """Insert the PSAQ-ViT quantizers in place (see the module docstring)."""
    from ._hf_attention import BLOCK_TYPES, QUANT_ATTENTION, QUANT_BLOCKS

    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if len(convs) != 1 or not convs[0].endswith(PATCH_CONV):
        raise UnsupportedModelError(
            f"{type(model).__name__}: expected one patch-embedding conv, found {convs}"
        )
    heads = classifier_names(model, HEADS)
    psaq = None
    if policy.config.vit_placement == "psaq":
        embeddings = convs[0][: -len(".patch_embeddings.projection")]
        psaq = PsaqSites(convs[0], (f"{embeddings}.patch_embeddings", embeddings), QUANT_BLOCKS,
                         ("attention.o_proj", "mlp.fc2"))
    place_transformer_quantizers(model, policy, heads=heads, attention_classes=QUANT_ATTENTION,
                                 is_block=lambda name, module: type(module) in BLOCK_TYPES, psaq=psaq)


