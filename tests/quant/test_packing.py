"""Packed integer checkpoints: code packing, exact reload, float layers, size, and format-1 folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from synq_hf import SynQConfig
from synq_hf.apply import ptq
from synq_hf.hub.checkpoint import QUANTIZERS_FILE, WEIGHTS_FILE, load_quantized, save_quantized
from synq_hf.model_info import model_logits
from synq_hf.quant.fake_quant import qrange
from synq_hf.quant.packing import FrozenWeightQuantizer, code_bytes, pack_codes, unpack_codes


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("symmetric", [False, True])
def test_pack_unpack_roundtrip_at_the_true_size(bits: int, symmetric: bool) -> None:
    qmin, qmax = qrange(bits, symmetric)
    codes = torch.randint(qmin, qmax + 1, (7, 3, 3, 3), generator=torch.Generator().manual_seed(bits))
    data = pack_codes(codes, bits, symmetric)
    assert data.dtype in (torch.uint8, torch.int8)
    assert data.numel() == code_bytes(codes.numel(), bits) == -(-codes.numel() * bits // 8)
    assert torch.equal(unpack_codes(data, bits, symmetric, codes.shape), codes.to(torch.int32))


def test_bitpacked_layout_is_the_documented_little_endian_stream() -> None:
    codes = torch.tensor([1, 2, 3, 4, 5, 6, 7, 0, 5])  # 3 bits each, asymmetric (code - qmin = code)
    data = pack_codes(codes, 3, False)
    stream = "".join(f"{int(c):03b}"[::-1] for c in codes)  # least significant bit first
    stream += "0" * (-len(stream) % 8)
    expected = [int(stream[i : i + 8][::-1], 2) for i in range(0, len(stream), 8)]
    assert data.tolist() == expected and len(expected) == 4
    # 4 bits: the bit stream is the uint4x2 nibble layout, byte for byte
    four = torch.randint(0, 16, (11,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(pack_codes(four, 4, False), pack_codes(four, 4, False, container="bitpacked"))


@pytest.mark.parametrize("bits", [2, 3, 6])
def test_format_1_containers_still_unpack(bits: int) -> None:
    """Format 1 kept 2-3-bit codes in nibbles and 5-7-bit codes one per byte; the qmap's container says which."""
    qmin, qmax = qrange(bits, False)
    codes = torch.randint(qmin, qmax + 1, (5, 3), generator=torch.Generator().manual_seed(0))
    legacy = "uint4x2" if bits <= 4 else "uint8"
    data = pack_codes(codes, bits, False, container=legacy)
    assert torch.equal(unpack_codes(data, bits, False, codes.shape, legacy), codes.to(torch.int32))


def _quantized(name: str, config: SynQConfig, size: int) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10).eval()
    x = torch.randn(4, 3, size, size, generator=torch.Generator().manual_seed(1))
    return ptq(model, config, x, progress=False), x


def test_packed_reload_is_exact_and_resaves_identically(tmp_path: Path) -> None:
    q, x = _quantized("test_resnet", SynQConfig(w_bits=4, a_bits=4), 32)
    save_quantized(q, tmp_path / "a", base_model="test_resnet", library="timm")
    loaded = load_quantized(tmp_path / "a").model
    with torch.no_grad():
        assert torch.equal(model_logits(q, x), model_logits(loaded, x))
    assert any(isinstance(m, FrozenWeightQuantizer) for m in loaded.modules())
    save_quantized(loaded, tmp_path / "b", base_model="test_resnet", library="timm")
    a, b = load_file(tmp_path / "a" / WEIGHTS_FILE), load_file(tmp_path / "b" / WEIGHTS_FILE)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_qmap_describes_weights_and_activations(tmp_path: Path) -> None:
    q, _ = _quantized("test_resnet", SynQConfig(w_bits=3, a_bits=4), 32)
    save_quantized(q, tmp_path, base_model="test_resnet", library="timm")
    with safe_open(str(tmp_path / WEIGHTS_FILE), framework="pt") as f:
        qmap = json.loads(f.metadata()["synq_qmap"])
        codes = f.get_tensor("conv1.0.weight_codes")
    entry = qmap["weights"]["conv1.0.weight"]
    assert qmap["format"] == "synq-packed-2"
    assert entry["bits"] == 3 and entry["container"] == "bitpacked" and entry["axis"] == 0
    assert codes.dtype == torch.uint8 and codes.numel() == -(-torch.Size(entry["shape"]).numel() * 3 // 8)
    act = next(iter(qmap["activations"].values()))
    assert act["bits"] == 4 and act["scale"] > 0 and 0 <= act["zero_point"] <= 15


def test_float_layers_stay_float(tmp_path: Path) -> None:
    q, x = _quantized("test_resnet", SynQConfig(w_bits=4, a_bits=4, exclude=("fc",)), 32)
    save_quantized(q, tmp_path, base_model="test_resnet", library="timm")
    tensors = load_file(tmp_path / WEIGHTS_FILE)
    assert tensors["fc.weight"].dtype == torch.float32 and "fc.weight_codes" not in tensors
    assert "conv1.weight" not in tensors and "conv1.0.weight_codes" in tensors
    with torch.no_grad():
        assert torch.equal(model_logits(q, x), model_logits(load_quantized(tmp_path).model, x))


def test_format_1_float_folder_still_loads(tmp_path: Path) -> None:
    """A folder as synq_hf wrote it before packing: real architecture, float weights, format_version 1."""
    # format-1 folders come with version-1 configs, which migrate to min-max ranges (no stored weight ranges)
    q, x = _quantized("test_resnet", SynQConfig(w_bits=4, a_bits=4, act_range_init="minmax",
                                                weight_range_init="minmax"), 32)
    save_quantized(q, tmp_path, base_model="test_resnet", library="timm")
    data = json.loads((tmp_path / "config.json").read_text())
    data["architecture"] = data["synq"].pop("architecture")
    data["synq"]["format_version"] = 1
    (tmp_path / "config.json").write_text(json.dumps(data))
    state = {k: v.contiguous() for k, v in q.state_dict().items() if "quantizer" not in k}
    save_file(state, str(tmp_path / WEIGHTS_FILE), metadata={"format": "pt"})
    loaded = load_quantized(tmp_path).model
    with torch.no_grad():
        assert torch.equal(model_logits(q, x), model_logits(loaded, x))
    assert (tmp_path / QUANTIZERS_FILE).is_file()


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir())


