"""Model id resolution and loading: timm/transformers folders, Hub errors offline, corrupt checkpoints."""

import json
import sys
import types
from pathlib import Path

import pytest
import timm
import torch
from timm.models import save_for_hf
from torch import nn

import synq_hf
from synq_hf.errors import CheckpointError, ModelLoadError, UnsupportedModelError
from synq_hf.hub.loading import (
    ResolvedId,
    detect_family,
    load_model,
    resolve_model_id,
    transformers_data_config,
)
from synq_hf.model_info import model_logits
from synq_hf.pipeline import LoadedModel

CIFAR_LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# -- resolution ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model_id,source,target,hf_hub_id",
    [
        ("resnet50", "timm", "resnet50.a1_in1k", "timm/resnet50.a1_in1k"),
        ("resnet50.tv_in1k", "timm", "resnet50.tv_in1k", "timm/resnet50.tv_in1k"),
        ("timm/resnet50", "timm", "resnet50.a1_in1k", "timm/resnet50.a1_in1k"),
        ("timm/resnet50.tv_in1k", "timm", "resnet50.tv_in1k", "timm/resnet50.tv_in1k"),
        (
            "timm/some_future_model.new_tag",
            "hub",
            "timm/some_future_model.new_tag",
            "timm/some_future_model.new_tag",
        ),
        ("hf-hub:timm/resnet18.a1_in1k", "hub", "timm/resnet18.a1_in1k", "timm/resnet18.a1_in1k"),
        ("google/vit-base-patch16-224", "hub", "google/vit-base-patch16-224", "google/vit-base-patch16-224"),
        (
            "facebook/deit-tiny-patch16-224",
            "hub",
            "facebook/deit-tiny-patch16-224",
            "facebook/deit-tiny-patch16-224",
        ),
        ("cifar_resnet20", "timm", "cifar_resnet20", None),
    ],
)
def test_resolve_names(model_id: str, source: str, target: str, hf_hub_id: str | None) -> None:
    assert resolve_model_id(model_id) == ResolvedId(source, target, model_id, hf_hub_id)


def test_resolve_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_model_id(f"local-dir:{tmp_path}") == ResolvedId(
        "local", str(tmp_path.resolve()), f"local-dir:{tmp_path}"
    )
    assert resolve_model_id(str(tmp_path)).source == "local"
    (tmp_path / "my_model").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_model_id("my_model") == ResolvedId("local", str(tmp_path / "my_model"), "my_model")


@pytest.mark.parametrize(
    "model_id,match",
    [
        ("", "empty model id"),
        ("not a model!", "cannot interpret"),
        ("./no/such/dir/here", "cannot interpret"),
        ("local-dir:/no/such/folder", "does not exist"),
        ("hf-hub:not a repo", "hf-hub:ORG/REPO"),
        ("resnet5000", "Did you mean: resnet50"),
        ("timm/resnet5000", "Did you mean: resnet50"),
        ("resnet50.no_such_tag", "no pretrained tag 'no_such_tag'.*resnet50.a1_in1k"),
    ],
)
def test_resolve_errors(model_id: str, match: str) -> None:
    with pytest.raises(ModelLoadError, match=match):
        resolve_model_id(model_id)


# -- Hub errors (HF_HUB_OFFLINE=1 from conftest) ----------------------------------------------------


@pytest.mark.parametrize(
    "model_id", ["synq-hf-tests/no-such-repo", "hf-hub:synq-hf-tests/no-such-repo", "test_resnet"]
)
def test_offline_hub_error_explains_local_use(model_id: str) -> None:
    with pytest.raises(ModelLoadError) as info:
        load_model(model_id)
    text = str(info.value)
    assert "local-dir:PATH" in text and "save_pretrained" in text and "HF_HUB_OFFLINE" in text


def test_registry_name_without_weights() -> None:
    with pytest.raises(ModelLoadError, match="no pretrained weights"):
        load_model("cifar_resnet20")


# -- timm folders -----------------------------------------------------------------------------------


