"""Save and load fake-quantized models as safetensors folders (no pickle), reloading to identical logits.

Layouts (``config.json`` always says what was quantized, from which base model, with which ``SynQConfig``):

* timm base: timm's own ``config.json`` (``architecture``, ``num_classes``, ``pretrained_cfg``, ``model_args``)
  plus a top-level ``"synq"`` key; ``model.safetensors`` holds the quantized weights as packed integer codes
  (:mod:`synq_hf.quant.packing`, the qmap in its metadata) and the float tensors, ``quantizers.safetensors``
  the quantizer tensors (activation ranges, learnable scales). config.json names the guard architecture
  ``synq_hf_quantized`` (the real one is ``synq.architecture``), so plain timm fails with a message instead
  of loading a float model.
* transformers base: the model's ``config.json`` with ``quantization_config = {"quant_method": "synq", ...}``
  and the same ``"synq"`` key, every tensor in ``model.safetensors`` (quantized weights packed, the qmap in
  its metadata, as ``save_pretrained`` through the registered ``HfQuantizer`` writes it), and
  ``preprocessor_config.json``.

Loading rebuilds the float architecture from the config, re-applies :func:`quantize_model` with the saved
config and loads every tensor strictly: a missing, extra or mis-shaped tensor is a ``CheckpointError``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..apply import SYNQ_CONFIG_ATTR, act_quantizers, is_quantized, quantize_model
from ..config import QUANTIZATION_FIELDS, SynQConfig
from ..errors import CheckpointError, ConfigError, SynQError
from ..models.quantized_guard import GUARD_ARCHITECTURE
from ..pipeline import LoadedModel
from ..quant import ActQuantizer, WeightQuantizer
from ..quant.packing import QMAP_METADATA_KEY, pack_model, read_qmap, unpack_state_dict
from ..sources.folders import is_synq_folder, read_json
from ..sources.ids import resolve_model_id
from ..sources.preprocessing import (
    PROCESSOR_FILE,
    id2label_class_names,
    processor_from_data_config,
    read_image_processor_config,
    timm_class_names,
    timm_data_config,
    transformers_data_config,
)
from ..version import __version__
from .outputs import is_local_name, public_name

__all__ = [
    "FORMAT_VERSION",
    "QUANTIZERS_FILE",
    "WEIGHTS_FILE",
    "is_synq_folder",
    "load_quantized",
    "save_quantized",
]

FORMAT_VERSION = 3
"""Version of the folder layout; bump it when a change would make older readers load a model wrongly.

1: float weights (fake quantization only). 2: timm folders store packed integer weights (the qmap in
``model.safetensors``'s metadata) and name the guard architecture in config.json. 3: transformers folders
store packed weights too. Versions 1 and 2 still load (a folder without a qmap holds float weights).
"""

WEIGHTS_FILE = "model.safetensors"
QUANTIZERS_FILE = "quantizers.safetensors"
CONFIG_FILE = "config.json"
_LIBRARIES = ("timm", "transformers")


# --------------------------------------------------------------------------------------------------
# saving
# --------------------------------------------------------------------------------------------------


def _quantizer_prefixes(model: nn.Module) -> tuple[str, ...]:
    return tuple(f"{n}." for n, m in model.named_modules() if isinstance(m, (ActQuantizer, WeightQuantizer)))


def _resolve_config(model: nn.Module, config: SynQConfig | None) -> SynQConfig:
    """The config to record: ``config`` (e.g. with fine-tuning settings) checked against the model's quantizers."""
    applied = getattr(model, SYNQ_CONFIG_ATTR, None)
    if config is None:
        if applied is None:
            raise SynQError("the model carries no SynQConfig (model.synq_config): pass config=")
        return applied
    if not isinstance(config, SynQConfig):
        raise ConfigError(f"config must be a SynQConfig, got {type(config).__name__}")
    if applied is None:
        return config
    if config.weight_symmetric is None:
        config = config.replace(weight_symmetric=applied.weight_symmetric)
    # the model-shaping fields decide which quantizer modules exist and how they compute: a recorded config
    # must agree with the model on these, or reloading would build a different network
    diff = [f for f in QUANTIZATION_FIELDS if getattr(config, f) != getattr(applied, f)]
    if diff:
        shown = ", ".join(f"{f}={getattr(config, f)!r} (model: {getattr(applied, f)!r})" for f in diff)
        raise ConfigError(f"config does not describe the model's quantizers: {shown}")
    return config


def _check_savable(model: nn.Module) -> None:
    if not is_quantized(model):
        raise SynQError(
            f"{type(model).__name__} is not quantized: quantize and calibrate it first (synq_hf.ptq), or save the "
            "float model with timm/transformers"
        )
    missing = [q.name or "?" for q in act_quantizers(model) if not q._is_calibrated]
    if missing:
        raise SynQError(
            f"refusing to save: {len(missing)} activation quantizer(s) are uncalibrated ({', '.join(missing[:5])}"
            f"{' ...' if len(missing) > 5 else ''}); run synq_hf.calibrate (or ptq) first — a reloaded model "
            "would not run"
        )


def _synq_block(
    base_model: str, library: str, config: SynQConfig | None, extra: dict[str, Any] | None
) -> dict[str, Any]:
    block: dict[str, Any] = {
        "base_model": public_name(base_model),  # never a local path: a local folder is recorded by its name
        **({"base_model_local": True} if is_local_name(base_model) else {}),
        "library": library,
        "synq_hf_version": __version__,
        "format_version": FORMAT_VERSION,
    }
    if config is not None:
        block["config"] = config.quantization_config().to_dict()  # what shapes the model, nothing else
    if extra:
        try:
            json.dumps(extra)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"extra must be JSON-serializable: {e}") from e
        block["extra"] = extra
    return block


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path, qmap: dict[str, Any] | None = None) -> None:
    from safetensors.torch import save_file

    metadata = {"format": "pt"}
    if qmap is not None:
        metadata[QMAP_METADATA_KEY] = json.dumps(qmap)
    save_file(tensors, str(path), metadata=metadata)


