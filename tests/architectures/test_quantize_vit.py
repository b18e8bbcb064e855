"""PSAQ-ViT placement on tiny timm and transformers ViT/DeiT/Swin models (random init, CPU, seconds)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models.vision_transformer import ParallelScalingBlock
from torch import nn
from transformers import (
    DeiTConfig,
    DeiTForImageClassification,
    DeiTForImageClassificationWithTeacher,
    SwinConfig,
    SwinForImageClassification,
    ViTConfig,
    ViTForImageClassification,
)

from synq_hf import SynQConfig, UnsupportedModelError
from synq_hf.apply import act_quantizers, calibrate, is_quantized, quant_mode, quantize_model
from synq_hf.architectures import find_spec
from synq_hf.model_info import model_logits
from synq_hf.quant import ActQuantizer, QuantConv2d, QuantLinear, WeightQuantizer
from synq_hf.quant.layers import OutputQuantized

ATTN = ("q_quantizer", "k_quantizer", "v_quantizer", "score_quantizer")
TIMM_BLOCK = frozenset(
    [f"attn.{a}" for a in ATTN]
    + [f"{n}.input_quantizer" for n in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")]
    + ["output_quantizer"]
)
HF_BLOCK = frozenset(
    [f"attention.{a}" for a in ATTN]
    + [f"attention.{p}.input_quantizer" for p in ("q_proj", "k_proj", "v_proj", "o_proj")]
    + ["mlp.fc1.input_quantizer", "mlp.fc2.input_quantizer", "output_quantizer"]
)
# the faithful PSAQ-ViT placement (default) adds, per block, the mid-block residual stream and the outputs of
# the attention projection and fc2 (PSAQ-ViT's Block.qact2, Attention.qact3, Mlp.QuantAct2)
TIMM_PSAQ = frozenset(["residual_quantizer", "attn.proj.output_quantizer", "mlp.fc2.output_quantizer"])
HF_PSAQ = frozenset(["residual_quantizer", "attention.o_proj.output_quantizer", "mlp.fc2.output_quantizer"])
HF_TINY = dict(
    image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
    intermediate_size=64, num_labels=10,
)
HF_SWIN = dict(
    image_size=56, patch_size=4, embed_dim=24, depths=[2, 2], num_heads=[1, 2], window_size=7, num_labels=10
)
TIMM_SWIN = dict(embed_dim=24, depths=(2, 2), num_heads=(1, 2), img_size=56, window_size=7, num_classes=10)


@dataclass(frozen=True)
class Case:
    """A tiny model and where its quantizers must be."""

    make: Callable[[], nn.Module]
    size: int  # input side in pixels
    family: str
    blocks: tuple[str, ...]
    per_block: frozenset[str]
    heads: tuple[str, ...]
    first: str
    psaq_block: frozenset[str]  # extra per-block quantizers of the faithful placement
    embeddings: tuple[str, ...]  # modules whose output the faithful placement quantizes
    merges: tuple[str, ...] = ()  # Swin patch-merging Linears (input-quantized)
    timm_name: str | None = None  # reload through timm's strict checkpoint loader


def _timm(name: str, **kw: object) -> Callable[[], nn.Module]:
    return lambda: timm.create_model(name, pretrained=False, **kw)


def _hf(cls: type, config_cls: type, **kw: object) -> Callable[[], nn.Module]:
    return lambda: cls(config_cls(**kw))


_SWIN_BLOCKS = ("layers.0.blocks.0", "layers.0.blocks.1", "layers.1.blocks.0", "layers.1.blocks.1")
CASES = {
    "timm_vit": Case(
        _timm("test_vit", depth=2, num_classes=10), 64, "vit", ("blocks.0", "blocks.1"), TIMM_BLOCK,
        ("head",), "patch_embed.proj", TIMM_PSAQ, ("patch_embed", "pos_drop"), timm_name="test_vit",
    ),
    "timm_deit": Case(
        _timm("deit_tiny_patch16_224", depth=2, img_size=64, num_classes=10), 64, "vit",
        ("blocks.0", "blocks.1"), TIMM_BLOCK, ("head",), "patch_embed.proj", TIMM_PSAQ, ("patch_embed", "pos_drop"),
        timm_name="deit_tiny_patch16_224",
    ),
    "timm_deit_distilled": Case(
        _timm("deit_tiny_distilled_patch16_224", depth=2, img_size=64, num_classes=10), 64, "vit",
        ("blocks.0", "blocks.1"), TIMM_BLOCK, ("head", "head_dist"), "patch_embed.proj", TIMM_PSAQ,
        ("patch_embed", "pos_drop"), timm_name="deit_tiny_distilled_patch16_224",
    ),
    "timm_swin": Case(
        _timm("swin_tiny_patch4_window7_224", **TIMM_SWIN), 56, "swin", _SWIN_BLOCKS, TIMM_BLOCK,
        ("head.fc",), "patch_embed.proj", TIMM_PSAQ, ("patch_embed",), merges=("layers.1.downsample.reduction",),
        timm_name="swin_tiny_patch4_window7_224",
    ),
    "hf_vit": Case(
        _hf(ViTForImageClassification, ViTConfig, **HF_TINY), 32, "vit", ("vit.layers.0", "vit.layers.1"),
        HF_BLOCK, ("classifier",), "vit.embeddings.patch_embeddings.projection", HF_PSAQ,
        ("vit.embeddings", "vit.embeddings.patch_embeddings"),
    ),
    "hf_deit": Case(
        _hf(DeiTForImageClassification, DeiTConfig, **HF_TINY), 32, "vit", ("deit.layers.0", "deit.layers.1"),
        HF_BLOCK, ("classifier",), "deit.embeddings.patch_embeddings.projection", HF_PSAQ,
        ("deit.embeddings", "deit.embeddings.patch_embeddings"),
    ),
    "hf_deit_teacher": Case(
        _hf(DeiTForImageClassificationWithTeacher, DeiTConfig, **HF_TINY), 32, "vit",
        ("deit.layers.0", "deit.layers.1"), HF_BLOCK, ("cls_classifier", "distillation_classifier"),
        "deit.embeddings.patch_embeddings.projection", HF_PSAQ, ("deit.embeddings", "deit.embeddings.patch_embeddings"),
    ),
    "hf_swin": Case(
        _hf(SwinForImageClassification, SwinConfig, **HF_SWIN), 56, "swin",
        tuple(f"swin.encoder.{b}" for b in _SWIN_BLOCKS), HF_BLOCK, ("classifier",),
        "swin.embeddings.patch_embeddings.projection", HF_PSAQ, ("swin.embeddings", "swin.embeddings.patch_embeddings"),
        merges=("swin.encoder.layers.0.downsample.reduction",),
    ),
}
# timm Swin names its patch merging ``layers.1.downsample`` (downsampling opens the next stage).

W8A8 = SynQConfig(w_bits=8, a_bits=8)
W4A8 = SynQConfig(w_bits=4, a_bits=8)
W4A8_LOOSE = SynQConfig(w_bits=4, a_bits=8, vit_placement="loose")


def _float_model(case: Case, seed: int = 0) -> nn.Module:
    """A tiny random model with trained-like magnitudes where random init is degenerate.

    Random init leaves class/distillation tokens ~1e-6 (the only tokens the head reads are then far
    below one step of a per-tensor block-output quantizer) and HF Swin's relative position bias at 0
    (which would hide a wrong bias path); both get unit-scale values here.
    """
    torch.manual_seed(seed)
    model = case.make().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("cls_token", "dist_token", "distillation_token", "position_bias_table")):
                p.normal_(0.0, 1.0)
    return model


def _images(case: Case, n: int = 4, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, case.size, case.size, generator=torch.Generator().manual_seed(seed))


def _weights_enabled(model: nn.Module, enabled: bool) -> None:
    for m in model.modules():
        if isinstance(m, WeightQuantizer):
            m.enabled = enabled


def _quantizer_names(model: nn.Module) -> set[str]:
    return {n for n, m in model.named_modules() if isinstance(m, ActQuantizer)}


def _expected_names(case: Case, psaq: bool = True) -> set[str]:
    per_block = case.per_block | case.psaq_block if psaq else case.per_block
    names = {f"{b}.{s}" for b in case.blocks for s in per_block}
    names |= {f"{h}.{s}" for h in case.heads for s in ("input_quantizer", "output_quantizer")}
    if psaq:
        names |= {f"{e}.output_quantizer" for e in case.embeddings} | {f"{case.first}.input_quantizer"}
    return names | {f"{m}.input_quantizer" for m in case.merges}


def _branch_outputs(case: Case) -> set[str]:
    return {f"{b}.{s.rsplit('.', 1)[0]}" for b in case.blocks for s in case.psaq_block if "." in s}


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def _is_quantizer_key(key: str) -> bool:
    return "_quantizer." in key


@pytest.fixture(params=list(CASES), ids=list(CASES))
def case(request: pytest.FixtureRequest) -> Case:
    return CASES[request.param]


def test_timm_attention_masks_match_in_float_mode() -> None:
    model = _float_model(CASES["timm_vit"])
    qmodel = quantize_model(model, W4A8, inplace=False)
    _weights_enabled(qmodel, False)
    x = _images(CASES["timm_vit"], n=2)
    mask = torch.rand(2, 1, 17, 17, generator=torch.Generator().manual_seed(2)) > 0.3
    mask[..., 0] = True
    with torch.no_grad(), quant_mode(qmodel, "float"):
        for kwargs in ({"attn_mask": mask}, {"is_causal": True}):
            torch.testing.assert_close(
                qmodel.forward_features(x, **kwargs), model.forward_features(x, **kwargs), rtol=0, atol=1e-5
            )


def test_hf_attention_mask_and_returned_probabilities_match_eager() -> None:
    config = ViTConfig(**HF_TINY)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = ViTForImageClassification(config).eval()
    qmodel = quantize_model(model, W4A8, inplace=False)
    _weights_enabled(qmodel, False)
    x = _images(CASES["hf_vit"], n=2)
    mask = torch.ones(2, 17, dtype=torch.long)
    mask[1, 10:] = 0
    with torch.no_grad(), quant_mode(qmodel, "float"):
        ref = model(x, attention_mask=mask, output_attentions=True)
        out = qmodel(x, attention_mask=mask, output_attentions=True)
    torch.testing.assert_close(out.logits, ref.logits, rtol=0, atol=1e-5)
    assert len(out.attentions) == 2
    for a, b in zip(out.attentions, ref.attentions):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_quantizers_sit_exactly_where_psaq_vit_puts_them(case: Case) -> None:
    """Default (faithful PSAQ-ViT) placement: exact quantizer set; every Linear input and the image quantized;
    calibrated ranges come from the intended tensors.

    Scores are pre-softmax (negative values) and pre-mask (Swin's -100 shift mask is added after the
    quantizer); fc2 inputs are GELU outputs (>= -0.17), fc1 inputs LayerNorm outputs.
    """
    model = _float_model(case)
    placement = find_spec(model)
    assert placement is not None and placement.family == case.family and placement.placement == "psaq_vit"
    assert placement.first_last(model) == (case.first, case.heads[0])
    quantize_model(model, W4A8)
    assert _quantizer_names(model) == _expected_names(case)
    for name, m in model.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            assert isinstance(m, (QuantLinear, QuantConv2d)) and m.input_quantizer is not None, name
        if isinstance(m, (QuantLinear, QuantConv2d)):
            wq = m.weight_quantizer
            assert (wq.bits, wq.symmetric, wq.per_channel) == (4, True, True), name
        if isinstance(m, (nn.LayerNorm, nn.GELU, nn.Softmax)) or type(m).__name__ == "GELUActivation":
            assert not isinstance(m, OutputQuantized), name
    output_quantized = {n for n, m in model.named_modules() if isinstance(m, OutputQuantized)}
    assert output_quantized == set(case.blocks + case.heads + case.embeddings) | _branch_outputs(case)
    assert all(q.bits == 8 for q in act_quantizers(model))

    calibrate(model, [_images(case, n=4)], progress=False)
    for block in case.blocks:
        score = model.get_submodule(block + (".attn" if case.timm_name else ".attention")).score_quantizer
        assert -50.0 < float(score.min_val) < 0.0
        assert float(model.get_submodule(block + ".mlp.fc2").input_quantizer.min_val) >= -0.171
        assert float(model.get_submodule(block + ".mlp.fc1").input_quantizer.min_val) < -0.5


def test_loose_placement_leaves_the_image_embeddings_and_residual_stream_float(case: Case) -> None:
    """``vit_placement="loose"``: every Linear input, attention, block outputs and logits only."""
    model = quantize_model(_float_model(case), W4A8_LOOSE)
    assert _quantizer_names(model) == _expected_names(case, psaq=False)
    assert model.get_submodule(case.first).input_quantizer is None
    output_quantized = {n for n, m in model.named_modules() if isinstance(m, OutputQuantized)}
    assert output_quantized == set(case.blocks + case.heads)


def test_psaq_residual_quantizer_sees_the_mid_block_stream(case: Case) -> None:
    """The residual quantizer's calibrated range is that of ``x + attn(norm1(x))``, which feeds norm2 and the skip:
    in quantize mode the block's output equals the quantized mid stream plus the (quantized) MLP branch."""
    model = calibrate(quantize_model(_float_model(case), W4A8), [_images(case)], progress=False)
    block = model.get_submodule(case.blocks[0])
    seen: dict[str, torch.Tensor] = {}
    block.residual_quantizer.register_forward_hook(lambda m, i, o: seen.__setitem__("mid", o))
    mlp = block.get_submodule("mlp")
    mlp.register_forward_hook(lambda m, i, o: seen.__setitem__("mlp", o))
    block.register_forward_hook(lambda m, i, o: seen.__setitem__("out", o[0] if isinstance(o, tuple) else o))
    with torch.no_grad():
        model_logits(model, _images(case, n=2, seed=5))
    mid = seen["mid"]
    steps = (mid.flatten().unique().numel())
    assert steps <= 256  # an 8-bit grid
    expected = block.output_quantizer(mid.reshape(seen["mlp"].shape) + seen["mlp"])
    torch.testing.assert_close(seen["out"].reshape(expected.shape), expected, rtol=0, atol=1e-6)


