"""Publish a saved quantized model on the Hugging Face Hub: the folder's files, in one commit.

:func:`push_folder_to_hub` sends what ``save_pretrained`` wrote (weights, ``config.json``, the ``README.md`` card)
with a single ``HfApi.create_commit``: each file of the folder is a ``CommitOperationAdd`` of its path (the
folder's files as ``upload_folder`` lists them, ``.git`` and ``.cache/huggingface`` left out by the same
``filter_repo_objects`` patterns) and the card is added from bytes: re-rendered for the repo id by
:func:`synq_hf.hub.card.card_for_hub`. Like ``hf upload`` and ``push_to_hub`` in transformers, it deletes nothing in the
repo unless asked (``delete_patterns``: a ``CommitOperationDelete`` in the same commit for each matching repo file,
``.gitattributes`` and the files being sent excepted), and it never modifies the local folder nor writes anything
else to disk. Optionally the synthetic images go first to a dataset repo ``<repo>-synthetic`` linked from the card,
published by the function ``synq_hf.synthesis.push_synthetic_dataset`` (``Dataset.push_to_hub`` and the dataset
card). Every Hub failure becomes a :class:`HubError` that says the local folder is intact and how to retry.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ConfigError, DataError, SynQError
from .card import card_for_hub

__all__ = ["HubError", "SYNTHETIC_SUFFIX", "check_can_push", "push_folder_to_hub", "retry_command"]

SYNTHETIC_SUFFIX = "-synthetic"
"""The synthetic dataset of ``user/model`` goes to the dataset repo ``user/model-synthetic``."""
_NO_TOKEN = (
    "no Hugging Face token found: log in with `hf auth login`, set the HF_TOKEN environment variable, "
    "or pass --token (token=) with a write token from https://huggingface.co/settings/tokens"
)


class HubError(SynQError):
    """Talking to the Hugging Face Hub failed: no token, offline mode, or a refused or broken upload."""


def _patterns(patterns: str | Sequence[str] | None) -> list[str] | None:
    """``delete_patterns`` as a list (None: delete nothing)."""
    if patterns is None:
        return None
    return [patterns] if isinstance(patterns, str) else list(patterns)


def retry_command(folder: str | os.PathLike, repo_id: str, *, private: bool = False,
                  dataset: str | os.PathLike | None = None, revision: str | None = None,
                  create_pr: bool = False, delete_patterns: str | Sequence[str] | None = None) -> str:
    """The ``synq-hf push REPO_ID LOCAL_DIR ...`` command line that repeats an upload."""
    parts = ["synq-hf", "push", repo_id, os.fspath(folder)]
    if private:
        parts.append("--private")
    if revision is not None:
        parts += ["--revision", revision]
    if create_pr:
        parts.append("--create-pr")
    for pattern in _patterns(delete_patterns) or []:
        parts += ["--delete", pattern]
    if dataset is not None:
        parts += ["--dataset", os.fspath(dataset)]
    return " ".join(shlex.quote(p) for p in parts)


def _check_folder(folder: Path) -> None:
    from .checkpoint import is_synq_folder

    if not folder.is_dir():
        raise CheckpointError(f"{str(folder)!r} is not a folder: pass the folder written by save_pretrained")
    if not is_synq_folder(folder):
        raise CheckpointError(
            f"{str(folder)!r} does not hold a synq_hf-quantized model (config.json without a 'synq' entry): "
            "push the folder written by save_pretrained"
        )
    if not (folder / "README.md").is_file():
        raise CheckpointError(f"{str(folder)!r} has no README.md model card: re-save it with save_pretrained")


def _check_repo_id(repo_id: str) -> None:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise ConfigError(f"{repo_id!r} is not a valid Hub repo id: {e}") from None
    if repo_id.count("/") != 1:
        raise ConfigError(f"{repo_id!r}: give the repo as 'user/name' (or 'org/name')")


def check_can_push(repo_id: str, token: str | None = None) -> str:
    """What any upload needs, checked before the work that precedes it: ``repo_id`` is a valid ``user/name``, a
    token is at hand (``token``, ``HF_TOKEN`` or ``hf auth login``; returned) and the Hub is not switched off."""
    import huggingface_hub

    from ..sources.download import hub_offline

    _check_repo_id(repo_id)
    token = token or huggingface_hub.get_token()
    if not token:
        raise HubError(_NO_TOKEN)
    if hub_offline():
        raise HubError("HF_HUB_OFFLINE is set: unset it (or set HF_HUB_OFFLINE=0) to push to the Hub")
    return token


def _load_dataset(dataset: Any) -> Any:
    """A ``datasets.Dataset`` from a Dataset, a ``save_to_disk`` folder or a parquet file."""
    import datasets

    if isinstance(dataset, datasets.Dataset):
        return dataset
    path = Path(os.fspath(dataset))
    try:
        if path.is_dir():
            loaded = datasets.load_from_disk(str(path))
        elif path.suffix == ".parquet" and path.is_file():
            loaded = datasets.Dataset.from_parquet(str(path))
        else:
            raise DataError(f"{str(path)!r} is neither a save_to_disk folder nor a .parquet file")
    except (FileNotFoundError, ValueError) as e:
        raise DataError(f"cannot read the synthetic dataset {str(path)!r}: {e}") from e
    if not isinstance(loaded, datasets.Dataset):
        raise DataError(f"{str(path)!r} holds a {type(loaded).__name__}; save a single Dataset (one split)")
    return loaded


def _commit_operations(api: Any, folder: Path, repo_id: str, card: str, revision: str | None,
                       delete_patterns: list[str] | None) -> list[Any]:
    """The commit's operations, as ``upload_folder`` would send them: the deletions asked for, then every file of
    ``folder`` by its path, except ``README.md``, which is ``card`` (bytes)."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete
    from huggingface_hub.utils import DEFAULT_IGNORE_PATTERNS, filter_repo_objects

    folder = folder.resolve()
    files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
    names = list(filter_repo_objects(files, ignore_patterns=DEFAULT_IGNORE_PATTERNS))
    adds = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=card.encode("utf-8") if name == "README.md"
                               else str(files[name])) for name in names]
    if delete_patterns is None:  # nothing is deleted unless asked: no need to list the repo
        return adds
    present = api.list_repo_files(repo_id=repo_id, repo_type="model", revision=revision)
    deletes = [CommitOperationDelete(path_in_repo=name)
               for name in filter_repo_objects(present, allow_patterns=delete_patterns)
               if name != ".gitattributes" and name not in names]  # a file sent replaces its old version
    return deletes + adds