def _timm_folder(tmp_path: Path, name: str, **config) -> tuple[Path, nn.Module]:
    torch.manual_seed(0)
    model = timm.create_model(name).eval()
    folder = tmp_path / name
    save_for_hf(model, str(folder), model_config=config or None, safe_serialization=True)
    return folder, model


@pytest.mark.parametrize("name,family", [("test_resnet", "cnn"), ("test_vit", "vit")])
def test_load_timm_folder(tmp_path: Path, name: str, family: str) -> None:
    folder, ref = _timm_folder(tmp_path, name)
    for model_id in (f"local-dir:{folder}", str(folder)):
        lm = load_model(model_id)
        assert isinstance(lm, LoadedModel) and lm.library == "timm" and lm.family == family
        assert lm.model_id == model_id and not lm.model.training and lm.num_classes == ref.num_classes
        assert lm.data_config["input_size"] == tuple(ref.pretrained_cfg["input_size"])
        assert len(lm.data_config["mean"]) == 3 and lm.data_config["crop_pct"] > 0
        x = torch.randn(2, *lm.data_config["input_size"])
        torch.testing.assert_close(model_logits(lm.model, x), ref(x))


def test_timm_folder_label_names_and_num_classes(tmp_path: Path) -> None:
    model = synq_hf.models.cifar_resnet20()
    folder = tmp_path / "cifar"
    save_for_hf(model, str(folder), model_config={"label_names": CIFAR_LABELS}, safe_serialization=True)
    lm = load_model(str(folder))
    assert lm.class_names == CIFAR_LABELS and lm.num_classes == 10 and lm.input_size == 32
    assert load_model(str(folder), num_classes=4).model(torch.zeros(1, 3, 32, 32)).shape == (1, 4)


def test_timm_unknown_architecture(tmp_path: Path) -> None:
    folder, _ = _timm_folder(tmp_path, "test_resnet")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["architecture"] = "no_such_arch"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="no_such_arch"):
        load_model(str(folder))


@pytest.mark.parametrize("cut", [4, 100, 5000])
def test_truncated_safetensors(tmp_path: Path, cut: int) -> None:
    folder, _ = _timm_folder(tmp_path, "test_resnet")
    weights = folder / "model.safetensors"
    weights.write_bytes(
        weights.read_bytes()[: weights.stat().st_size - cut] if cut > 4 else b"\x01\x02\x03\x04"
    )
    with pytest.raises(CheckpointError, match="safetensors|truncated"):
        load_model(str(folder))


def test_config_without_weights(tmp_path: Path) -> None:
    folder, _ = _timm_folder(tmp_path, "test_resnet")
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights.*config.json"):
        load_model(f"local-dir:{folder}")


def test_not_a_model_folder(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "images").mkdir()
    with pytest.raises(ModelLoadError, match=r"not a model folder.*images/, notes\.txt.*config\.json"):
        load_model(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(ModelLoadError, match="'architecture'.*'model_type'.*hello"):
        load_model(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="config.json"):
        load_model(str(tmp_path))


def test_synq_folder_is_delegated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    fake = types.ModuleType("synq_hf.hub.checkpoint")
    fake.load_quantized = lambda path: calls.append(Path(path)) or "quantized"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "synq_hf.hub.checkpoint", fake)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "config.json").write_text(
        json.dumps({"architecture": "test_resnet", "synq": {"w_bits": 4}})
    )
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "config.json").write_text(
        json.dumps({"model_type": "vit", "quantization_config": {"quant_method": "synq"}})
    )
    assert load_model(str(tmp_path / "a")) == "quantized" and load_model(str(tmp_path / "b")) == "quantized"
    assert calls == [(tmp_path / "a").resolve(), (tmp_path / "b").resolve()]


# -- transformers folders ---------------------------------------------------------------------------


