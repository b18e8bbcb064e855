"""Load any supported image classifier (timm name, Hub repo, local folder) into a ``LoadedModel``.

:func:`load_model` puts together the jobs of :mod:`synq_hf.sources`: id resolution (no network), folder
checks, Hub downloads with their one-line errors, and the preprocessing and class names of the model.
Every library failure becomes a ``ModelLoadError`` or ``CheckpointError`` that tells the user what to do.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ..errors import CheckpointError, ModelLoadError
from ..pipeline import LoadedModel
from ..sources.download import hub_download_kwargs, hub_error, hub_errors, hub_file, hub_snapshot, hub_weights
from ..sources.folders import check_weights, config_kind, read_folder_config, read_json
from ..sources.ids import ResolvedId, resolve_model_id
from ..sources.preprocessing import (
    id2label_class_names,
    read_image_processor_config,
    timm_class_names,
    timm_data_config,
    transformers_data_config,
)

__all__ = [
    "ResolvedId",
    "detect_family",
    "load_model",
    "read_image_processor_config",
    "resolve_model_id",
    "transformers_data_config",
]


def detect_family(model: nn.Module) -> Literal["cnn", "vit", "swin"]:
    """The config-defaults family (``cnn``/``vit``/``swin``) of the model's architecture spec; a one-line
    ``UnsupportedModelError`` naming the supported families when no spec recognises it."""
    from ..architectures import get_spec

    return get_spec(model).family


def _spec_fields(model: nn.Module) -> dict[str, Any]:
    """``family`` and ``spec`` of a ``LoadedModel``: the registry is asked once, when the model is loaded."""
    from ..architectures import get_spec

    spec = get_spec(model)
    return {"family": spec.family, "spec": spec}


def _finish_timm(model: nn.Module, model_id: str) -> LoadedModel:
    model.eval()
    return LoadedModel(
        model=model,
        model_id=model_id,
        library="timm",
        **_spec_fields(model),
        data_config=timm_data_config(model),
        num_classes=int(model.num_classes),
        class_names=timm_class_names(model),
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
    except hub_errors() as e:
        raise hub_error(hub_repo or name, original, e) from e
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
            raise hub_error(hub_repo, original, e) from e
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
    except hub_errors() as e:
        raise hub_error(source, original, e, fetch) from e
    except SafetensorError as e:
        raise CheckpointError(
            f"{original!r}: corrupt safetensors weights ({e}); re-download or re-save them"
        ) from e
    except ValueError as e:
        raise ModelLoadError(f"{original!r}: transformers cannot load it as an image classifier: {e}") from e
    except OSError as e:
        if is_hub:
            raise hub_error(source, original, e, fetch) from e
        raise CheckpointError(f"{original!r}: transformers could not read the checkpoint: {e}") from e
    missing = sorted(info.get("missing_keys") or [])
    if num_classes is not None:
        missing = [k for k in missing if "classifier" not in k and "head" not in k]
    if missing:
        shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
        raise CheckpointError(f"{original!r}: the checkpoint lacks {len(missing)} weights ({shown})")
    model.eval()
    return LoadedModel(
        model=model,
        model_id=original,
        library="transformers",
        **_spec_fields(model),
        data_config=transformers_data_config(processor, config),
        num_classes=int(model.config.num_labels),
        class_names=id2label_class_names(model.config),
    )


def _load_quantized(folder: Path, original: str) -> LoadedModel:
    try:
        from .checkpoint import load_quantized
    except ImportError as e:  # pragma: no cover - the module ships with the package
        raise ModelLoadError(
            f"{original!r} is a synq-quantized folder but synq_hf.hub.checkpoint is missing"
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
    weights = hub_weights(repo, original, fetch, getattr(cfg, "hf_hub_filename", None))
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
        config = read_folder_config(folder)
        kind = config_kind(config, repr(str(folder)))
        if kind == "synq":
            return _load_quantized(folder, model_id)
        check_weights(folder)
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
    config_file = hub_file(repo, "config.json", model_id, fetch)
    config = read_json(config_file)
    kind = config_kind(config, f"Hub repo {repo!r}")
    if kind == "synq":
        return _load_quantized(hub_snapshot(repo, model_id, fetch), model_id)
    if kind == "timm":
        # config.json and the weights land in the same snapshot folder of the cache: timm reads it locally
        weights = hub_weights(repo, model_id, fetch)
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