def test_cnn_models_get_a_cnn_spec() -> None:
    assert find_spec(timm.create_model("test_resnet")).family == "cnn"


def test_w8a8_is_close_to_float_and_w4a8_is_coarser(case: Case) -> None:
    model = _float_model(case)
    x = _images(case, n=8)
    with torch.no_grad():
        ref = model_logits(model, x)
        errors = {}
        for name, config in (("w8a8", W8A8), ("w4a8", W4A8)):
            qmodel = calibrate(quantize_model(model, config, inplace=False), [x], progress=False)
            out = model_logits(qmodel, x)
            assert torch.isfinite(out).all()
            errors[name] = _rel_err(out, ref)
    assert 0.0 < errors["w8a8"] < 0.06, errors
    assert errors["w4a8"] > errors["w8a8"], errors


def test_gradients_reach_every_parameter(case: Case) -> None:
    model = calibrate(quantize_model(_float_model(case), W4A8), [_images(case)], progress=False)
    model.train()
    logits = model_logits(model, _images(case, n=4, seed=3))
    nn.functional.cross_entropy(logits, torch.arange(4) % 10).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    for name, m in model.named_modules():
        if isinstance(m, (QuantLinear, QuantConv2d)):
            assert m.weight.grad.abs().sum() > 0, name


