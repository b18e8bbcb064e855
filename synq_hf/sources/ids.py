"""Model id strings -> :class:`ResolvedId` (a timm registry model, a Hub repo or a local folder); no network."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import ModelLoadError

__all__ = ["ResolvedId", "is_repo_id", "resolve_model_id"]

Source = Literal["timm", "hub", "local"]

_TIMM_NAME = re.compile(r"^[A-Za-z0-9_]+(\.[\w\-]+)?$")


@dataclass(frozen=True)
class ResolvedId:
    """Where a model id points: a timm registry model, a Hub repo, or a local folder."""

    source: Source
    target: str  # timm "name.tag", Hub repo id, or absolute folder path
    original: str
    hf_hub_id: str | None = None  # for timm registry models: the Hub repo holding the weights


def is_repo_id(name: str) -> bool:
    """Whether ``name`` is a valid ``ORG/REPO`` Hub repo id (``huggingface_hub.utils.validate_repo_id``)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if name.count("/") != 1:
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _timm_suggestions(name: str, n: int = 5) -> list[str]:
    import timm

    return difflib.get_close_matches(name.lower(), timm.list_models(), n=n, cutoff=0.6)


def _resolve_timm_name(name: str, original: str) -> ResolvedId | None:
    """A timm registry name (optionally ``.tag``) → its default pretrained tag and Hub repo, else None."""
    import timm
    from timm.models import get_pretrained_cfg, split_model_name_tag

    arch, tag = split_model_name_tag(name)
    if not timm.is_model(arch):
        return None
    try:
        cfg = get_pretrained_cfg(name if tag else arch, allow_unregistered=False)
    except RuntimeError:  # timm raises for an unknown tag
        cfg = None
    if cfg is None:
        if tag:
            known = timm.list_pretrained(f"{arch}.*")
            raise ModelLoadError(
                f"timm model {arch!r} has no pretrained tag {tag!r}; known: {', '.join(known) or 'none'}"
            )
        return ResolvedId("timm", arch, original)
    full = f"{arch}.{cfg.tag}" if cfg.tag else arch
    return ResolvedId("timm", full, original, hf_hub_id=cfg.hf_hub_id)


def resolve_model_id(model_id: str) -> ResolvedId:
    """Classify a model id string (timm name, ``timm/...``, ``hf-hub:``, repo id, ``local-dir:``, folder)."""
    raw = model_id.strip() if isinstance(model_id, str) else ""
    if not raw:
        raise ModelLoadError("empty model id: pass a timm model name, a Hub repo id or a local folder")
    if raw.startswith("local-dir:"):
        folder = Path(raw[len("local-dir:") :]).expanduser()
        if not folder.is_dir():
            raise ModelLoadError(f"{model_id!r}: folder {str(folder)!r} does not exist")
        return ResolvedId("local", str(folder.resolve()), model_id)
    if raw.startswith(("hf-hub:", "hf_hub:")):
        repo = raw.split(":", 1)[1].strip()
        if not is_repo_id(repo):
            raise ModelLoadError(f"{model_id!r}: expected 'hf-hub:ORG/REPO', got repo id {repo!r}")
        return ResolvedId("hub", repo, model_id, hf_hub_id=repo)
    path = Path(raw).expanduser()
    if path.is_dir():
        return ResolvedId("local", str(path.resolve()), model_id)
    if raw.startswith("timm/") and _TIMM_NAME.match(raw[5:]):
        name = raw[5:]
        found = _resolve_timm_name(name, model_id)
        if found is not None:
            if found.hf_hub_id is None:
                raise ModelLoadError(f"{model_id!r}: timm model {found.target!r} has no pretrained weights")
            return found
        if "." in name:  # a tagged repo timm does not know yet: let the Hub decide
            return ResolvedId("hub", raw, model_id, hf_hub_id=raw)
        raise ModelLoadError(_unknown_name_message(name, model_id))
    if _TIMM_NAME.match(raw):
        found = _resolve_timm_name(raw, model_id)
        if found is not None:
            return found
        raise ModelLoadError(_unknown_name_message(raw, model_id))
    if is_repo_id(raw):
        return ResolvedId("hub", raw, model_id, hf_hub_id=raw)
    raise ModelLoadError(
        f"cannot interpret model id {model_id!r}: not an existing folder, a timm model name "
        "(e.g. 'resnet18'), 'timm/NAME[.TAG]', a Hub repo id ('ORG/REPO', 'hf-hub:ORG/REPO') "
        "or 'local-dir:PATH'"
    )


def _unknown_name_message(name: str, original: str) -> str:
    arch = name.split(".")[0]
    close = _timm_suggestions(arch)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return (
        f"unknown model {original!r}: {arch!r} is not a timm model name and no folder of that name "
        f"exists.{hint} Hub repos are given as 'ORG/REPO' and local folders as 'local-dir:PATH'."
    )