def _source_processor_config(source: LoadedModel) -> dict[str, Any] | None:
    """The base model's ``preprocessor_config.json`` (local folder or cached Hub repo), if it has one."""
    if source.library != "transformers":
        return None
    try:
        resolved = resolve_model_id(source.model_id)
        if resolved.source == "local":
            return read_image_processor_config(resolved.target)
        if resolved.source == "hub":
            return read_image_processor_config(resolved.target, hub=True)
    except SynQError:
        return None
    return None


def save_quantized(
    model: nn.Module,
    save_dir: str | os.PathLike,
    *,
    base_model: str,
    library: str,
    config: SynQConfig | None = None,
    extra: dict[str, Any] | None = None,
    data_config: dict[str, Any] | None = None,
    processor_config: dict[str, Any] | None = None,
    source: LoadedModel | None = None,
) -> Path:
    """Write a calibrated fake-quantized ``model`` to ``save_dir`` (safetensors + JSON only); returns the folder.

    ``base_model`` names the float model it came from (a local path is recorded by its last name, flagged
    ``base_model_local``), ``library`` is ``"timm"`` or ``"transformers"``;
    ``config`` (default: the one ``quantize_model`` applied) is recorded with ``extra`` (JSON metadata).
    transformers models also need their preprocessing: ``processor_config`` (a ``preprocessor_config.json``
    dict, copied as is), else the base model's own processor file when ``source`` (the float
    ``LoadedModel``) names a folder or Hub repo, else one written from ``data_config`` / ``source.data_config``.
    """
    if library not in _LIBRARIES:
        raise ConfigError(f"library={library!r} is not supported; choose one of {list(_LIBRARIES)}")
    if not isinstance(base_model, str) or not base_model:
        raise ConfigError("base_model must name the float model (a model id or path)")
    _check_savable(model)
    cfg = _resolve_config(model, config)
    folder = Path(save_dir)
    folder.mkdir(parents=True, exist_ok=True)
    block = _synq_block(base_model, library, cfg, extra)
    # packed integer weights; a packed layer's weight range (searched clips, learned step sizes) lives on as
    # its stored scale/zero point
    packed, qmap = pack_model(model)
    if library == "timm":
        if not hasattr(model, "pretrained_cfg"):
            raise ConfigError(f"{type(model).__name__} is not a timm model (no pretrained_cfg); use library='transformers'")
        from timm.models._hub import save_config_for_hf

        try:
            save_config_for_hf(model, folder / CONFIG_FILE)  # a Path: timm < 1.0.31 calls .open() on it
        except (ValueError, TypeError) as e:
            raise SynQError(f"timm cannot describe {type(model).__name__} in config.json: {e}") from e
        timm_config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
        # timm alone meets the guard architecture instead of loading floats silently
        prefixes = _quantizer_prefixes(model)
        weights = {k: v for k, v in packed.items() if not k.startswith(prefixes)}
        quantizers = {k: v for k, v in packed.items() if k.startswith(prefixes)}
        block["architecture"] = timm_config["architecture"]
        timm_config["architecture"] = GUARD_ARCHITECTURE
        timm_config["synq"] = block
        _write_json(folder / CONFIG_FILE, timm_config)
        _save_tensors(weights, folder / WEIGHTS_FILE, qmap)
        _save_tensors(quantizers, folder / QUANTIZERS_FILE)
        return folder

    hf_config = getattr(model, "config", None)
    if hf_config is None or not hasattr(hf_config, "to_dict"):
        raise ConfigError(f"{type(model).__name__} is not a transformers model (no .config); use library='timm'")
    if processor_config is None and source is not None:
        processor_config = _source_processor_config(source)
        data_config = data_config or source.data_config
    if processor_config is None:
        if data_config is None:
            raise ConfigError(
                "a transformers model needs its preprocessing saved: pass processor_config= (the base model's "
                "preprocessor_config.json) or data_config= (mean/std/input_size)"
            )
        processor_config = processor_from_data_config(data_config)
    config_dict = hf_config.to_dict()
    config_dict.pop("quantization_config", None)
    block.pop("config")  # recorded once, as the quantization_config transformers reads
    config_dict["quantization_config"] = cfg.quantization_config().to_dict()
    config_dict["synq"] = block
    _write_json(folder / CONFIG_FILE, config_dict)
    _write_json(folder / PROCESSOR_FILE, dict(processor_config))
    _save_tensors(packed, folder / WEIGHTS_FILE, qmap)
    stale = folder / QUANTIZERS_FILE
    if stale.exists():  # left by an earlier timm save into the same folder
        stale.unlink()
    return folder


