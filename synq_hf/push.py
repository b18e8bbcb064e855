"""Publish a saved quantized model on the Hugging Face Hub: the folder as it is, in one commit.

:func:`push_folder_to_hub` uploads exactly what ``save_pretrained`` wrote (weights, ``config.json``,
the ``README.md`` card) with a single ``upload_folder`` commit that also deletes stale files in the repo,
optionally after publishing the synthetic images as a dataset repo ``<repo>-synthetic`` linked from the
card. Every Hub failure becomes a :class:`HubError` that says the local folder is intact and how to retry.
"""

from __future__ import annotations

import math
import os
import shlex
import tempfile
from pathlib import Path
from typing import Any

from .card import retarget_card, sanitize
from .errors import CheckpointError, ConfigError, DataError, SynQError

__all__ = ["HubError", "SYNTHETIC_SUFFIX", "push_folder_to_hub", "retry_command"]

SYNTHETIC_SUFFIX = "-synthetic"
"""The synthetic dataset of ``user/model`` goes to the dataset repo ``user/model-synthetic``."""
_SHARD_BYTES = 500 * 2**20
_NO_TOKEN = (
    "no Hugging Face token found: log in with `hf auth login`, set the HF_TOKEN environment variable, "
    "or pass --token (token=) with a write token from https://huggingface.co/settings/tokens"
)


class HubError(SynQError):
    """Talking to the Hugging Face Hub failed: no token, offline mode, or a refused or broken upload."""


def retry_command(folder: str | os.PathLike, repo_id: str, *, private: bool = False,
                  dataset: str | os.PathLike | None = None) -> str:
    """The ``synq-hf push`` command line that repeats an upload."""
    parts = ["synq-hf", "push", os.fspath(folder), repo_id]
    if private:
        parts.append("--private")
    if dataset is not None:
        parts += ["--dataset", os.fspath(dataset)]
    return " ".join(shlex.quote(p) for p in parts)


def _check_folder(folder: Path) -> None:
    from .serialization import is_synq_folder

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


def _write_dataset_repo(ds: Any, out: Path, dataset_repo: str, model_repo: str) -> None:
    """Parquet shards under ``data/`` plus a dataset card, the layout the Hub's viewer and loaders read."""
    from huggingface_hub import DatasetCard, DatasetCardData

    num_shards = max(1, math.ceil(ds.data.nbytes / _SHARD_BYTES))
    (out / "data").mkdir(parents=True)
    for i in range(num_shards):
        ds.shard(num_shards, i, contiguous=True).to_parquet(str(out / "data" / f"train-{i:05d}-of-{num_shards:05d}.parquet"))
    data = DatasetCardData(
        tags=["synthetic", "synq-hf", "zero-shot-quantization"],
        task_categories=["image-classification"],
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}],
    )
    from .synthesis.dataset import synthesis_metadata, synthetic_dataset_card

    if synthesis_metadata(ds):  # made by synq_hf.synthesize: its card records teacher, config and seed
        card = synthetic_dataset_card(ds, base_data=data)
        card.text += f"\nThese images calibrated and fine-tuned [{model_repo}](https://huggingface.co/{model_repo}).\n"
        DatasetCard(sanitize(card.content)).save(out / "README.md")
        return
    content = (
        f"---\n{data.to_yaml()}\n---\n\n# {dataset_repo.split('/', 1)[1]}\n\n"
        f"{len(ds):,} synthetic images generated by synq-hf from the base model of "
        f"[{model_repo}](https://huggingface.co/{model_repo}) — no real image was used. They calibrated and "
        "fine-tuned that quantized model; see its card for every synthesis setting.\n\n"
        f"```python\nfrom datasets import load_dataset\n\nds = load_dataset(\"{dataset_repo}\", split=\"train\")\n```\n"
    )
    DatasetCard(content).save(out / "README.md")


def _wrap(e: Exception, what: str, retry: str) -> HubError:
    return HubError(f"{what} failed: {type(e).__name__}: {e}\nThe local folder is complete; retry with:\n  {retry}")


def push_folder_to_hub(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    dataset: Any = None,
    api: Any = None,
) -> str:
    """Upload a saved quantized model folder to ``repo_id`` in one commit; returns the commit URL.

    The repo is created if needed (``private`` applies to new repos) and ends up holding exactly the
    folder's files. ``dataset`` (a ``datasets.Dataset``, a ``save_to_disk`` folder or a parquet file of
    the synthetic images) is first pushed to the dataset repo ``<repo_id>-synthetic`` and linked from the
    card. ``api`` replaces the ``huggingface_hub.HfApi`` client (tests).
    """
    import huggingface_hub
    from huggingface_hub import constants

    folder = Path(os.fspath(folder))
    _check_folder(folder)
    _check_repo_id(repo_id)
    token = token or huggingface_hub.get_token()
    if api is None:
        if not token:
            raise HubError(_NO_TOKEN)
        if constants.HF_HUB_OFFLINE:
            raise HubError("HF_HUB_OFFLINE is set: unset it (or set HF_HUB_OFFLINE=0) to push to the Hub")
        from .version import __version__

        api = huggingface_hub.HfApi(token=token, library_name="synq-hf", library_version=__version__)
    dataset_path = None if dataset is None or hasattr(dataset, "to_parquet") else dataset
    retry = retry_command(folder, repo_id, private=private, dataset=dataset_path)
    if dataset is not None and dataset_path is None:
        retry += "   # add --dataset PATH (a save_to_disk folder of the synthetic images) to publish them too"

    dataset_repo = None
    if dataset is not None:
        ds = _load_dataset(dataset)
        dataset_repo = f"{repo_id}{SYNTHETIC_SUFFIX}"
        try:
            api.create_repo(repo_id=dataset_repo, repo_type="dataset", private=private, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="synq-hf-dataset-") as tmp:
                _write_dataset_repo(ds, Path(tmp), dataset_repo, repo_id)
                api.upload_folder(
                    repo_id=dataset_repo, repo_type="dataset", folder_path=tmp, delete_patterns="*",
                    commit_message=f"Synthetic images for {repo_id} (synq-hf)",
                )
        except Exception as e:  # the network boundary: every failure gets the retry hint
            raise _wrap(e, f"uploading the synthetic dataset to {dataset_repo}", retry) from e

    card_path = folder / "README.md"
    card = card_path.read_text(encoding="utf-8")
    updated = retarget_card(card, repo_id, dataset_repo)
    if updated != card:
        tmp_card = card_path.with_name(".README.md.tmp")
        tmp_card.write_text(updated, encoding="utf-8")
        os.replace(tmp_card, card_path)

    message = commit_message or f"Upload {folder.name} (synq-hf)"
    try:
        repo_url = api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=getattr(repo_url, "repo_id", None) or repo_id,
            repo_type="model",
            folder_path=str(folder),
            commit_message=message,
            delete_patterns="*",
        )
    except Exception as e:  # the network boundary: every failure gets the retry hint
        raise _wrap(e, f"uploading {folder.name} to {repo_id}", retry) from e
    return str(getattr(info, "commit_url", None) or info)