def _hf_folder(tmp_path: Path, kind: str, processor: bool = True) -> tuple[Path, nn.Module]:
    import transformers as tf

    torch.manual_seed(0)
    common = dict(image_size=32, num_labels=10)
    if kind == "vit":
        cfg = tf.ViTConfig(
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            **common,
        )
        model = tf.ViTForImageClassification(cfg)
    elif kind == "deit":
        cfg = tf.DeiTConfig(
            patch_size=8,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            **common,
        )
        model = tf.DeiTForImageClassification(cfg)
    elif kind == "swin":
        cfg = tf.SwinConfig(
            patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4, **common
        )
        model = tf.SwinForImageClassification(cfg)
    else:
        cfg = tf.ResNetConfig(
            embedding_size=8,
            hidden_sizes=[8, 16],
            depths=[1, 1],
            layer_type="basic",
            num_labels=10,
            id2label={i: n for i, n in enumerate(CIFAR_LABELS)},
        )
        model = tf.ResNetForImageClassification(cfg)
    folder = tmp_path / kind
    model.eval().save_pretrained(folder)
    if processor:
        tf.ViTImageProcessor(
            size={"height": 32, "width": 32},
            image_mean=[0.5, 0.4, 0.3],
            image_std=[0.2, 0.2, 0.2],
            resample=3,
        ).save_pretrained(folder)
    return folder, model


@pytest.mark.parametrize(
    "kind,family", [("vit", "vit"), ("deit", "vit"), ("swin", "swin"), ("resnet", "cnn")]
)
def test_load_transformers_folder(tmp_path: Path, kind: str, family: str) -> None:
    folder, ref = _hf_folder(tmp_path, kind)
    lm = load_model(str(folder))
    assert lm.library == "transformers" and lm.family == family and lm.num_classes == 10
    processor = lm.data_config.pop("image_processor")  # evaluation preprocesses with the processor itself
    assert processor == json.loads((folder / "preprocessor_config.json").read_text())
    assert lm.data_config == {
        "input_size": (3, 32, 32),
        "mean": (0.5, 0.4, 0.3),
        "std": (0.2, 0.2, 0.2),
        "interpolation": "bicubic",
        "crop_pct": 1.0,
        "crop_mode": "squash",
    }
    assert lm.class_names == (CIFAR_LABELS if kind == "resnet" else None)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model_logits(lm.model, x), ref(x).logits)
    assert next(lm.model.parameters()).dtype == torch.float32


def test_transformers_num_classes_override(tmp_path: Path) -> None:
    folder, _ = _hf_folder(tmp_path, "vit")
    lm = load_model(str(folder), num_classes=3)
    assert lm.num_classes == 3 and model_logits(lm.model, torch.zeros(1, 3, 32, 32)).shape == (1, 3)


def test_transformers_without_processor(tmp_path: Path) -> None:
    folder, _ = _hf_folder(tmp_path, "vit", processor=False)
    with pytest.raises(ModelLoadError, match="preprocessor_config.json"):
        load_model(str(folder))


def test_transformers_truncated_safetensors(tmp_path: Path) -> None:
    folder, _ = _hf_folder(tmp_path, "vit")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(str(folder))


def test_remote_code_refused(tmp_path: Path) -> None:
    folder, _ = _hf_folder(tmp_path, "vit")
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(model_type="my_custom_vit", auto_map={"AutoModelForImageClassification": "modeling.MyViT"})
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="trust_remote_code"):
        load_model(str(folder))


def test_transformers_data_config_with_crop() -> None:
    cfg = transformers_data_config(
        {
            "size": {"shortest_edge": 256},
            "crop_size": {"height": 224, "width": 224},
            "do_center_crop": True,
            "image_mean": [0.485, 0.456, 0.406],
            "image_std": [0.229, 0.224, 0.225],
            "resample": 2,
        }
    )
    assert cfg["input_size"] == (3, 224, 224) and cfg["crop_pct"] == pytest.approx(0.875)
    assert cfg["interpolation"] == "bilinear" and cfg["crop_mode"] == "center"
    convnext = transformers_data_config(
        {"size": {"shortest_edge": 224}, "crop_pct": 0.875, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    )
    assert convnext["input_size"] == (3, 224, 224) and convnext["crop_pct"] == 0.875
    assert convnext["crop_mode"] == "center"


def test_detect_family_unsupported() -> None:
    assert detect_family(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))) == "cnn"
    with pytest.raises(UnsupportedModelError, match="supported are:.*ViT/DeiT.*Swin.*BatchNorm CNNs"):
        detect_family(nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)))


