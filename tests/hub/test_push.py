"""Hub push: one commit with the saved folder's files, nothing deleted unless asked, the local folder untouched.

The Hub client is replaced at its boundary (``HfApi``); one test talks to the real Hub when a token and
network are present (run it with ``HF_HUB_OFFLINE=0 HF_TOKEN=... pytest tests/hub/test_push.py``)."""

import fnmatch
import io
import json
import os
import socket
import tempfile
import uuid
from pathlib import Path
from types import SimpleNamespace

import datasets
import fsspec
import huggingface_hub
import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from huggingface_hub.errors import HfHubHTTPError

from synq_hf import CheckpointError, ConfigError, SynQConfig
from synq_hf.apply import ptq
from synq_hf.cli import main
from synq_hf.demo import digits as D
from synq_hf.hub.card import CARD_RECORD, render_card_record, save_model_card
from synq_hf.hub.checkpoint import load_quantized, save_quantized
from synq_hf.hub.push import HubError, push_folder_to_hub

REPO = "me/digits-w4a4"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class FakeApi:
    """Records calls like ``HfApi`` and keeps the repos' files, applying ``create_commit``'s operations (what
    ``push_folder_to_hub`` and ``Dataset.push_to_hub`` send): added files are added or replaced, deleted ones go.
    Snapshots uploaded files at call time (temp files vanish). Revisions are recorded, not kept apart. It has no
    ``upload_folder``: a push that went back to it fails here."""

    def __init__(self, fail_on: str | None = None, repos: dict[str, dict[str, bytes]] | None = None) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.uploads: list[dict] = []
        self.fail_on = fail_on
        self.repos = repos or {}  # repo_id -> {path: bytes}
        self._preuploaded: dict[str, bytes] = {}

    def _fail(self, repo_type: str | None) -> None:
        if (repo_type or "model") == self.fail_on:
            import httpx2

            response = httpx2.Response(503, request=httpx2.Request("POST", "https://huggingface.co/api/commit"))
            raise HfHubHTTPError("503 Service Unavailable", response=response)

    def _commit(self, kwargs: dict, files: dict[str, bytes], deleted: list[str]) -> SimpleNamespace:
        repo = self.repos[kwargs["repo_id"]]
        for name in deleted:
            del repo[name]
        repo.update(files)
        parquet = {}
        for name, data in files.items():
            if name.endswith(".parquet"):
                path = Path(tempfile.mkdtemp()) / "shard.parquet"
                path.write_bytes(data)
                parquet[name] = datasets.Dataset.from_parquet(str(path))
        self.uploads.append({**kwargs, "files": files, "parquet": parquet, "deleted": deleted})
        url = f"https://huggingface.co/{kwargs['repo_id']}"
        pr = f"{url}/discussions/1" if kwargs.get("create_pr") else None
        return SimpleNamespace(commit_url=f"{url}/commit/abc123", pr_url=pr,
                               pr_revision="refs/pr/1" if pr else None)

    def create_repo(self, repo_id: str | None = None, **kwargs):
        kwargs = {"repo_id": repo_id or kwargs.pop("repo_id"), **kwargs}
        self.calls.append(("create_repo", kwargs))
        self.repos.setdefault(kwargs["repo_id"], {".gitattributes": b"*.safetensors filter=lfs\n"})
        return SimpleNamespace(repo_id=kwargs["repo_id"])

    def create_branch(self, repo_id: str | None = None, **kwargs):
        self.calls.append(("create_branch", {"repo_id": repo_id or kwargs.pop("repo_id"), **kwargs}))

    def repo_info(self, repo_id: str, **kwargs):
        from huggingface_hub.errors import RepositoryNotFoundError

        if repo_id not in self.repos:
            import httpx2

            response = httpx2.Response(404, request=httpx2.Request("GET", f"https://huggingface.co/api/{repo_id}"))
            raise RepositoryNotFoundError(f"{repo_id} not found", response=response)
        return SimpleNamespace(id=repo_id, sha=f"sha{len(self.uploads)}")

    def list_repo_files(self, repo_id: str, **kwargs):
        self.calls.append(("list_repo_files", {"repo_id": repo_id, **kwargs}))
        return sorted(self.repos[repo_id])

    def preupload_lfs_files(self, repo_id: str, additions: list, **kwargs):
        for op in additions:  # the shard's temp file is deleted right after this call
            self._preuploaded[op.path_in_repo] = Path(op.path_or_fileobj).read_bytes()

    def create_commit(self, repo_id: str, operations: list, **kwargs):
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        kwargs = {"repo_id": repo_id, **kwargs}
        self.calls.append(("create_commit", {**kwargs, "operations": list(operations)}))
        self._fail(kwargs.get("repo_type"))
        files = {}
        for op in operations:
            if isinstance(op, CommitOperationAdd):
                data = self._preuploaded.pop(op.path_in_repo, None)
                files[op.path_in_repo] = data if data is not None else (
                    op.path_or_fileobj if isinstance(op.path_or_fileobj, bytes) else Path(op.path_or_fileobj).read_bytes())
        deleted = [op.path_in_repo for op in operations if isinstance(op, CommitOperationDelete)]
        return self._commit({**kwargs, "operations": list(operations)}, files, deleted)

    def hf_hub_download(self, repo_id: str, filename: str, **kwargs):
        self.calls.append(("hf_hub_download", {"repo_id": repo_id, "filename": filename, **kwargs}))
        path = Path(tempfile.mkdtemp()) / filename
        path.write_bytes(self.repos[repo_id][filename])
        return str(path)

    def upload_file(self, *, path_or_fileobj: bytes, path_in_repo: str, **kwargs):
        self.calls.append(("upload_file", {"path_in_repo": path_in_repo, **kwargs}))
        self._fail(kwargs.get("repo_type"))
        return self._commit(kwargs, {path_in_repo: path_or_fileobj}, []).commit_url