def _wrap(e: Exception, what: str, retry: str) -> HubError:
    return HubError(f"{what} failed: {type(e).__name__}: {e}\nThe local folder is complete; retry with:\n  {retry}")


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    delete_patterns: str | Sequence[str] | None = None,
    dataset: Any = None,
    api: Any = None,
) -> str:
    """Upload a saved quantized model folder to ``repo_id`` in one commit; returns the commit (or PR) URL.

    The repo is created if needed (``private`` applies to new repos). Files already in the repo stay unless
    they match ``delete_patterns`` (e.g. ``"*"`` to mirror the folder exactly); files of the same name are
    replaced. ``revision`` names the branch to commit to (created if missing); ``create_pr`` opens a pull
    request against the default branch instead. The card sent is :func:`~synq_hf.hub.card.card_for_hub`'s: rendered
    again for ``repo_id`` (a README.md edited by hand keeps its edits). The local folder is never modified.
    ``dataset`` (a ``datasets.Dataset``, a ``save_to_disk`` folder or a parquet file of the synthetic images) is first
    published to the dataset repo ``<repo_id>-synthetic`` by :func:`~synq_hf.synthesis.push_synthetic_dataset`
    (``Dataset.push_to_hub``: it replaces only the split's earlier ``data/train-*`` shards; ``delete_patterns``
    apply to the model repo alone) and linked from the card. ``api`` replaces the model upload's
    ``huggingface_hub.HfApi`` client (tests).
    """
    import huggingface_hub
    from huggingface_hub import constants

    from ..synthesis import push_synthetic_dataset

    folder = Path(os.fspath(folder))
    _check_folder(folder)
    _check_repo_id(repo_id)
    if create_pr and revision not in (None, constants.DEFAULT_REVISION):
        raise ConfigError(
            f"create_pr opens a pull request against the default branch; it cannot go to revision {revision!r} "
            "(drop --revision or --create-pr)"
        )
    delete_patterns = _patterns(delete_patterns)
    token = token or huggingface_hub.get_token()
    if api is None:
        token = check_can_push(repo_id, token)
        from ..version import __version__

        api = huggingface_hub.HfApi(token=token, library_name="synq-hf", library_version=__version__)
    dataset_path = None if dataset is None or hasattr(dataset, "to_parquet") else dataset
    retry = retry_command(folder, repo_id, private=private, dataset=dataset_path, revision=revision,
                          create_pr=create_pr, delete_patterns=delete_patterns)
    if dataset is not None and dataset_path is None:
        retry += "   # add --dataset PATH (a save_to_disk folder of the synthetic images) to publish them too"
    commit = dict(revision=revision, create_pr=create_pr)

    dataset_repo = None
    if dataset is not None:
        ds = _load_dataset(dataset)
        dataset_repo = f"{repo_id}{SYNTHETIC_SUFFIX}"
        try:
            push_synthetic_dataset(ds, dataset_repo, private=private, token=token, revision=revision,
                                   create_pr=create_pr, model_repo=repo_id,
                                   commit_message=commit_message or f"Synthetic images for {repo_id} (synq-hf)")
        except Exception as e:  # the network boundary: every failure gets the retry hint
            raise _wrap(e, f"uploading the synthetic dataset to {dataset_repo}", retry) from e

    card = card_for_hub(folder, repo_id, dataset_repo)
    message = commit_message or f"Upload {folder.resolve().name} (synq-hf)"
    try:
        repo_url = api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
        repo_id = getattr(repo_url, "repo_id", None) or repo_id
        _ensure_branch(api, repo_id, "model", revision, create_pr)
        listed = constants.DEFAULT_REVISION if create_pr else revision  # a PR's deletions: the default branch's files
        operations = _commit_operations(api, folder, repo_id, card, listed, delete_patterns)
        info = api.create_commit(repo_id=repo_id, repo_type="model", operations=operations, commit_message=message,
                                 **commit)
    except Exception as e:  # the network boundary: every failure gets the retry hint
        raise _wrap(e, f"uploading {folder.name} to {repo_id}", retry) from e
    return str(getattr(info, "pr_url", None) or getattr(info, "commit_url", None) or info)


def _ensure_branch(api: Any, repo_id: str, repo_type: str, revision: str | None, create_pr: bool) -> None:
    """Create the ``revision`` branch if it does not exist yet, as ``hf upload --revision`` does."""
    from huggingface_hub import constants

    if revision is not None and revision != constants.DEFAULT_REVISION and not create_pr:
        api.create_branch(repo_id=repo_id, repo_type=repo_type, branch=revision, exist_ok=True)