@pytest.mark.smoke
def test_shared_teacher_metadata(shared_data: Path) -> None:
    lm = load_model(f"local-dir:{shared_data / 'teachers' / 'cifar10-resnet56'}")
    assert lm.family == "cnn" and lm.class_names == CIFAR_LABELS and lm.input_size == 32
    assert lm.data_config["crop_pct"] == 1.0 and lm.data_config["interpolation"] == "bilinear"


@pytest.mark.parametrize(
    ("error", "message"),
    [("GatedRepoError", "gated"), ("RepositoryNotFoundError", "does not exist or is private")],
)
def test_missing_or_gated_hub_repo_is_explained(error: str, message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Hub client is replaced at its boundary: its real error types must become one clear ModelLoadError."""
    from huggingface_hub import errors as hf_errors

    response = types.SimpleNamespace(headers={}, status_code=403 if error == "GatedRepoError" else 404,
                                     url="https://huggingface.co/org/model", request=None, text="", content=b"")

    def fake_download(*args: object, **kwargs: object) -> str:
        raise getattr(hf_errors, error)("refused", response=response)

    monkeypatch.setattr("huggingface_hub.hf_hub_download", fake_download)
    with pytest.raises(ModelLoadError, match=message) as info:
        load_model("org/model")
    assert "local-dir:" in str(info.value)


# -- Hub download options (the Hub client replaced at its boundary) ---------------------------------

HUB_OPTIONS = dict(revision="abc", token="t", cache_dir="/tmp/synq-cache", local_files_only=True)


class FakeHub:
    """``hf_hub_download``/``snapshot_download`` serving a local folder and recording every call."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.calls = folder, []

    def download(self, repo_id: str, filename: str, **kwargs: object) -> str:
        from huggingface_hub.errors import EntryNotFoundError

        self.calls.append(("hf_hub_download", repo_id, filename, kwargs))
        if not (self.folder / filename).is_file():
            raise EntryNotFoundError(f"{filename} not in {repo_id}")
        return str(self.folder / filename)

    def snapshot(self, repo_id: str, **kwargs: object) -> str:
        self.calls.append(("snapshot_download", repo_id, None, kwargs))
        return str(self.folder)

    def install(self, monkeypatch: pytest.MonkeyPatch) -> "FakeHub":
        monkeypatch.setattr("huggingface_hub.hf_hub_download", self.download)
        monkeypatch.setattr("huggingface_hub.snapshot_download", self.snapshot)
        return self

    def assert_options(self, **expected: object) -> None:
        assert self.calls and all(kwargs == expected for *_, kwargs in self.calls), self.calls


def test_hub_timm_repo_gets_revision_token_cache_dir_and_local_files_only(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    folder, ref = _timm_folder(tmp_path, "test_resnet")
    hub = FakeHub(folder).install(monkeypatch)
    lm = load_model("org/tiny-timm", **HUB_OPTIONS)
    hub.assert_options(**HUB_OPTIONS)
    assert [(c[1], c[2]) for c in hub.calls] == [("org/tiny-timm", "config.json"), ("org/tiny-timm", "model.safetensors")]
    assert lm.library == "timm" and lm.model.pretrained_cfg["hf_hub_id"] == "org/tiny-timm"
    x = torch.randn(2, *lm.data_config["input_size"])
    torch.testing.assert_close(model_logits(lm.model, x), ref(x))


def test_timm_registry_weights_are_downloaded_with_the_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, ref = _timm_folder(tmp_path, "test_resnet")
    (folder / "model.safetensors").unlink()
    torch.save(ref.state_dict(), folder / "pytorch_model.bin")  # only .bin: the fallback is taken
    hub = FakeHub(folder).install(monkeypatch)
    lm = load_model("test_resnet", revision="abc", token="t")
    hub.assert_options(revision="abc", token="t")
    repo = resolve_model_id("test_resnet").hf_hub_id
    assert [(c[1], c[2]) for c in hub.calls] == [(repo, "model.safetensors"), (repo, "pytorch_model.bin")]
    x = torch.randn(2, *lm.data_config["input_size"])
    torch.testing.assert_close(model_logits(lm.model, x), ref(x))


def test_hub_transformers_repo_passes_the_options_to_from_pretrained(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    folder, _ = _hf_folder(tmp_path, "resnet")
    hub = FakeHub(folder).install(monkeypatch)
    seen: list[tuple[str, dict]] = []
    real = transformers.AutoModelForImageClassification.from_pretrained

    def from_pretrained(source: str, **kwargs: object):
        seen.append((source, kwargs))
        local = {k: v for k, v in kwargs.items() if k not in HUB_OPTIONS}
        return real(str(folder), **local)

    monkeypatch.setattr(transformers.AutoModelForImageClassification, "from_pretrained", from_pretrained)
    lm = load_model("org/tiny-resnet", **HUB_OPTIONS)
    hub.assert_options(**HUB_OPTIONS)
    assert [c[2] for c in hub.calls] == ["config.json", "preprocessor_config.json"]
    ((source, kwargs),) = seen
    assert source == "org/tiny-resnet" and {k: kwargs[k] for k in HUB_OPTIONS} == HUB_OPTIONS
    assert lm.library == "transformers" and lm.class_names == CIFAR_LABELS


def test_hub_quantized_repo_snapshot_gets_the_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    fake = types.ModuleType("synq_hf.hub.checkpoint")
    fake.load_quantized = lambda path: calls.append(Path(path)) or "quantized"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "synq_hf.hub.checkpoint", fake)
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "test_resnet", "synq": {"w_bits": 4}}))
    hub = FakeHub(tmp_path).install(monkeypatch)
    assert load_model("org/quantized", revision="abc", token="t") == "quantized"
    hub.assert_options(revision="abc", token="t")
    assert [c[0] for c in hub.calls] == ["hf_hub_download", "snapshot_download"] and calls == [tmp_path]