class FakeHubFileSystem(fsspec.AbstractFileSystem):
    """The part of ``HfFileSystem`` that ``Dataset.push_to_hub`` reads (glob, open), over a FakeApi's repos."""

    cachable = False

    def __init__(self, api: FakeApi) -> None:
        super().__init__()
        self.api = api

    def _split(self, path: str) -> tuple[str, dict[str, bytes], str]:
        parts = path.removeprefix("datasets/").split("/")  # user/name@revision/path/in/repo
        repo_id = f"{parts[0]}/{parts[1].split('@', 1)[0]}"
        return "/".join(["datasets", *parts[:2]]), self.api.repos.get(repo_id, {}), "/".join(parts[2:])

    def glob(self, path: str, maxdepth: int | None = None, **kwargs):
        root, repo, pattern = self._split(path)
        found = {f"{root}/{name}": {"name": f"{root}/{name}", "size": len(data), "type": "file"}
                 for name, data in repo.items() if fnmatch.fnmatch(name, pattern)}
        return found if kwargs.get("detail") else sorted(found)

    def _open(self, path: str, mode: str = "rb", **kwargs):
        _, repo, name = self._split(path)
        if name not in repo:
            raise FileNotFoundError(path)
        return io.BytesIO(repo[name])


@pytest.fixture
def hub(monkeypatch) -> FakeApi:
    """One FakeApi behind every Hub client: ``huggingface_hub.HfApi`` and the ``HfApi``/``HfFileSystem`` that
    ``Dataset.push_to_hub`` creates. ``hub.clients`` lists the keywords each client was made with (the token)."""
    import datasets.arrow_dataset as arrow

    api = FakeApi()
    api.clients = []

    def make(*args, **kwargs):
        api.clients.append(kwargs)
        return api

    monkeypatch.setattr(huggingface_hub, "HfApi", make)
    monkeypatch.setattr(arrow, "HfApi", make)
    monkeypatch.setattr(arrow, "HfFileSystem", lambda **kwargs: FakeHubFileSystem(api))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    return api


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A saved quantized demo teacher with its card, as save_pretrained leaves it."""
    cfg = SynQConfig(w_bits=4, a_bits=4, calibration_num_images=32).resolve(family="cnn", input_size=16)
    torch.manual_seed(0)
    student = ptq(D.load_demo_teacher(), cfg, torch.randn(32, 3, 16, 16), progress=False)
    base = f"local-dir:{D.demo_teacher_path()}"
    folder = save_quantized(student, tmp_path_factory.mktemp("saved") / "digits-w4a4", base_model=base,
                            library="timm", config=cfg)
    save_model_card(folder, base_model=base, library="timm", synq_config=cfg, load_id=folder.name)  # as save_pretrained
    return folder


@pytest.fixture
def folder(saved, tmp_path) -> Path:
    """A fresh copy of the saved folder per test."""
    import shutil

    return Path(shutil.copytree(saved, tmp_path / saved.name))


def test_push_uploads_the_folder_in_one_commit_and_leaves_it_untouched(folder):
    from huggingface_hub import CommitOperationAdd

    before = _files(folder)
    api = FakeApi()
    url = push_folder_to_hub(folder, REPO, private=True, api=api)
    assert url == f"https://huggingface.co/{REPO}/commit/abc123"
    assert [name for name, _ in api.calls] == ["create_repo", "create_commit"]  # one commit, no repo listing
    assert api.calls[0][1] == dict(repo_id=REPO, repo_type="model", private=True, exist_ok=True)
    (upload,) = api.uploads
    assert upload["repo_id"] == REPO and upload["repo_type"] == "model" and upload["deleted"] == []
    assert upload["revision"] is None and upload["create_pr"] is False
    assert _files(folder) == before  # the local folder is byte-identical
    assert {k: v for k, v in upload["files"].items() if k != "README.md"} == {k: v for k, v in before.items()
                                                                               if k != "README.md"}
    names = {"README.md", CARD_RECORD, "config.json", "model.safetensors", "quantizers.safetensors"}
    assert names == set(upload["files"])
    assert upload["commit_message"] == "Upload digits-w4a4 (synq-hf)"
    # the operations: every file added by its path in the folder itself (no staging copy), the card from bytes
    ops = {op.path_in_repo: op for op in upload["operations"]}
    assert set(ops) == names and all(isinstance(op, CommitOperationAdd) for op in ops.values())
    assert isinstance(ops["README.md"].path_or_fileobj, bytes)
    for name in names - {"README.md"}:
        assert Path(ops[name].path_or_fileobj) == folder.resolve() / name
    hub_card = upload["files"]["README.md"].decode()  # the Hub's copy of the card names the repo
    assert f'load_model("{REPO}")' in hub_card and f'load_model("{REPO}")' not in before["README.md"].decode()
    record = json.loads(before[CARD_RECORD])  # rendered again from the folder's record, with the repo id as input
    assert hub_card == str(render_card_record(record, repo_id=REPO))
    assert ModelCard(hub_card).data.datasets is None


def test_push_renders_the_card_for_the_repo_not_by_editing_its_text(saved, tmp_path):
    """A folder name with a space: re-rendering names the repo in every line; editing the text would not."""
    import shutil

    folder = Path(shutil.copytree(saved, tmp_path / "my digits"))
    (folder / "README.md").unlink()
    save_model_card(folder, **{**json.loads((saved / CARD_RECORD).read_text())["render_model_card"],
                               "load_id": folder.name})
    api = FakeApi()
    push_folder_to_hub(folder, REPO, api=api)
    hub_card = api.uploads[0]["files"]["README.md"].decode()
    assert f"`synq-hf evaluate {REPO} --data DATA`" in hub_card
    assert f"`synq-hf export {REPO} --format onnx --out model.onnx`" in hub_card
    assert f'load_model("{REPO}")  # a Hub repo id' in hub_card and "my digits" not in hub_card


def test_push_keeps_an_edited_card_and_points_it_at_the_repo(folder):
    card = (folder / "README.md").read_text(encoding="utf-8")
    edited = card.replace("## How to use", "## Notes\n\nTried on my own photos: works well.\n\n## How to use")
    (folder / "README.md").write_text(edited, encoding="utf-8")
    api = FakeApi()
    push_folder_to_hub(folder, REPO, api=api)
    hub_card = api.uploads[0]["files"]["README.md"].decode()
    assert "Tried on my own photos: works well." in hub_card  # the user's edit is kept
    assert f'load_model("{REPO}")  # a Hub repo id' in hub_card and f"synq-hf export {REPO} " in hub_card
    assert (folder / "README.md").read_text(encoding="utf-8") == edited


def test_push_skips_git_and_hub_cache_folders_and_sends_sub_folders(folder):
    for name in (".git/HEAD", ".cache/huggingface/upload/x.lock", "onnx/model.onnx"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x")
    api = FakeApi()
    push_folder_to_hub(folder, REPO, api=api)
    sent = {op.path_in_repo for op in api.uploads[0]["operations"]}
    assert "onnx/model.onnx" in sent and not any(n.startswith((".git", ".cache")) for n in sent)


def test_push_into_a_repo_with_other_files_deletes_nothing(folder):
    before = _files(folder)
    api = FakeApi(repos={REPO: {".gitattributes": b"", "other.bin": b"a colleague's upload",
                                "README.md": b"an edited README"}})
    push_folder_to_hub(folder, REPO, api=api)
    assert api.uploads[0]["deleted"] == [] and "list_repo_files" not in [name for name, _ in api.calls]
    repo = api.repos[REPO]
    assert repo["other.bin"] == b"a colleague's upload"  # still there
    assert repo["README.md"] == api.uploads[0]["files"]["README.md"]  # same name: replaced by the new card
    assert set(repo) == set(before) | {".gitattributes", "other.bin"}
    assert _files(folder) == before


@pytest.mark.parametrize("patterns,gone", [("*", ["other.bin", "sub/old.onnx"]), (["*.onnx"], ["sub/old.onnx"])])
def test_delete_patterns_send_the_delete(folder, patterns, gone):
    from huggingface_hub import CommitOperationDelete

    api = FakeApi(repos={REPO: {".gitattributes": b"", "other.bin": b"x", "sub/old.onnx": b"y"}})
    api.repos[REPO]["config.json"] = b"{}"  # matches "*" but is sent: replaced, not deleted
    push_folder_to_hub(folder, REPO, delete_patterns=patterns, api=api)
    (upload,) = api.uploads
    assert upload["deleted"] == gone and ".gitattributes" in api.repos[REPO]
    assert all(name not in api.repos[REPO] for name in gone)
    deletes = [op for op in upload["operations"] if isinstance(op, CommitOperationDelete)]
    assert [op.path_in_repo for op in deletes] == gone and upload["operations"][:len(gone)] == deletes  # same commit
    assert api.repos[REPO]["config.json"] == (folder / "config.json").read_bytes()
    listed = [kw for name, kw in api.calls if name == "list_repo_files"]
    assert listed == [dict(repo_id=REPO, repo_type="model", revision=None)]
    push_folder_to_hub(folder, REPO, delete_patterns=patterns, create_pr=True, api=api)
    assert [kw for name, kw in api.calls if name == "list_repo_files"][-1]["revision"] == "main"  # the PR's base


def test_commit_message_revision_create_pr_and_token_reach_the_upload(folder, monkeypatch):
    api = FakeApi()
    made: list[dict] = []
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda **kwargs: made.append(kwargs) or api)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    push_folder_to_hub(folder, REPO, token="hf_t", commit_message="Re-run", revision="v2")
    assert made[0]["token"] == "hf_t"
    assert api.calls[1] == ("create_branch", dict(repo_id=REPO, repo_type="model", branch="v2", exist_ok=True))
    upload = api.uploads[-1]
    assert (upload["commit_message"], upload["revision"], upload["create_pr"]) == ("Re-run", "v2", False)
    url = push_folder_to_hub(folder, REPO, token="hf_t", create_pr=True)
    assert url == f"https://huggingface.co/{REPO}/discussions/1" and api.uploads[-1]["create_pr"] is True
    assert [name for name, _ in api.calls].count("create_branch") == 1  # a PR needs no branch
    with pytest.raises(ConfigError, match="pull request against the default branch"):
        push_folder_to_hub(folder, REPO, create_pr=True, revision="v2", api=api)


def _writes(api: FakeApi) -> list[tuple[str, str | None]]:
    return [(n, kw.get("repo_type")) for n, kw in api.calls if n in ("create_commit", "upload_file")]


def test_push_with_dataset_publishes_it_first_and_links_it(folder, hub):
    images = np.random.default_rng(0).integers(0, 255, (6, 8, 8, 3), dtype=np.uint8)
    ds = datasets.Dataset.from_dict(
        {"image": list(images), "label": [0, 1, 2, 3, 4, 5]},
        features=datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)}),
    )
    before = _files(folder)
    stale = "data/train-00001-of-00002.parquet"  # from an earlier, larger push: it would join the split
    hub.repos[f"{REPO}-synthetic"] = {".gitattributes": b"", stale: b"old", "notes.md": b"keep me"}
    push_folder_to_hub(folder, REPO, dataset=ds, api=hub)
    # the dataset by Dataset.push_to_hub (data + card), then its card; then the model
    assert _writes(hub) == [("create_commit", "dataset"), ("upload_file", "dataset"), ("create_commit", "model")]
    data_upload, card_upload, model_upload = hub.uploads
    assert data_upload["repo_id"] == card_upload["repo_id"] == f"{REPO}-synthetic"
    assert set(data_upload["files"]) == {"README.md", "data/train-00000-of-00001.parquet"}
    repo = hub.repos[f"{REPO}-synthetic"]
    assert data_upload["deleted"] == [stale] and stale not in repo and repo["notes.md"] == b"keep me"
    shard = data_upload["parquet"]["data/train-00000-of-00001.parquet"]
    assert shard.features == ds.features and shard["label"] == ds["label"]
    assert np.array_equal(np.asarray(shard[0]["image"]), images[0])
    assert f"(https://huggingface.co/{REPO})" in repo["README.md"].decode()  # the dataset card links back
    card = ModelCard(model_upload["files"]["README.md"].decode())
    assert card.data.datasets == [f"{REPO}-synthetic"]
    assert f"(https://huggingface.co/datasets/{REPO}-synthetic)" in card.text
    assert _files(folder) == before


def test_pushed_synthetic_dataset_card_records_how_it_was_made_without_local_paths(folder, hub):
    from timm.data import resolve_model_data_config

    from synq_hf.synthesis import synthesize

    teacher = D.load_demo_teacher()
    cfg = SynQConfig(synthesis_batch_size=4)
    ds = synthesize(teacher, cfg, data_config=resolve_model_data_config(teacher), num_images=4, iterations=2,
                    teacher_id=f"local-dir:{D.demo_teacher_path()}", progress=False)
    push_folder_to_hub(folder, REPO, dataset=ds, api=hub)
    readme = hub.repos[f"{REPO}-synthetic"]["README.md"].decode()
    assert "Synthetic images from" in readme and f"(https://huggingface.co/{REPO})" in readme
    assert str(D.demo_teacher_path()) not in readme and "`digits_teacher`" in readme
    assert "data/train-*" in readme and "dataset_info" in readme  # push_to_hub's YAML is kept: the Hub finds the shards
    shard = hub.uploads[0]["parquet"]["data/train-00000-of-00001.parquet"]
    assert np.array_equal(np.asarray(shard["pixel_values"]), np.asarray(ds["pixel_values"]))


def test_failed_dataset_upload_says_how_to_retry(folder, hub):
    hub.fail_on = "dataset"
    ds = datasets.Dataset.from_dict({"pixel_values": [[[[0.0]]]], "label": [0]})
    with pytest.raises(HubError, match="(?s)uploading the synthetic dataset.*503.*local folder is complete"):
        push_folder_to_hub(folder, REPO, dataset=ds, api=hub)
    assert _writes(hub) == [("create_commit", "dataset")]  # the model was not pushed without its data


def test_failed_upload_keeps_the_folder_and_says_how_to_retry(folder):
    before = _files(folder)
    with pytest.raises(HubError) as err:
        push_folder_to_hub(folder, REPO, private=True, revision="v2", delete_patterns="*.onnx",
                           api=FakeApi(fail_on="model"))
    message = str(err.value)
    assert f"synq-hf push {REPO} {folder} --private --revision v2 --delete '*.onnx'" in message
    assert "503" in message and "local folder is complete" in message
    assert _files(folder) == before
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
    assert main(["push", REPO, str(folder)]) == 0  # hf upload's order: REPO_ID LOCAL_DIR
    captured = capsys.readouterr()
    assert f"https://huggingface.co/{REPO}/commit/abc123" in captured.out and "deprecated" not in captured.err
    assert len(api.uploads) == 1 and api.calls[0][1]["private"] is False
    assert api.uploads[0]["deleted"] == []

    assert main(["push", str(folder), REPO]) == 0  # the old order still works, with one warning line
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "deprecated" in err and f"synq-hf push {REPO} {folder}" in err
    assert api.uploads[-1]["repo_id"] == REPO

    api.repos[REPO]["stale.bin"] = b"x"
    assert main(["push", REPO, str(folder), "--commit-message", "Re-run", "--revision", "v2",
                 "--delete-existing"]) == 0
    upload = api.uploads[-1]
    assert (upload["commit_message"], upload["revision"], upload["deleted"]) == ("Re-run", "v2", ["stale.bin"])
    api.repos[REPO].update({"a.onnx": b"", "old/x": b"", "keep.txt": b""})
    assert main(["push", REPO, str(folder), "--create-pr", "--delete", "*.onnx", "--delete", "old/*"]) == 0
    assert api.uploads[-1]["create_pr"] is True and api.uploads[-1]["deleted"] == ["a.onnx", "old/x"]
    assert f"pull request: https://huggingface.co/{REPO}/discussions/1" in capsys.readouterr().out

    monkeypatch.chdir(folder)  # LOCAL_DIR defaults to the current folder, as in hf upload
    assert main(["push", REPO]) == 0 and api.uploads[-1]["files"]["config.json"] == (folder / "config.json").read_bytes()

    api.fail_on = "model"
    assert main(["push", REPO, str(folder), "--private"]) == 1
    assert f"synq-hf push {REPO} {folder} --private" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["push", "--help"])
    assert "synq-hf push my-user/resnet20-synq-w4a4 ./resnet20-w4a4" in capsys.readouterr().out


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


def test_push_synthetic_dataset_passes_revision_pr_and_message(hub):
    from timm.data import resolve_model_data_config

    from synq_hf.synthesis import push_synthetic_dataset, synthesize

    teacher = D.load_demo_teacher()
    ds = synthesize(teacher, SynQConfig(synthesis_batch_size=4), data_config=resolve_model_data_config(teacher),
                    num_images=4, iterations=1, teacher_id="digits", progress=False)
    url = push_synthetic_dataset(ds, "me/syn", token="t", commit_message="m", create_pr=True)
    assert url == "https://huggingface.co/me/syn/discussions/1"
    assert hub.clients and all(kw["token"] == "t" for kw in hub.clients)
    data, card = (kw for n, kw in hub.calls if n in ("create_commit", "upload_file"))
    assert (data["commit_message"], data["create_pr"], data["revision"]) == ("m", True, None)
    get = next(kw for n, kw in hub.calls if n == "hf_hub_download")
    assert get["revision"] == card["revision"] == "refs/pr/1"  # the card goes into the same pull request
    assert "Synthetic images from `digits`" in hub.repos["me/syn"]["README.md"].decode()

    hub.calls.clear()
    assert push_synthetic_dataset(ds, "me/syn", revision="v2") == "https://huggingface.co/me/syn/commit/abc123"
    assert ("create_branch", {"repo_id": "me/syn", "branch": "v2", "repo_type": "dataset", "exist_ok": True}) in hub.calls
    assert [kw["revision"] for n, kw in hub.calls if n in ("create_commit", "upload_file")] == ["v2", "v2"]


def test_cli_synthesize_push_to_hub_publishes_through_the_same_function(hub, tmp_path, capsys):
    args = ["synthesize", f"local-dir:{D.demo_teacher_path()}", "--out", str(tmp_path / "syn"), "--num-images", "4",
            "--synthesis-batch-size", "4", "--synthesis-iterations", "1", "--no-progress", "--token", "t"]
    hub.repos["me/syn"] = {".gitattributes": b"", "notes.md": b"keep me"}
    assert main([*args, "--push-to-hub", "me/syn"]) == 0
    assert "pushed to https://huggingface.co/me/syn/commit/abc123" in capsys.readouterr().out
    repo = hub.repos["me/syn"]
    assert repo["notes.md"] == b"keep me" and "data/train-00000-of-00001.parquet" in repo
    assert "Synthetic images from `digits_teacher`" in repo["README.md"].decode()
    assert all(kw["token"] == "t" for kw in hub.clients)
    pushed = hub.uploads[0]["parquet"]["data/train-00000-of-00001.parquet"]
    assert np.array_equal(np.asarray(pushed["pixel_values"]), np.asarray(datasets.load_from_disk(str(tmp_path / "syn"))["pixel_values"]))

    bad = [a if a != str(tmp_path / "syn") else str(tmp_path / "never") for a in args]
    assert main([*bad, "--push-to-hub", "not a repo"]) == 1  # refused before any work
    assert "not a valid Hub repo id" in capsys.readouterr().err and not (tmp_path / "never").exists()
    hub.fail_on = "dataset"
    assert main([*args, "--overwrite", "--push-to-hub", "me/syn"]) == 1
    err = capsys.readouterr().err
    assert "503" in err and f"dataset folder {tmp_path / 'syn'} is complete" in err and "push_synthetic_dataset" in err