def test_float_mode_equals_float_model_and_float_weights_reload_strictly(case: Case, tmp_path: Path) -> None:
    """Float-mode logits equal the float model's (the explicit attention is exact); keys unchanged."""
    model = _float_model(case)
    float_keys = set(model.state_dict())
    float_params = {n for n, _ in model.named_parameters()}
    qmodel = calibrate(quantize_model(model, W4A8, inplace=False), [_images(case)], progress=False)
    qstate = qmodel.state_dict()
    assert {n for n, _ in qmodel.named_parameters()} == float_params
    assert {k for k in qstate if not _is_quantizer_key(k)} == float_keys
    assert {k for k in qstate if _is_quantizer_key(k)}  # quantizer ranges are saved too
    weights = {k: v for k, v in qstate.items() if not _is_quantizer_key(k)}

    fresh = _float_model(case, seed=123)
    if case.timm_name is not None:  # timm's strict checkpoint loader, from a safetensors file
        path = tmp_path / "model.safetensors"
        save_file({k: v.contiguous() for k, v in weights.items()}, str(path))
        timm.models.load_checkpoint(fresh, str(path), strict=True)
    else:
        fresh.load_state_dict(weights, strict=True)
    x = _images(case, n=4)
    _weights_enabled(qmodel, False)
    with torch.no_grad(), quant_mode(qmodel, "float"):
        out = model_logits(qmodel, x)
        torch.testing.assert_close(out, model_logits(model, x), rtol=0, atol=1e-5)
        torch.testing.assert_close(model_logits(fresh, x), out, rtol=0, atol=1e-5)