# --------------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------------


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_FILE
    if not folder.is_dir():
        raise CheckpointError(f"{str(folder)!r} is not a folder")
    if not path.is_file():
        raise CheckpointError(f"{str(folder)!r} has no {CONFIG_FILE}: not a saved synq_hf model")
    return read_json(path)


def _parse_synq(data: dict[str, Any], where: Path) -> tuple[dict[str, Any], SynQConfig, str]:
    """The ``synq`` block, the recorded SynQConfig and the library, with version checks."""
    block = data.get("synq")
    qcfg = data.get("quantization_config")
    if block is None and not (isinstance(qcfg, dict) and qcfg.get("quant_method") == "synq"):
        raise CheckpointError(f"{where} has no 'synq' entry: it is not a synq_hf-quantized model")
    block = dict(block or {})
    fmt = block.get("format_version", FORMAT_VERSION)
    if not isinstance(fmt, int) or not 1 <= fmt <= FORMAT_VERSION:
        raise CheckpointError(
            f"{where}: format_version {fmt!r} is not supported; this synq_hf {__version__} reads format versions "
            f"1-{FORMAT_VERSION} (written by synq_hf {block.get('synq_hf_version', '?')}): upgrade synq_hf"
        )
    raw_cfg = block.get("config")
    if raw_cfg is None and isinstance(qcfg, dict):
        raw_cfg = qcfg
    if not isinstance(raw_cfg, dict):
        raise CheckpointError(f"{where} records no SynQConfig ('synq.config' or 'quantization_config')")
    try:
        cfg = SynQConfig.from_dict(raw_cfg)
    except ConfigError as e:
        raise CheckpointError(f"{where}: cannot read the saved SynQConfig: {e}") from e
    library = block.get("library") or ("transformers" if "model_type" in data else "timm")
    if library not in _LIBRARIES:
        raise CheckpointError(f"{where}: library {library!r} is not supported ({', '.join(_LIBRARIES)})")
    return block, cfg, library


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"{str(path.parent)!r} is missing {path.name}; re-save or re-download the model")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(
            f"{path} is not a valid safetensors file (truncated or corrupt: {e}); re-save or re-download it"
        ) from e


