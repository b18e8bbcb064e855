"""Hub push: one commit with exactly the saved folder, the synthetic dataset linked, clear failures.

The Hub client is replaced at its boundary (``HfApi``); one test talks to the real Hub when a token and
network are present (run it with ``HF_HUB_OFFLINE=0 HF_TOKEN=... pytest tests/test_push.py``)."""

import os
import socket
import uuid
from pathlib import Path
from types import SimpleNamespace

import datasets
import huggingface_hub
import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from huggingface_hub.errors import HfHubHTTPError

from synq_hf import CheckpointError, SynQConfig
from synq_hf.card import render_model_card
from synq_hf.cli import main
from synq_hf.demo import digits as D
from synq_hf.push import HubError, push_folder_to_hub
from synq_hf.quant import ptq
from synq_hf.serialization import load_quantized, save_quantized

REPO = "me/digits-w4a4"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class FakeApi:
    """Records calls like ``HfApi``; snapshots uploaded folders at call time (temp folders vanish after)."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.uploads: list[dict] = []
        self.fail_on = fail_on

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))
        return SimpleNamespace(repo_id=kwargs["repo_id"])

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        if kwargs.get("repo_type") == self.fail_on:
            import httpx2

            response = httpx2.Response(503, request=httpx2.Request("POST", "https://huggingface.co/api/commit"))
            raise HfHubHTTPError("503 Service Unavailable", response=response)
        folder = Path(kwargs["folder_path"])
        files = _files(folder)
        parquet = {name: datasets.Dataset.from_parquet(str(folder / name)) for name in files if name.endswith(".parquet")}
        self.uploads.append({**kwargs, "files": files, "parquet": parquet})
        return SimpleNamespace(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/abc123")


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A saved quantized demo teacher with its card, as save_pretrained leaves it."""
    cfg = SynQConfig(w_bits=4, a_bits=4, calibration_num_images=32).resolve(family="cnn", input_size=16)
    torch.manual_seed(0)
    student = ptq(D.load_demo_teacher(), cfg, torch.randn(32, 3, 16, 16), progress=False)
    base = f"local-dir:{D.demo_teacher_path()}"
    folder = save_quantized(student, tmp_path_factory.mktemp("saved") / "digits-w4a4", base_model=base,
                            library="timm", config=cfg)
    render_model_card(base_model=base, library="timm", synq_config=cfg).save(folder / "README.md")
    return folder


@pytest.fixture
def folder(saved, tmp_path) -> Path:
    """A fresh copy of the saved folder per test (pushing rewrites the card's repo id)."""
    import shutil

    return Path(shutil.copytree(saved, tmp_path / saved.name))


def test_push_uploads_exactly_the_folder_in_one_commit(folder):
    api = FakeApi()
    url = push_folder_to_hub(folder, REPO, private=True, api=api)
    assert url == f"https://huggingface.co/{REPO}/commit/abc123"
    assert [name for name, _ in api.calls] == ["create_repo", "upload_folder"]
    assert api.calls[0][1] == dict(repo_id=REPO, repo_type="model", private=True, exist_ok=True)
    (upload,) = api.uploads
    assert upload["repo_id"] == REPO and upload["repo_type"] == "model" and upload["delete_patterns"] == "*"
    assert upload["files"] == _files(folder)  # exactly the folder, as it is on disk after the push
    assert {"README.md", "config.json", "model.safetensors", "quantizers.safetensors"} == set(upload["files"])
    assert upload["commit_message"] == "Upload digits-w4a4 (synq-hf)"
    card = ModelCard.load(folder / "README.md")
    assert f'load_model("{REPO}")' in card.text and card.data.datasets is None


def test_push_with_dataset_publishes_it_first_and_links_it(folder):
    images = np.random.default_rng(0).integers(0, 255, (6, 8, 8, 3), dtype=np.uint8)
    ds = datasets.Dataset.from_dict(
        {"image": list(images), "label": [0, 1, 2, 3, 4, 5]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)}),
    )
    api = FakeApi()
    push_folder_to_hub(folder, REPO, dataset=ds, api=api)
    assert [(n, kw.get("repo_type")) for n, kw in api.calls] == [
        ("create_repo", "dataset"), ("upload_folder", "dataset"), ("create_repo", "model"), ("upload_folder", "model")
    ]
    data_upload, model_upload = api.uploads
    assert data_upload["repo_id"] == f"{REPO}-synthetic"
    assert set(data_upload["files"]) == {"README.md", "data/train-00000-of-00001.parquet"}
    shard = data_upload["parquet"]["data/train-00000-of-00001.parquet"]
    assert shard.features == ds.features and shard["label"] == ds["label"]
    assert np.array_equal(np.asarray(shard[0]["image"]), images[0])
    card = ModelCard.load(folder / "README.md")
    assert card.data.datasets == [f"{REPO}-synthetic"]
    assert f"(https://huggingface.co/datasets/{REPO}-synthetic)" in card.text
    assert model_upload["files"]["README.md"] == (folder / "README.md").read_bytes()