def test_quantizer_from_pretrained_reaches_the_downloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from synq_hf import SynQQuantizer

    folder, _ = _timm_folder(tmp_path, "test_resnet")
    hub = FakeHub(folder).install(monkeypatch)
    q = SynQQuantizer.from_pretrained("org/tiny-timm", revision="abc", token="t", device="cpu")
    hub.assert_options(revision="abc", token="t")
    assert q.teacher.model_id == "org/tiny-timm"


def test_local_files_only_miss_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # what HF_HUB_OFFLINE=0 sets

    def missing(*args: object, **kwargs: object) -> str:
        raise LocalEntryNotFoundError("not cached")

    monkeypatch.setattr("huggingface_hub.hf_hub_download", missing)
    with pytest.raises(ModelLoadError, match="local_files_only is set and the files are not in the local"):
        load_model("org/model", local_files_only=True)


def test_cli_revision_and_token_reach_load_model(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from synq_hf.cli import main

    seen: list[dict] = []

    def fake_load(model_id: str, **kwargs: object) -> LoadedModel:
        seen.append(kwargs)
        raise ModelLoadError("stop here")

    monkeypatch.setattr("synq_hf.hub.loading.load_model", fake_load)
    for argv in (["evaluate", "org/m", "--data", str(tmp_path)], ["export", "org/m", "--out", str(tmp_path / "m.onnx")],
                 ["synthesize", "org/m", "--out", str(tmp_path / "s")], ["quantize", "org/m", "--out", str(tmp_path / "q"),
                                                                         "--w-bits", "4", "--a-bits", "4"]):
        assert main([*argv, "--revision", "abc", "--token", "t"]) == 1, argv
        assert seen[-1]["revision"] == "abc" and seen[-1]["token"] == "t", argv
    assert len(seen) == 4
