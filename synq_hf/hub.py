"""Load any supported image classifier (timm name, Hub repo, local folder) into a ``LoadedModel``.

Resolution is split in two: :func:`resolve_model_id` turns the user's string into a
:class:`ResolvedId` without touching the network (unit-testable), and :func:`load_model`
fetches and builds the model, turning every library failure into a ``ModelLoadError`` or
``CheckpointError`` that tells the user what to do.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .errors import CheckpointError, ModelLoadError, UnsupportedModelError
from .model_info import LoadedModel

__all__ = [
    "ResolvedId",
    "detect_family",
    "load_model",
    "read_image_processor_config",
    "resolve_model_id",
    "transformers_data_config",
]

Source = Literal["timm", "hub", "local"]

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_TIMM_NAME = re.compile(r"^[A-Za-z0-9_]+(\.[\w\-]+)?$")
_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "pytorch_model.pth",
    "model.pth",
)
_PIL_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}
_LOCAL_HINT = (
    "To load without the Hub, pass a local folder: 'local-dir:PATH' for a timm folder "
    "(config.json + model.safetensors) or the folder written by save_pretrained() for transformers. "
    "With HF_HUB_OFFLINE=1 only files already in the Hugging Face cache are used; unset it (and check "
    "the network) to download."
)


@dataclass(frozen=True)
class ResolvedId:
    """Where a model id points: a timm registry model, a Hub repo, or a local folder."""

    source: Source
    target: str  # timm "name.tag", Hub repo id, or absolute folder path
    original: str
    hf_hub_id: str | None = None  # for timm registry models: the Hub repo holding the weights


# --------------------------------------------------------------------------------------------------
# resolution (no network)
# --------------------------------------------------------------------------------------------------


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
        if not _REPO_ID.match(repo):
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
    if _REPO_ID.match(raw) and not raw.startswith((".", "/")):
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


# --------------------------------------------------------------------------------------------------
# folder / config inspection
# --------------------------------------------------------------------------------------------------


def _listing(folder: Path, limit: int = 15) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "it is empty"
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return "it contains: " + ", ".join(names[:limit]) + more


def _not_a_model(folder: Path, why: str) -> ModelLoadError:
    return ModelLoadError(
        f"{str(folder)!r} is not a model folder ({why}); {_listing(folder)}. Expected config.json plus "
        "model.safetensors: a timm folder has 'architecture' in config.json, a transformers folder "
        "(save_pretrained) has 'model_type'."
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    return data


def _read_folder_config(folder: Path) -> dict[str, Any]:
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        raise _not_a_model(folder, "no config.json")
    return _read_json(cfg_file)


def _config_kind(config: dict[str, Any], where: str) -> Literal["synq", "timm", "transformers"]:
    qcfg = config.get("quantization_config")
    if "synq" in config or (isinstance(qcfg, dict) and qcfg.get("quant_method") == "synq"):
        return "synq"
    if "architecture" in config:
        return "timm"
    if "model_type" in config or "architectures" in config:
        return "transformers"
    raise ModelLoadError(
        f"config.json of {where} names no model: expected 'architecture' (timm) or 'model_type' "
        f"(transformers); keys present: {', '.join(sorted(config)) or 'none'}"
    )


def _check_safetensors(path: Path) -> None:
    """Validate a ``.safetensors`` header against the file size so truncation is reported clearly."""
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError("file is shorter than the 8-byte header length")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                raise ValueError(f"header claims {n} bytes but the file has {size - 8}")
            header = json.loads(f.read(n))
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"{path} is not a valid safetensors file ({e}); re-download or re-save it"
        ) from e
    end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise CheckpointError(
            f"{path} is truncated: tensors need {8 + n + end} bytes but the file has {size}; "
            "re-download or re-save it"
        )


def _check_weights(folder: Path) -> None:
    present = [name for name in _WEIGHT_FILES if (folder / name).is_file()]
    if not present:
        raise CheckpointError(
            f"{str(folder)!r} has a config.json but no weights ({' or '.join(_WEIGHT_FILES[:3])}); "
            f"{_listing(folder)}"
        )
    for f in sorted(folder.glob("*.safetensors")):
        _check_safetensors(f)


# --------------------------------------------------------------------------------------------------
# Hub access
# --------------------------------------------------------------------------------------------------


def _hub_errors() -> tuple[type[BaseException], ...]:
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


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")


def _hub_error(repo: str, original: str, err: BaseException, fetch: dict[str, Any] | None = None) -> ModelLoadError:
    from huggingface_hub import errors as hf_errors

    fetch = fetch or {}
    if isinstance(err, hf_errors.GatedRepoError):
        why = "the repo is gated: accept its terms on the Hub and log in (`hf auth login`)"
    elif isinstance(err, hf_errors.RepositoryNotFoundError):
        why = "the repo does not exist or is private (log in with `hf auth login` if it is yours)"
    elif isinstance(err, hf_errors.RevisionNotFoundError):
        why = f"the repo has no revision {fetch.get('revision')!r}"
    elif isinstance(err, (hf_errors.OfflineModeIsEnabled, hf_errors.LocalEntryNotFoundError)) or _offline():
        mode = ("HF_HUB_OFFLINE=1 is set" if _offline() else
                "local_files_only is set" if fetch.get("local_files_only") else "the Hub is unreachable")
        why = f"{mode} and the files are not in the local Hugging Face cache"
    else:
        why = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}".rstrip(": ")
    return ModelLoadError(f"cannot fetch {original!r} (Hub repo {repo!r}) — {why}. {_LOCAL_HINT}")


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


def _hub_file(repo: str, filename: str, original: str, fetch: dict[str, Any]) -> Path:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename, **fetch))
    except _hub_errors() as e:
        raise _hub_error(repo, original, e, fetch) from e
    except OSError as e:  # network-level failures not wrapped by huggingface_hub
        raise _hub_error(repo, original, e, fetch) from e


def _hub_optional_file(repo: str, filename: str, fetch: dict[str, Any]) -> Path | None:
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename, **fetch))
    except (*_hub_errors(), OSError):
        return None


def _hub_weights(repo: str, original: str, fetch: dict[str, Any], filename: str | None = None) -> Path:
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
    except (*_hub_errors(), OSError) as e:
        raise _hub_error(repo, original, e, fetch) from e


def _hub_snapshot(repo: str, original: str, fetch: dict[str, Any]) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, **fetch))
    except (*_hub_errors(), OSError) as e:
        raise _hub_error(repo, original, e, fetch) from e


# --------------------------------------------------------------------------------------------------
# family and data config
# --------------------------------------------------------------------------------------------------


def detect_family(model: nn.Module) -> Literal["cnn", "vit", "swin"]:
    """The config-defaults family (``cnn``/``vit``/``swin``) of the model's architecture spec; a one-line
    ``UnsupportedModelError`` naming the supported families when no spec recognises it."""
    from .architectures import get_spec

    return get_spec(model).family


def _timm_data_config(model: nn.Module) -> dict[str, Any]:
    from timm.data import resolve_model_data_config

    cfg = resolve_model_data_config(model)
    return {
        "input_size": tuple(int(v) for v in cfg["input_size"]),
        "mean": tuple(float(v) for v in cfg["mean"]),
        "std": tuple(float(v) for v in cfg["std"]),
        "interpolation": str(cfg.get("interpolation", "bilinear")),
        "crop_pct": float(cfg.get("crop_pct", 1.0)),
        "crop_mode": str(cfg.get("crop_mode", "center")),
    }


def _hw(value: Any) -> tuple[int, int] | None:
    if isinstance(value, int):
        return value, value
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            return int(value["height"]), int(value["width"])
        if "shortest_edge" in value:
            return int(value["shortest_edge"]), int(value["shortest_edge"])
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return int(value[0]), int(value[1])
    return None


def transformers_data_config(
    processor: dict[str, Any], model_config: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Translate a ``preprocessor_config.json`` dict into synq_hf's timm-style ``data_config``."""
    mean, std = processor.get("image_mean"), processor.get("image_std")
    if not processor.get("do_normalize", True):
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if mean is None or std is None:
        raise ModelLoadError("the image processor config has no image_mean/image_std")
    if (
        processor.get("do_rescale", True) is False
        or abs(float(processor.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-6
    ):
        raise UnsupportedModelError("only image processors that rescale pixels by 1/255 are supported")
    raw_size = processor.get("size")
    size = _hw(raw_size)
    fixed = not (isinstance(raw_size, dict) and "shortest_edge" in raw_size)  # (height, width) resize
    crop = _hw(processor.get("crop_size")) if processor.get("do_center_crop") else None
    crop_pct = processor.get("crop_pct")
    crop_mode = "squash" if fixed else "center"
    if crop is not None and size is not None:
        final = crop
        crop_pct = crop_pct or min(crop[0] / size[0], 1.0)
    elif size is not None:
        final = size
        if fixed:
            crop_pct = None  # resized straight to (height, width): nothing is cropped
    else:
        image_size = (model_config or {}).get("image_size")
        if image_size is None:
            raise ModelLoadError(
                "the image processor config has no 'size' and the model config no 'image_size'"
            )
        final = _hw(image_size) or (224, 224)
    resample = processor.get("resample", 2)
    interpolation = (
        _PIL_RESAMPLE.get(resample, "bilinear") if isinstance(resample, int) else str(resample).lower()
    )
    return {
        "input_size": (3, int(final[0]), int(final[1])),
        "mean": tuple(float(v) for v in (mean if isinstance(mean, (list, tuple)) else [mean] * 3)),
        "std": tuple(float(v) for v in (std if isinstance(std, (list, tuple)) else [std] * 3)),
        "interpolation": interpolation,
        "crop_pct": float(crop_pct) if crop_pct else 1.0,
        "crop_mode": crop_mode,
    }


def read_image_processor_config(
    source: Path | str, *, hub: bool = False, **hub_kwargs: Any
) -> dict[str, Any] | None:
    """The ``preprocessor_config.json`` dict of a folder or Hub repo, or None when there is none.

    ``hub_kwargs`` (``revision``, ``token``, ``cache_dir``, ``local_files_only``) go to the Hub download.
    """
    if hub:
        path = _hub_optional_file(str(source), "preprocessor_config.json", hub_download_kwargs(**hub_kwargs))
        return _read_json(path) if path is not None else None
    path = Path(source) / "preprocessor_config.json"
    return _read_json(path) if path.is_file() else None


# --------------------------------------------------------------------------------------------------
# loaders
# --------------------------------------------------------------------------------------------------


def _timm_class_names(model: nn.Module) -> list[str] | None:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("label_names")
    n = int(getattr(model, "num_classes", 0) or 0)
    if names and len(names) == n:
        descriptions = cfg.get("label_descriptions")
        if isinstance(descriptions, dict):
            return [str(descriptions.get(name, name)) for name in names]
        return [str(v) for v in names]
    if cfg.get("hf_hub_id") or cfg.get("url"):
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(model)
        if subset:
            info = ImageNetInfo(subset)
            return [info.label_name_to_description(name) for name in info.label_names()]
    return None


def _finish_timm(model: nn.Module, model_id: str) -> LoadedModel:
    model.eval()
    return LoadedModel(
        model=model,
        model_id=model_id,
        library="timm",
        family=detect_family(model),
        data_config=_timm_data_config(model),
        num_classes=int(model.num_classes),
        class_names=_timm_class_names(model),
    )


def _create_timm(
    name: str, original: str, num_classes: int | None, hub_repo: str | None, **kwargs: Any
) -> nn.Module:
    """``timm.create_model(name, pretrained=True)`` with its failures turned into one-line errors.

    ``kwargs`` go to ``create_model`` (``pretrained_cfg_overlay`` pointing at weights synq_hf downloaded).
    """
    import timm
    from safetensors import SafetensorError

    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except (*_hub_errors(),) as e:
        raise _hub_error(hub_repo or name, original, e) from e
    except SafetensorError as e:
        raise CheckpointError(
            f"{original!r}: corrupt safetensors weights ({e}); re-download or re-save them"
        ) from e
    except RuntimeError as e:
        msg = str(e)
        if msg.startswith("Unknown model"):
            arch = msg.split("(", 1)[-1].rstrip(")")
            raise ModelLoadError(
                f"{original!r}: config.json names architecture {arch!r}, which timm does not know "
                f"(installed timm {timm.__version__}; synq_hf registers cifar_resnet20/32/44/56)"
            ) from e
        if "state_dict" in msg or "size mismatch" in msg or "Missing key" in msg:
            raise CheckpointError(f"{original!r}: the weights do not match the architecture: {msg}") from e
        raise ModelLoadError(f"{original!r}: timm could not build the model: {msg}") from e
    except OSError as e:
        if hub_repo:
            raise _hub_error(hub_repo, original, e) from e
        raise ModelLoadError(f"{original!r}: {e}") from e


def _load_transformers(
    source: str,
    original: str,
    config: dict[str, Any],
    processor: dict[str, Any] | None,
    *,
    is_hub: bool,
    trust_remote_code: bool,
    num_classes: int | None,
    fetch: dict[str, Any],
) -> LoadedModel:
    from safetensors import SafetensorError
    from transformers import AutoModelForImageClassification
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING and "auto_map" in config and not trust_remote_code:
        raise ModelLoadError(
            f"{original!r} uses custom code (model_type {model_type!r} with auto_map); synq_hf does not run "
            "code from model repos unless you pass trust_remote_code=True (--trust-remote-code) after "
            "reviewing it"
        )
    if model_type is not None and model_type not in CONFIG_MAPPING and "auto_map" not in config:
        raise ModelLoadError(
            f"{original!r}: model_type {model_type!r} is unknown to the installed transformers; upgrade it"
        )
    if processor is None:
        raise ModelLoadError(
            f"{original!r} has no preprocessor_config.json, so the input size and normalization are unknown. "
            "Save the image processor next to the model: "
            "AutoImageProcessor.from_pretrained(BASE).save_pretrained(FOLDER)"
        )
    kwargs: dict[str, Any] = {"dtype": torch.float32, "trust_remote_code": trust_remote_code}
    if is_hub:
        kwargs.update(fetch)
    if num_classes is not None:
        kwargs.update(num_labels=num_classes, ignore_mismatched_sizes=True)
    try:
        model, info = AutoModelForImageClassification.from_pretrained(
            source, output_loading_info=True, **kwargs
        )
    except (*_hub_errors(),) as e:
        raise _hub_error(source, original, e, fetch) from e
    except SafetensorError as e:
        raise CheckpointError(
            f"{original!r}: corrupt safetensors weights ({e}); re-download or re-save them"
        ) from e
    except ValueError as e:
        raise ModelLoadError(f"{original!r}: transformers cannot load it as an image classifier: {e}") from e
    except OSError as e:
        if is_hub:
            raise _hub_error(source, original, e, fetch) from e
        raise CheckpointError(f"{original!r}: transformers could not read the checkpoint: {e}") from e
    missing = sorted(info.get("missing_keys") or [])
    if num_classes is not None:
        missing = [k for k in missing if "classifier" not in k and "head" not in k]
    if missing:
        shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
        raise CheckpointError(f"{original!r}: the checkpoint lacks {len(missing)} weights ({shown})")
    model.eval()
    id2label = getattr(model.config, "id2label", None) or {}
    names = [str(id2label.get(i, id2label.get(str(i), ""))) for i in range(model.config.num_labels)]
    if not all(names) or all(re.fullmatch(r"LABEL_\d+", n) for n in names):
        names = None
    return LoadedModel(
        model=model,
        model_id=original,
        library="transformers",
        family=detect_family(model),
        data_config=transformers_data_config(processor, config),
        num_classes=int(model.config.num_labels),
        class_names=names,
    )


def _load_quantized(folder: Path, original: str) -> LoadedModel:
    try:
        from .serialization import load_quantized
    except ImportError as e:  # pragma: no cover - the module ships with the package
        raise ModelLoadError(
            f"{original!r} is a synq-quantized folder but synq_hf.serialization is missing"
        ) from e
    return load_quantized(folder)


def _timm_has_weights(name: str) -> bool:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name, allow_unregistered=False)
    return bool(cfg is not None and cfg.has_weights)


def _timm_registry_model(resolved: ResolvedId, original: str, num_classes: int | None,
                         fetch: dict[str, Any]) -> nn.Module:
    """A timm registry model whose weights synq_hf downloads itself, so revision and token reach the Hub."""
    from timm.models import get_pretrained_cfg

    if resolved.hf_hub_id is None:  # weights behind a plain URL (no Hub): timm downloads them
        cache_dir = {"cache_dir": fetch["cache_dir"]} if "cache_dir" in fetch else {}
        return _create_timm(resolved.target, original, num_classes, None, **cache_dir)
    cfg = get_pretrained_cfg(resolved.target, allow_unregistered=False)
    repo, _, tag_revision = resolved.hf_hub_id.partition("@")
    fetch = {"revision": tag_revision, **fetch} if tag_revision else fetch
    weights = _hub_weights(repo, original, fetch, getattr(cfg, "hf_hub_filename", None))
    return _create_timm(resolved.target, original, num_classes, repo,
                        pretrained_cfg_overlay={"file": str(weights)})


def load_model(
    model_id: str,
    *,
    trust_remote_code: bool = False,
    num_classes: int | None = None,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
) -> LoadedModel:
    """Load a float or synq-quantized classifier from a timm name, Hub repo or local folder, in eval mode.

    ``revision`` (branch, tag or commit), ``token``, ``cache_dir`` and ``local_files_only`` go to every
    Hub download (``huggingface_hub``, timm weights, transformers ``from_pretrained``); local folders
    ignore them.
    """
    if num_classes is not None and num_classes < 1:
        raise ModelLoadError(f"num_classes must be positive, got {num_classes}")
    fetch = hub_download_kwargs(revision, token, cache_dir, local_files_only)
    resolved = resolve_model_id(model_id)
    if resolved.source == "timm":
        if resolved.hf_hub_id is None and not _timm_has_weights(resolved.target):
            raise ModelLoadError(
                f"timm model {resolved.target!r} has no pretrained weights; pass a folder holding trained "
                "weights ('local-dir:PATH') instead of the bare architecture name"
            )
        return _finish_timm(_timm_registry_model(resolved, model_id, num_classes, fetch), model_id)

    if resolved.source == "local":
        folder = Path(resolved.target)
        config = _read_folder_config(folder)
        kind = _config_kind(config, repr(str(folder)))
        if kind == "synq":
            return _load_quantized(folder, model_id)
        _check_weights(folder)
        if kind == "timm":
            return _finish_timm(_create_timm(f"local-dir:{folder}", model_id, num_classes, None), model_id)
        return _load_transformers(
            str(folder),
            model_id,
            config,
            read_image_processor_config(folder),
            is_hub=False,
            trust_remote_code=trust_remote_code,
            num_classes=num_classes,
            fetch={},
        )

    repo = resolved.target
    config_file = _hub_file(repo, "config.json", model_id, fetch)
    config = _read_json(config_file)
    kind = _config_kind(config, f"Hub repo {repo!r}")
    if kind == "synq":
        return _load_quantized(_hub_snapshot(repo, model_id, fetch), model_id)
    if kind == "timm":
        # config.json and the weights land in the same snapshot folder of the cache: timm reads it locally
        weights = _hub_weights(repo, model_id, fetch)
        snapshot = config_file.parent
        if weights.parent != snapshot:
            raise ModelLoadError(f"{model_id!r}: config.json and the weights came from different revisions "
                                 "(the branch moved during the download); retry")
        model = _create_timm(f"local-dir:{snapshot}", model_id, num_classes, repo,
                             pretrained_cfg_overlay={"hf_hub_id": repo})
        return _finish_timm(model, model_id)
    return _load_transformers(
        repo,
        model_id,
        config,
        read_image_processor_config(repo, hub=True, **fetch),
        is_hub=True,
        trust_remote_code=trust_remote_code,
        num_classes=num_classes,
        fetch=fetch,
    )
