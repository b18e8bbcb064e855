"""Hub downloads that take ``revision``, ``token``, ``cache_dir`` and ``local_files_only`` and fail in one line."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError

__all__ = [
    "hub_download_kwargs", "hub_error", "hub_errors", "hub_file", "hub_offline", "hub_optional_file",
    "hub_snapshot", "hub_weights",
]

LOCAL_HINT = (
    "To load without the Hub, pass a local folder: 'local-dir:PATH' for a timm folder "
    "(config.json + model.safetensors) or the folder written by save_pretrained() for transformers. "
    "With HF_HUB_OFFLINE=1 only files already in the Hugging Face cache are used; unset it (and check "
    "the network) to download."
)


def hub_offline() -> bool:
    """Whether Hub access is switched off (``HF_HUB_OFFLINE``, as huggingface_hub reads it)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_errors() -> tuple[type[BaseException], ...]:
    """The huggingface_hub exceptions a download raises for a missing, gated or unreachable file."""
    from huggingface_hub import errors as hf_errors

    return (
        hf_errors.OfflineModeIsEnabled,
        hf_errors.LocalEntryNotFoundError,
        hf_errors.RepositoryNotFoundError,
        hf_errors.GatedRepoError,
        hf_errors.RevisionNotFoundError,
        hf_errors.EntryNotFoundError,
        hf_errors.HfHubHTTPError,
        hf_errors.HFValidationError,
    )


def hub_error(repo: str, original: str, err: BaseException, fetch: dict[str, Any] | None = None) -> ModelLoadError:
    """One line saying why ``repo`` could not be fetched and what to do instead."""
    from huggingface_hub import errors as hf_errors

    fetch = fetch or {}
    offline = hub_offline()
    if isinstance(err, hf_errors.GatedRepoError):
        why = "the repo is gated: accept its terms on the Hub and log in (`hf auth login`)"
    elif isinstance(err, hf_errors.RepositoryNotFoundError):
        why = "the repo does not exist or is private (log in with `hf auth login` if it is yours)"
    elif isinstance(err, hf_errors.RevisionNotFoundError):
        why = f"the repo has no revision {fetch.get('revision')!r}"
    elif isinstance(err, (hf_errors.OfflineModeIsEnabled, hf_errors.LocalEntryNotFoundError)) or offline:
        mode = ("HF_HUB_OFFLINE=1 is set" if offline else
                "local_files_only is set" if fetch.get("local_files_only") else "the Hub is unreachable")
        why = f"{mode} and the files are not in the local Hugging Face cache"
    else:
        why = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}".rstrip(": ")
    return ModelLoadError(f"cannot fetch {original!r} (Hub repo {repo!r}) — {why}. {LOCAL_HINT}")


def hub_download_kwargs(
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
) -> dict[str, Any]:
    """The keyword arguments every Hub download takes (``hf_hub_download``, ``from_pretrained``), unset ones left out."""
    kwargs = {"revision": revision, "token": token, "local_files_only": local_files_only or None,
              "cache_dir": os.fspath(cache_dir) if cache_dir is not None else None}
    return {k: v for k, v in kwargs.items() if v is not None}


def hub_file(repo: str, filename: str, original: str, fetch: dict[str, Any]) -> Path:
    """``hf_hub_download(repo, filename, **fetch)``; a ``ModelLoadError`` naming ``original`` on failure."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename, **fetch))
    except (*hub_errors(), OSError) as e:  # OSError: network-level failures not wrapped by huggingface_hub
        raise hub_error(repo, original, e, fetch) from e


def hub_optional_file(repo: str, filename: str, fetch: dict[str, Any]) -> Path | None:
    """``hf_hub_download`` of a file the repo may lack: None when it cannot be fetched."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename, **fetch))
    except (*hub_errors(), OSError):
        return None


def hub_weights(repo: str, original: str, fetch: dict[str, Any], filename: str | None = None) -> Path:
    """A timm weights file from the Hub: ``filename``, else ``model.safetensors``, else ``pytorch_model.bin``."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        try:
            return Path(hf_hub_download(repo, filename or "model.safetensors", **fetch))
        except EntryNotFoundError:
            if filename:
                raise
            return Path(hf_hub_download(repo, "pytorch_model.bin", **fetch))
    except (*hub_errors(), OSError) as e:
        raise hub_error(repo, original, e, fetch) from e


def hub_snapshot(repo: str, original: str, fetch: dict[str, Any]) -> Path:
    """``snapshot_download(repo, **fetch)``; a ``ModelLoadError`` naming ``original`` on failure."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, **fetch))
    except (*hub_errors(), OSError) as e:
        raise hub_error(repo, original, e, fetch) from e