def test_first_and_last_layer_bit_overrides_cover_both_distilled_heads() -> None:
    config = SynQConfig(w_bits=4, a_bits=8, first_layer_bits=8, last_layer_bits=6)
    for key in ("timm_deit_distilled", "hf_deit_teacher"):
        case = CASES[key]
        model = quantize_model(_float_model(case), config)
        assert model.get_submodule(case.first).weight_quantizer.bits == 8
        for head in case.heads:
            m = model.get_submodule(head)
            bits = (m.weight_quantizer.bits, m.input_quantizer.bits, m.output_quantizer.bits)
            assert bits == (6, 6, 6), head
        assert model.get_submodule(case.blocks[0] + ".mlp.fc1").weight_quantizer.bits == 4


def test_exclude_keeps_modules_float() -> None:
    case = CASES["timm_vit"]
    config = SynQConfig(w_bits=4, a_bits=8, exclude=["blocks.0.attn", "head"])
    model = quantize_model(_float_model(case), config)
    attn = model.get_submodule("blocks.0.attn")
    assert type(attn).__name__ == "Attention" and not hasattr(attn, "score_quantizer")
    assert isinstance(attn.qkv, QuantLinear)
    assert type(model.head) is nn.Linear
    x = _images(case, n=2)
    calibrate(model, [x], progress=False)
    assert torch.isfinite(model(x)).all()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"global_pool": "map"}, "attention pooling"),
        ({"block_fn": ParallelScalingBlock}, "ParallelScalingBlock"),
    ],
    ids=["map_pool", "parallel_block"],
)
def test_unsupported_timm_variants_fail_before_changing_the_model(kwargs: dict, match: str) -> None:
    model = timm.create_model("test_vit", pretrained=False, depth=2, **kwargs)
    with pytest.raises(UnsupportedModelError, match=match):
        quantize_model(model, W4A8)
    assert not is_quantized(model)