@pytest.mark.smoke
@pytest.mark.parametrize("teacher", ["cifar10-resnet20", "cifar10-vit-tiny"])
def test_packed_w4a4_folder_is_five_times_smaller(teacher: str, shared_data: Path, tmp_path: Path) -> None:
    import synq_hf  # noqa: F401  registers cifar_resnet*

    source = shared_data / "teachers" / teacher
    model = timm.create_model(f"local-dir:{source}", pretrained=True).eval()
    x = torch.randn(8, *model.pretrained_cfg["input_size"], generator=torch.Generator().manual_seed(0))
    q = ptq(model, SynQConfig(w_bits=4, a_bits=4), x, progress=False)
    save_quantized(q, tmp_path / "q", base_model=str(source), library="timm")
    float_dir = tmp_path / "float"
    from timm.models._hub import save_for_hf  # the float folder timm itself writes

    save_for_hf(timm.create_model(f"local-dir:{source}", pretrained=True), str(float_dir), safe_serialization=True)
    assert _folder_bytes(tmp_path / "q") <= 0.2 * _folder_bytes(float_dir)
    loaded = load_quantized(tmp_path / "q").model
    with torch.no_grad():
        assert torch.equal(model_logits(q, x), model_logits(loaded, x))


def _hf_model(kind: str) -> torch.nn.Module:
    from transformers import ResNetConfig, ResNetForImageClassification, ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    if kind == "vit":
        return ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                                   num_attention_heads=2, intermediate_size=64, num_labels=10)).eval()
    return ResNetForImageClassification(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                                     layer_type="basic", num_labels=10)).eval()


HF_DATA_CONFIG = {"input_size": (3, 32, 32), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}


@pytest.mark.parametrize("kind", ["vit", "resnet"])
def test_transformers_folder_is_packed_and_reloads_exactly_both_ways(kind: str, tmp_path: Path) -> None:
    from transformers import AutoModelForImageClassification

    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    q = ptq(_hf_model(kind), SynQConfig(w_bits=4, a_bits=4), x, progress=False)
    save_quantized(q, tmp_path / "q", base_model="tiny", library="transformers", data_config=HF_DATA_CONFIG)
    tensors = load_file(tmp_path / "q" / WEIGHTS_FILE)
    codes = [k for k in tensors if k.endswith(".weight_codes")]
    assert codes and all(tensors[k].dtype == torch.uint8 and k.removesuffix("_codes") not in tensors for k in codes)
    assert json.loads((tmp_path / "q" / "config.json").read_text())["synq"]["format_version"] == 3
    with torch.no_grad():
        expected = model_logits(q, x)
        # synq_hf's loader and transformers' own from_pretrained (the registered HfQuantizer) both unpack the codes
        assert torch.equal(model_logits(load_quantized(tmp_path / "q").model, x), expected)
        hf = AutoModelForImageClassification.from_pretrained(tmp_path / "q").eval()
        assert torch.equal(hf(x).logits, expected)
        assert any(isinstance(m, FrozenWeightQuantizer) for m in hf.modules())
        assert not any(hasattr(m, "weight_codes") for m in hf.modules())  # the load buffers are gone
        # transformers' save_pretrained writes the same packed tensors, and they reload exactly again
        hf.save_pretrained(tmp_path / "hf")
        resaved = load_file(tmp_path / "hf" / WEIGHTS_FILE)
        assert resaved.keys() == tensors.keys() and all(torch.equal(resaved[k], tensors[k]) for k in tensors)
        again = AutoModelForImageClassification.from_pretrained(tmp_path / "hf").eval()
        assert torch.equal(again(x).logits, expected)


def test_transformers_float_folder_from_before_packing_still_loads(tmp_path: Path) -> None:
    """A format-2 transformers folder (float weights, no qmap) migrates: both loaders give the same logits."""
    from transformers import AutoModelForImageClassification

    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    q = ptq(_hf_model("vit"), SynQConfig(w_bits=4, a_bits=8, act_range_init="minmax", weight_range_init="minmax"),
            x, progress=False)
    save_quantized(q, tmp_path, base_model="tiny", library="transformers", data_config=HF_DATA_CONFIG)
    data = json.loads((tmp_path / "config.json").read_text())
    data["synq"]["format_version"] = 2
    (tmp_path / "config.json").write_text(json.dumps(data))
    save_file({k: v.contiguous() for k, v in q.state_dict().items()}, str(tmp_path / WEIGHTS_FILE),
              metadata={"format": "pt"})
    with torch.no_grad():
        expected = model_logits(q, x)
        assert torch.equal(model_logits(load_quantized(tmp_path).model, x), expected)
        assert torch.equal(AutoModelForImageClassification.from_pretrained(tmp_path).eval()(x).logits, expected)