def test_pushed_synthetic_dataset_card_records_how_it_was_made_without_local_paths(folder):
    from timm.data import resolve_model_data_config

    from synq_hf.synthesis import synthesize

    teacher = D.load_demo_teacher()
    cfg = SynQConfig(synthesis_batch_size=4)
    ds = synthesize(teacher, cfg, data_config=resolve_model_data_config(teacher), num_images=4, iterations=2,
                    teacher_id=f"local-dir:{D.demo_teacher_path()}", progress=False)
    api = FakeApi()
    push_folder_to_hub(folder, REPO, dataset=ds, api=api)
    readme = api.uploads[0]["files"]["README.md"].decode()
    assert "Synthetic images from" in readme and f"(https://huggingface.co/{REPO})" in readme
    assert str(D.demo_teacher_path()) not in readme and "`digits_teacher`" in readme
    assert "data/train-*" in readme  # the Hub finds the parquet shards
    shard = api.uploads[0]["parquet"]["data/train-00000-of-00001.parquet"]
    assert np.array_equal(np.asarray(shard["pixel_values"]), np.asarray(ds["pixel_values"]))


def test_failed_upload_keeps_the_folder_and_says_how_to_retry(folder):
    before = {k: v for k, v in _files(folder).items() if k != "README.md"}
    with pytest.raises(HubError) as err:
        push_folder_to_hub(folder, REPO, private=True, api=FakeApi(fail_on="model"))
    message = str(err.value)
    assert f"synq-hf push {folder} {REPO} --private" in message
    assert "503" in message and "local folder is complete" in message
    assert {k: v for k, v in _files(folder).items() if k != "README.md"} == before
    assert load_quantized(folder).model is not None  # still loads


def test_push_without_a_token_says_how_to_log_in(folder, tmp_path, monkeypatch):
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    with pytest.raises(HubError, match="hf auth login.*HF_TOKEN"):
        push_folder_to_hub(folder, REPO)


def test_push_refuses_what_is_not_a_saved_quantized_model(tmp_path, folder):
    with pytest.raises(CheckpointError, match="not a folder"):
        push_folder_to_hub(tmp_path / "missing", REPO, api=FakeApi())
    (tmp_path / "float").mkdir()
    (tmp_path / "float" / "config.json").write_text('{"architecture": "resnet18"}')
    with pytest.raises(CheckpointError, match="synq"):
        push_folder_to_hub(tmp_path / "float", REPO, api=FakeApi())
    (folder / "README.md").unlink()
    with pytest.raises(CheckpointError, match="README.md"):
        push_folder_to_hub(folder, REPO, api=FakeApi())


def test_cli_push_and_its_failure_message(folder, monkeypatch, capsys):
    api = FakeApi()
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda **kwargs: api)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 34)
    assert main(["push", str(folder), REPO]) == 0
    assert f"https://huggingface.co/{REPO}/commit/abc123" in capsys.readouterr().out
    assert len(api.uploads) == 1 and api.calls[0][1]["private"] is False

    api.fail_on = "model"
    assert main(["push", str(folder), REPO, "--private"]) == 1
    assert f"synq-hf push {folder} {REPO} --private" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["push", "--help"])
    assert "synq-hf push ./resnet20-w4a4 my-user/resnet20-synq-w4a4" in capsys.readouterr().out


def _hub_reachable() -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(
    huggingface_hub.constants.HF_HUB_OFFLINE or not huggingface_hub.get_token() or not _hub_reachable(),
    reason="needs a Hub token, network and HF_HUB_OFFLINE=0",
)
def test_real_hub_round_trip(folder):
    api = huggingface_hub.HfApi()
    repo = f"{api.whoami()['name']}/synq-hf-test-{uuid.uuid4().hex[:8]}"
    try:
        push_folder_to_hub(folder, repo, private=True)
        assert set(api.list_repo_files(repo)) == set(_files(folder)) | {".gitattributes"}
        local = huggingface_hub.snapshot_download(repo)
        x = torch.randn(2, 3, 16, 16)
        with torch.no_grad():
            assert torch.equal(load_quantized(local).model(x), load_quantized(folder).model(x))
    finally:
        api.delete_repo(repo, missing_ok=True)
        assert os.path.isdir(folder)