def _load_strict(model: nn.Module, tensors: dict[str, torch.Tensor], where: Path) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = sorted(k for k in set(expected) & set(tensors) if expected[k].shape != tensors[k].shape)
    problems = []
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if keys:
            problems.append(f"{len(keys)} {what} ({', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''})")
    if problems:
        raise CheckpointError(
            f"{where}: the saved tensors do not match the architecture in config.json — {'; '.join(problems)}. "
            "Are the files from another model?"
        )
    model.load_state_dict(tensors, strict=True)


def _build_timm(folder: Path, block: dict[str, Any]) -> nn.Module:
    import timm

    try:
        if "architecture" not in block:  # format 1: config.json names the real architecture
            return timm.create_model(f"local-dir:{folder}", pretrained=False)
        from timm.models._hub import load_model_config_from_path

        pretrained_cfg, _, model_args = load_model_config_from_path(folder)
        return timm.create_model(block["architecture"], pretrained=False, pretrained_cfg=pretrained_cfg, **model_args)
    except RuntimeError as e:
        raise CheckpointError(f"{folder}: timm cannot build the architecture in config.json: {e}") from e


def _build_transformers(folder: Path, data: dict[str, Any]) -> nn.Module:
    from transformers import AutoModelForImageClassification
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    # quantization_config is left out: the float architecture is built here, the quantizers by quantize_model
    clean = {k: v for k, v in data.items() if k not in ("quantization_config", "synq")}
    model_type = clean.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise CheckpointError(f"{folder}/config.json: model_type {model_type!r} is unknown to the installed transformers")
    try:
        hf_config = CONFIG_MAPPING[model_type].from_dict(clean)
        return AutoModelForImageClassification.from_config(hf_config)
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{folder}: transformers cannot build {model_type!r} from config.json: {e}") from e


def _loaded_info(model: nn.Module, folder: Path, library: str, data: dict[str, Any]) -> dict[str, Any]:
    """Family, data config, class count and names, as ``hub.load_model`` reports them."""
    if library == "timm":
        return dict(
            data_config=timm_data_config(model),
            num_classes=int(model.num_classes),
            class_names=timm_class_names(model),
        )
    processor = read_image_processor_config(folder)
    if processor is None:
        raise CheckpointError(f"{str(folder)!r} is missing {PROCESSOR_FILE}; re-save the model")
    return dict(
        data_config=transformers_data_config(processor, data),
        num_classes=int(model.config.num_labels),
        class_names=id2label_class_names(model.config),
    )


def load_quantized(path: str | os.PathLike, *, device: str | torch.device | None = None) -> LoadedModel:
    """Load a folder written by :func:`save_quantized` into an eval-mode ``LoadedModel`` (identical logits)."""
    folder = Path(os.fspath(path).removeprefix("local-dir:")).expanduser()
    data = _read_config(folder)
    block, cfg, library = _parse_synq(data, folder / CONFIG_FILE)
    tensors = _load_tensors(folder / WEIGHTS_FILE)
    qmap = read_qmap(folder / WEIGHTS_FILE)
    if qmap is not None and block.get("format_version", 1) < 2:
        raise CheckpointError(f"{folder}: format_version 1 folders hold float weights, but this one is packed")
    if library == "timm":
        tensors.update(_load_tensors(folder / QUANTIZERS_FILE))
        model = _build_timm(folder, block)
    else:
        model = _build_transformers(folder, data)
    from ..architectures import get_spec

    spec = get_spec(model)  # matched once: quantize_model and the LoadedModel take it
    family = spec.family
    quantize_model(model, cfg, spec=spec)
    if qmap is not None:  # format 2: integer codes back to the exact fake-quant weights
        tensors = unpack_state_dict(model, tensors, qmap)
    _load_strict(model, tensors, folder)
    uncalibrated = [q.name for q in act_quantizers(model) if not q._is_calibrated]
    if uncalibrated:
        raise CheckpointError(f"{folder}: {len(uncalibrated)} activation quantizer(s) were saved uncalibrated")
    model.eval()
    if device is not None:
        model.to(device)
    return LoadedModel(
        model=model,
        model_id=str(path),
        library=library,  # type: ignore[arg-type]
        family=family,
        spec=spec,
        synq_config=cfg,
        base_model=block.get("base_model"),
        extra=dict(block.get("extra") or {}),
        **_loaded_info(model, folder, library, data),
    )
