"""Model cards for quantized models: YAML metadata with measured results, and a body saying what was done.

:func:`render_model_card` fills ``model_card_template.md`` (Jinja, shipped in ``synq_hf/assets`` and
copied at the repository root) through ``huggingface_hub.ModelCard.from_template``. Cards are public:
every input is scrubbed of Hugging Face tokens and local absolute paths (a local base model is named
by its folder only, and the ``base_model`` YAML key is set only for a Hub repo id).

:func:`save_model_card` writes the card as ``README.md`` and, next to it, :data:`CARD_RECORD` (``card.json``): the
inputs it was rendered from, public like the card. A push re-renders the card from that record with the repo id
(and the synthetic dataset repo) as inputs (:func:`card_for_hub`), so the Hub's card is the one
``render_model_card`` would have written for that repo.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path, PureWindowsPath
from typing import Any

from ..config import SynQConfig, budget_replaces, reconstruction_image_copies
from ..errors import ConfigError, ModelLoadError, SynQError
from ..sources.ids import is_repo_id

__all__ = [
    "CARD_RECORD",
    "TEMPLATE_NAME",
    "card_for_hub",
    "hub_base_model",
    "render_model_card",
    "render_card_record",
    "retarget_card",
    "sanitize",
    "save_model_card",
    "template_text",
]

TEMPLATE_NAME = "model_card_template.md"
CARD_RECORD = "card.json"
"""The file next to a saved folder's ``README.md`` holding the keyword arguments of ``render_model_card`` it came
from (public: no path, no token), so that a push can render the same card for a repo id."""
_LIBRARIES = ("timm", "transformers")


@dataclasses.dataclass(frozen=True)
class MethodCard:
    """How the card names one quantization method: its results row, title and summary, and whether it fine-tunes.

    The texts may hold ``{ranges}`` (e.g. "searched ranges"), ``{data}`` (what calibrated it), ``{bits}``, ``{base}``
    ``{no_real_data}`` (" (no real data)" for a zero-shot model) and ``{plus_synq}`` (" + SynQ" when block
    reconstruction adds SynQ's terms), filled from the run's config and records, so no label states a setting that
    did not run.
    """

    row: str
    title: str
    summary: str
    trained: bool


METHOD_CARDS: dict[str, MethodCard] = {
    "ptq": MethodCard(
        row="PTQ, {ranges}, calibrated on {data}",
        title="post-training quantization ({ranges}) calibrated on {data}{no_real_data}",
        summary="A {bits} fake-quantized version of {base}: post-training quantization with {ranges} calibrated on "
        "{data}{no_real_data}; nothing was fine-tuned.",
        trained=False,
    ),
    "synq": MethodCard(
        row="SynQ",
        title="SynQ zero-shot quantization (synthetic data + synthesis-aware fine-tuning; no real data)",
        summary="A {bits} fake-quantized version of {base}, produced **without any real data**: images synthesized "
        "from the base model were used to calibrate and fine-tune it with SynQ (ICLR 2025), starting from {ranges}.",
        trained=True,
    ),
    "reconstruct": MethodCard(
        row="Block reconstruction{plus_synq}",
        title="post-training quantization by block reconstruction (AdaRound, QDrop{plus_synq}) on {data}{no_real_data}",
        summary="A {bits} fake-quantized version of {base}: reconstructed block by block against the base model on "
        "{data}{no_real_data} (AdaRound rounding, learned step sizes and activation ranges, QDrop{plus_synq}).",
        trained=True,
    ),
}
"""The methods a card can describe, in the order of its results table (after the float row); a new method adds
its entry here (its results are ``<name>_top1``/``<name>_top5``)."""

_RANGE_WORDS = {"search": "searched", "minmax": "min-max"}
"""``act_range_init`` / ``weight_range_init`` values as the card says them."""
_TOKEN = re.compile(r"hf_[A-Za-z0-9]{20,}")
# An absolute POSIX (or ~) path: starts after whitespace, a quote, bracket, ``=``, ``,`` or ``:`` (``local-dir:/x``;
# a URL's ``://`` never matches: a path component cannot be empty) and has at least two components.
_POSIX_PATH = re.compile(r"(?<![^\s'\"`(\[{=,:])~?/(?:[^\s/'\"`()\[\]{},|]+/)+[^\s/'\"`()\[\]{},|]*")
_FILE_URI = re.compile(r"file://[^\s'\"`()\[\]{},|]+")
_WINDOWS_PATH = re.compile(r"(?<![\w])[A-Za-z]:\\[^\s'\"`|]+")
# A relative path that climbs or starts here (``../shared/x``, ``./x``): cut to its last name as well.
_RELATIVE_PATH = re.compile(r"(?<![^\s'\"`(\[{=,:])\.\.?/[^\s'\"`()\[\]{},|]*")
_RESULT_KEYS = {f"{m}_top{k}" for m in ("fp", *METHOD_CARDS) for k in (1, 5)} | {
    "dataset", "dataset_name", "dataset_config", "split", "num_samples", "method",
}
_SYNTHETIC_LABELS = {
    "num_images": "Synthetic images",
    "iterations": "Optimization iterations per batch",
    "batch_size": "Images optimized together",
    "seed": "Seed",
    "family": "Synthesis family",
    "wall_time_s": "Synthesis wall time",
    "lpf_d0": "Low-pass filter D0",
    "dataset_repo": "Dataset repo",
}
_TRAINING_LABELS = {
    "method": "Method",
    "steps": "Fine-tuning steps",
    "epochs": "Fine-tuning epochs",
    "batch_size": "Batch size",
    "wall_time_s": "Total wall time",
    "synthesis_wall_time_s": "Synthesis wall time",
    "finetune_wall_time_s": "Fine-tuning wall time",
    "units": "Reconstruction units (stem, blocks, head)",
    "steps_per_unit": "Reconstruction steps per unit",
    "reconstruct_wall_time_s": "Reconstruction wall time",
    "hardware": "Hardware",
    "num_devices": "Devices",
    "precision": "Precision",
    "seed": "Seed",
}
_LIBRARY_CITATIONS = {
    "timm": "it was loaded with timm (Ross Wightman, *PyTorch Image Models*, 2019, "
    "https://github.com/huggingface/pytorch-image-models).",
    "transformers": "it was loaded with transformers (Wolf et al., *Transformers: State-of-the-Art Natural "
    "Language Processing*, EMNLP 2020 demos).",
}


# -- sanitizing --------------------------------------------------------------------------------------


def _path_name(path: str) -> str:
    """Last component of a POSIX or Windows path (what a card may show of a local path)."""
    name = PureWindowsPath(path.rstrip("/\\")).name if "\\" in path else path.rstrip("/").rsplit("/", 1)[-1]
    return name or "<local path>"


def _scrub(text: str) -> str:
    text = _TOKEN.sub("hf_***", text)
    text = _FILE_URI.sub(lambda m: _path_name(m.group(0)), text)
    text = _POSIX_PATH.sub(lambda m: _path_name(m.group(0)), text)
    text = _RELATIVE_PATH.sub(lambda m: _path_name(m.group(0)), text)
    return _WINDOWS_PATH.sub(lambda m: _path_name(m.group(0)), text)


def sanitize(value: Any) -> Any:
    """``value`` with every string scrubbed: HF tokens masked, absolute local paths cut to their last name."""
    if isinstance(value, str):
        return _scrub(value)
    if isinstance(value, Mapping):
        return {k: sanitize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(sanitize(v) for v in value)
    return value


def hub_base_model(base_model: str) -> str | None:
    """The Hub repo id behind ``base_model`` (timm names map to their weights' repo), or None if local/unknown."""
    from ..sources.ids import resolve_model_id

    raw = base_model.strip()
    try:
        resolved = resolve_model_id(raw)
    except ModelLoadError:
        resolved = None
    if resolved is not None:
        if resolved.source == "local":
            return None
        return resolved.hf_hub_id or (resolved.target if resolved.source == "hub" else None)
    repo = raw.split(":", 1)[1] if raw.startswith(("hf-hub:", "hf_hub:")) else raw
    return repo if is_repo_id(repo) and not repo.startswith((".", "/", "~")) else None


def _base_display(base_model: str, hub_id: str | None) -> tuple[str, str]:
    """(markdown shown for the base model, name used in the default model name)."""
    if hub_id is not None:
        return f"[{hub_id}](https://huggingface.co/{hub_id})", hub_id.rsplit("/", 1)[-1]
    raw = base_model.strip()
    for prefix in ("local-dir:", "hf-hub:", "hf_hub:"):
        raw = raw.removeprefix(prefix)
    if "/" in raw or "\\" in raw or raw.startswith("~"):
        name = _path_name(raw)
        return f"`{name}` (a local model folder)", name
    return f"`{raw}`", raw


# -- template ----------------------------------------------------------------------------------------


def template_text() -> str:
    """The Jinja card template shipped with the package (the repository root holds an identical copy)."""
    return (resources.files("synq_hf") / "assets" / TEMPLATE_NAME).read_text(encoding="utf-8")


def format_seconds(seconds: float) -> str:
    """A wall time as the card shows it: "42.0 s", "20 min 34 s" or "1 h 02 min".

    Rounded to 0.1 s first, as results.json stores it, so the card and results.json never differ at a rounding
    boundary (122.55 s is "2 min 02 s" in both, not "2 min 03 s" from the raw value).
    """
    seconds = round(float(seconds), 1)
    s = int(round(seconds))
    if s < 60:
        return f"{seconds:.1f} s"
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value) or "[]"
    return str(value)


def _rows(data: Mapping[str, Any] | None, labels: Mapping[str, str], times_note: str = "") -> list[tuple[str, str]]:
    """(label, value) rows of a record; wall times are formatted and carry ``times_note`` (e.g. how a resumed run's
    parts were counted)."""
    rows = []
    for key, value in (data or {}).items():
        if value is None or key == "dataset_repo":
            continue
        timed = key.endswith("wall_time_s")
        shown = format_seconds(value) if timed else _fmt(value)
        label = labels.get(key, key.replace("_", " ").capitalize()) + (times_note if timed else "")
        rows.append((label, shown.replace("|", "\\|")))
    return rows


def _is_mixed(cfg: SynQConfig) -> bool:
    return bool(cfg.layer_w_bits or cfg.layer_a_bits)


def _mixed_short(cfg: SynQConfig, mixed: Mapping[str, Any] | None) -> str:
    """E.g. ``W3.47A4 mixed``: the average weight (and activation) bits of a mixed-precision model."""
    mixed = mixed or {}
    def text(avg: float | None, chosen: dict[str, int], uniform: int) -> str:
        if avg is not None:
            return f"{avg:.2f}"
        if chosen:  # per-layer bits set by hand: their range
            lo, hi = min(chosen.values()), max(chosen.values())
            return str(lo) if lo == hi else f"{lo}-{hi}"
        return str(uniform)

    w_text = text(mixed.get("avg_w_bits") if cfg.layer_w_bits else None, cfg.layer_w_bits, cfg.w_bits)
    a_text = text(mixed.get("avg_a_bits") if cfg.layer_a_bits else None, cfg.layer_a_bits, cfg.a_bits)
    return f"W{w_text}A{a_text} mixed"


def _mixed_bits_text(cfg: SynQConfig, mixed: Mapping[str, Any] | None) -> str:
    """The bit-widths of a mixed-precision model: per layer (see the table), with the budget and the size reached."""
    mixed = mixed or {}
    w_set = sorted(set(cfg.layer_w_bits.values())) or [cfg.w_bits]
    a_set = sorted(set(cfg.layer_a_bits.values())) or [cfg.a_bits]
    text = (f"{_mixed_short(cfg, mixed)} (mixed precision: weights {', '.join(map(str, w_set))}-bit per layer, "
            f"activations {', '.join(map(str, a_set))}-bit")
    budget = mixed.get("budget") or {}
    if budget.get("bytes") is not None and mixed.get("weight_bytes") is not None:
        met = "met" if mixed["weight_bytes"] <= budget["bytes"] else "NOT met"
        text += (f"; size budget {budget.get('size_budget')!s} = {budget['bytes']:,} bytes, stored "
                 f"{mixed['weight_bytes']:,} bytes ({met})")
    elif budget.get("avg_w_bits") is not None and mixed.get("avg_w_bits") is not None:
        met = "met" if mixed["avg_w_bits"] <= budget["avg_w_bits"] + 1e-9 else "NOT met"
        text += f"; budget {budget['avg_w_bits']:g} bits per weight, reached {mixed['avg_w_bits']:.3f} ({met})"
    if budget.get("avg_a_bits") is not None and mixed.get("avg_a_bits") is not None:
        text += f"; activation budget {budget['avg_a_bits']:g} bits per value, reached {mixed['avg_a_bits']:.3f}"
    return text + "; chosen per layer from the synthetic images, see Bits per layer)"


def _layer_rows(mixed: Mapping[str, Any] | None) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Rows of the card's per-layer tables (weights, activations) from the mixed-precision record."""
    if not mixed:
        return [], []
    weights = [{"name": str(r["name"]), "params": f"{int(r['params']):,}", "bits": str(r["w_bits"]),
                "bytes": f"{int(r['bytes']):,}", "kl": "–" if r.get("kl") is None else f"{r['kl']:.3g}"}
               for r in mixed.get("layers") or []]
    acts = [{"name": str(r["name"]), "elements": f"{int(r['elements']):,}", "bits": str(r["a_bits"]),
             "kl": "–" if r.get("kl") is None else f"{r['kl']:.3g}"} for r in mixed.get("activations") or []]
    return weights, acts


def resumed_note(resumed: Mapping[str, Any] | None) -> str:
    """What a wall time of a resumed run covers: " (2 parts of a resumed run, added up)" or " (the last part only
    of a resumed run)"; empty for a run done in one go."""
    if not resumed:
        return ""
    parts = resumed.get("parts")
    if resumed.get("summed") and parts:
        return f" ({parts} parts of a resumed run, added up)"
    return " (the last part only of a resumed run)"


_USED_FROM_RECORD: dict[str, tuple[str, str]] = {
    "calibration_num_images": ("calibration", "num_images"),
    "num_images": ("synthetic", "num_images"),
    "synthesis_iterations": ("synthetic", "iterations"),
}
"""Config fields whose value can differ from what ran, and the record (and key) that says what ran: the card shows
both (e.g. ``calibration_num_images`` 512 with a 32-image synthetic set: 32 used)."""


def _bits_text(cfg: SynQConfig, coverage: Mapping[str, Any] | None = None,
               mixed: Mapping[str, Any] | None = None) -> str:
    """E.g. ``W4A4 (4-bit weights, 4-bit activations, ...; coverage: ...)``; the label before `` (`` is only
    ``WxAy`` when the coverage report confirms every quantized layer is at those bits with no unruled gap.
    Per-layer bits (``layer_w_bits``/``layer_a_bits``): ``W3.47A4 mixed (...)`` with the budget met."""
    if _is_mixed(cfg):
        return _mixed_bits_text(cfg, mixed)
    label = f"W{cfg.w_bits}A{cfg.a_bits}"
    if coverage:
        w_bits, a_bits = set(coverage.get("weight_bits") or []), set(coverage.get("input_bits") or [])
        allowed_w = {cfg.w_bits, cfg.first_layer_bits, cfg.last_layer_bits} - {None}
        allowed_a = {cfg.a_bits, cfg.first_layer_bits, cfg.last_layer_bits} - {None}
        if coverage.get("gaps") or not w_bits <= allowed_w or not a_bits <= allowed_a:
            label = f"mixed precision (weights {sorted(w_bits)}-bit, layer inputs {sorted(a_bits)}-bit)"
    text = f"{label} ({cfg.w_bits}-bit weights, {cfg.a_bits}-bit activations"
    overrides = [f"{which} layer {bits}-bit" for which, bits in
                 (("first", cfg.first_layer_bits), ("last", cfg.last_layer_bits)) if bits is not None]
    text += f"; {', '.join(overrides)}" if overrides else ", first and last layers included"
    if coverage:
        text += (f"; coverage ({coverage.get('placement')} placement): {coverage.get('quantized_layers')} conv/linear "
                 f"layers quantized, {coverage.get('quantized_inputs')} of their inputs quantized")
        rules = coverage.get("float_by_rule") or {}
        if rules:
            text += "; float by rule: " + ", ".join(f"{name} ({v.get('count')}: {v.get('rule')})"
                                                   for name, v in rules.items())
        if coverage.get("gaps"):
            text += f"; {coverage['gaps']} activation(s) left float without a rule"
    return text + ")"


def _check_keys(what: str, data: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{what} has unknown key(s) {unknown}; allowed: {sorted(allowed)}")


def _method(results: Mapping[str, Any], training: Mapping[str, Any], method: str | None = None) -> str:
    method = method or results.get("method") or training.get("method")
    if method is None:
        measured = [m for m in METHOD_CARDS if f"{m}_top1" in results]
        method = measured[-1] if measured else "synq"
    if method not in METHOD_CARDS:
        raise ConfigError(f"method={method!r} is not allowed; choose one of {list(METHOD_CARDS)}")
    return method


def ranges_phrase(cfg: SynQConfig) -> str:
    """E.g. "searched ranges", "min-max ranges" or "min-max weight ranges, searched activation ranges"."""
    weights, acts = _RANGE_WORDS[cfg.weight_range_init], _RANGE_WORDS[cfg.act_range_init]
    if weights == acts:
        return f"{weights} ranges"
    return f"{weights} weight ranges, {acts} activation ranges"


def _method_text(template: str, cfg: SynQConfig, calibration: Mapping[str, Any], **more: str) -> str:
    zero_shot = calibration.get("source", "synthetic") == "synthetic"
    return template.format(ranges=ranges_phrase(cfg), data=_calibration_phrase(calibration),
                           no_real_data=" (no real data)" if zero_shot else "",
                           plus_synq=" + SynQ" if cfg.reconstruct_synq else "", **more)


def method_row(method: str, cfg: SynQConfig, calibration: Mapping[str, Any]) -> str:
    """The results-table label of ``method`` as it ran: its ranges and what calibrated them."""
    return _method_text(METHOD_CARDS[method].row, cfg, calibration)


def _accuracy(results: Mapping[str, Any], key: str) -> float | None:
    value = results.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 100.0:
        raise ConfigError(f"results[{key!r}]={value!r} must be an accuracy in percent (0-100)")
    return round(float(value), 2)


def _calibration_phrase(calibration: Mapping[str, Any]) -> str:
    """E.g. '256 real images from `cifar10-test.parquet`' or '512 synthetic images'."""
    n = calibration.get("num_images")
    count = f"{_fmt(n)} " if n is not None else ""
    source = calibration.get("source", "synthetic")
    if source == "real":
        data = calibration.get("data")
        return f"{count}real images" + (f" from `{data}`" if data else "")
    if source == "synthetic":
        kind = {True: "low-pass filtered ", False: "unfiltered "}.get(calibration.get("filtered"), "")
        return f"{count}{kind}synthetic images"
    return f"{count}user-provided images"


def _eval_results(
    results: Mapping[str, Any], method: str, bits: str, labels: Mapping[str, str]
) -> tuple[list[Any], list[dict[str, str]]]:
    """(EvalResult entries for model-index: this model's own metrics only, rows of the results table).

    The float and PTQ numbers measured for comparison appear only in the body table, never in model-index,
    so no leaderboard mistakes them for this model's.
    """
    from huggingface_hub import EvalResult

    dataset = results.get("dataset")
    if not isinstance(dataset, str) or not dataset:
        raise ConfigError("results needs 'dataset' (a Hub dataset id or a short name of the evaluation data)")
    common = dict(
        task_type="image-classification",
        task_name="Image Classification",
        dataset_type=dataset,
        dataset_name=str(results.get("dataset_name") or dataset),
        dataset_config=results.get("dataset_config"),
        dataset_split=results.get("split"),
    )
    entries = [("fp", "Float base model (reference)", "float")]
    entries += [(m, labels[m] + ("" if m == method else " (reference)"), bits) for m in METHOD_CARDS]
    own, rows = [], []
    for prefix, label, row_bits in entries:
        top1, top5 = _accuracy(results, f"{prefix}_top1"), _accuracy(results, f"{prefix}_top5")
        if top1 is None and top5 is None:
            continue
        this = prefix == method
        if this:
            for k, value in ((1, top1), (5, top5)):
                if value is not None:
                    own.append(EvalResult(**common, metric_type="accuracy" if k == 1 else "top_5_accuracy",
                                          metric_name=f"Top-{k} accuracy", metric_value=value))
        rows.append({
            "label": f"**{label} — this model**" if this else label,
            "bits": row_bits,
            "top1": f"{top1:.2f}" if top1 is not None else "–",
            "top5": f"{top5:.2f}" if top5 is not None else "–",
        })
    if not rows:
        raise ConfigError("results holds no accuracy: give at least one of fp_top1, ptq_top1, synq_top1, "
                          "reconstruct_top1")
    return own, rows


def _texts(cfg: SynQConfig, method: str, synthetic: Mapping[str, Any], training: Mapping[str, Any],
           calibration: Mapping[str, Any]) -> dict[str, str]:
    """The prose of 'What was done', from the run's record (what actually ran, not the config's defaults)."""
    family = synthetic.get("family")
    objective = {
        "cnn": "match the batch statistics at every BatchNorm layer to the running statistics",
        "vit": "maximize the entropy of patch-similarity densities in every block (PSAQ-ViT)",
        "swin": "maximize the entropy of patch-similarity densities in every block (PSAQ-ViT)",
    }.get(family, "match the BatchNorm statistics (CNNs) or maximize patch-similarity entropy (ViTs)")
    lr = f" (Adam, lr {cfg.synthesis_lr:g})" if cfg.synthesis_lr is not None else ""
    lpf = (f"They were then low-pass filtered (Gaussian, D0 = {cfg.lpf_d0:g}, {cfg.lpf_mode.replace('_', ' ')})."
           if cfg.lpf_d0 else "No low-pass filter was applied.")
    if synthetic:
        n = synthetic.get("num_images")
        iters = synthetic.get("iterations")
        synthesis = (
            f"{_fmt(n)} images were generated from the base model alone, without any real image: starting from "
            f"Gaussian noise with random labels, the pixels were optimized for {_fmt(iters)} iterations{lr} to "
            f"{objective}, plus a hard-sample cross-entropy toward the labels. "
            + (lpf if METHOD_CARDS[method].trained and method != "reconstruct" else "")
        ).strip()
    else:
        synthesis = "None: no images were synthesized for this model."
    sym = {True: "symmetric ", False: "asymmetric ", None: ""}[cfg.weight_symmetric]
    wrange = ("min-max" if cfg.weight_range_init == "minmax"
              else f"min-max shrunk per channel to the lowest L{cfg.range_search_p:g} error")
    arange = (f"an EMA (momentum {cfg.ema_momentum:g}) of min/max" if cfg.act_range_init == "minmax"
              else f"the clip with the lowest L{cfg.range_search_p:g} error (histogram search)")
    trained = METHOD_CARDS[method].trained
    quant = (
        f"Weights of every quantized convolution and linear layer: {cfg.weight_granularity.replace('_', '-')} {sym}"
        f"{wrange}, " + ("bits per layer (below)" if cfg.layer_w_bits else f"{cfg.w_bits}-bit")
        + (", step sizes then learned (LSQ)" if cfg.learnable_weight_scale and trained else "")
        + f". Activations: per-tensor {'symmetric' if cfg.act_symmetric else 'asymmetric'} {cfg.a_bits}-bit at the "
        f"positions of the architecture's placement rule (see the coverage in results.json), ranges from {arange} "
        f"over {_calibration_phrase(calibration)}, then "
        f"{'learned (LSQ)' if cfg.learnable_act_scale and trained else 'frozen'}. Gradients: {cfg.ste} "
        "straight-through estimator."
    )
    if not trained:
        finetune = "None: this is post-training quantization (calibration only); nothing was fine-tuned."
    elif method == "reconstruct":
        finetune = _reconstruction_text(cfg, training)
    else:
        steps, epochs = training.get("steps"), training.get("epochs")
        length = (f"{steps} steps" + (f" ({_fmt(epochs)} epochs)" if epochs is not None else "")
                  if steps is not None else "an unrecorded number of steps")
        tau = f"{cfg.tau:g}" if cfg.tau is not None else "auto"
        cam = f"{cfg.lambda_cam:g}"
        batch = training.get("batch_size") or cfg.train_batch_size
        finetune = (
            f"The quantized student was trained against the float teacher on the synthetic images for {length} "
            f"with SynQ's loss (Eq. 6): {'' if cfg.kd_weight == 1 else f'{cfg.kd_weight:g} × '}KL(teacher ‖ student) "
            f"at temperature {cfg.kd_temperature:g} (× T²), plus "
            f"{cfg.lambda_ce:g} × cross-entropy on easy samples only (teacher difficulty 1 − p_y ≤ τ = {tau}), plus "
            f"{cam} × Grad-CAM alignment (CNNs: at the "
            f"{'last conv output, as the authors' if cfg.cam_layer == 'last_conv' else 'global-pool input: classic CAM'}"
            f"; target: {cfg.cam_target}). SGD"
            + (f" lr {cfg.learning_rate:g}" if cfg.learning_rate is not None else "")
            + f", momentum {cfg.momentum:g}, weight decay {cfg.weight_decay:g}"
            + (f", gradient norm clipped at {cfg.max_grad_norm:g}" if cfg.max_grad_norm else ", no gradient clipping")
            + (f", augmentation {cfg.augment.replace('_', ' + ')}" if cfg.augment != "none" else "")
            + (f", batch {batch}" if batch else "")
            + f"; BatchNorm statistics frozen; seed {cfg.seed}."
        )
    title = {"ptq": "Fine-tuning", "reconstruct": "Block reconstruction"}.get(method, "Fine-tuning")
    return {"synthesis_text": synthesis, "quant_text": quant, "finetune_text": finetune, "finetune_title": title}


def _reconstruction_text(cfg: SynQConfig, training: Mapping[str, Any]) -> str:
    """How block reconstruction made the model (the card's step 3), from the config that ran."""
    units = training.get("units")
    steps = training.get("steps_per_unit") or cfg.reconstruct_iterations
    rule = ("the first layer's weights at 8 bits reading the float image and the last layer's weights and input at "
            "8 bits (Genie's rule)" if cfg.layer_rule == "genie" else "every layer at the same bit-width (uniform rule)")
    text = (
        "Post-training quantization by block reconstruction (BRECQ/QDrop/Genie, zero-shot): "
        + (f"{units} units" if units else "the units")
        + f" (the stem, each block the architecture registry names, the head) were reconstructed one after another "
        f"in network order, each against the float network's output of the same unit, from the inputs the already "
        f"reconstructed units produce: {steps} Adam steps per unit of {cfg.reconstruct_batch_size} images, AdaRound "
        f"soft rounding of the weights (rounding variables lr {cfg.reconstruct_lr:g}, regulariser weight "
        f"{cfg.reconstruct_round_weight:g}, off for the first {cfg.reconstruct_warmup:g} of the steps, then beta from "
        f"{cfg.reconstruct_beta_start:g} to {cfg.reconstruct_beta_end:g}), per-channel weight step sizes learned from "
        f"the searched clip (lr {cfg.reconstruct_lr_weight_scale:g}), LSQ activation ranges learned from the searched "
        f"ones (lr {cfg.reconstruct_lr_act_scale:g}), QDrop with probability {cfg.reconstruct_qdrop:g}; {rule}. "
        "The rounding is hard at the end, so the weights are plain integer codes."
    )
    if cfg.reconstruct_synq:
        tau = f"{cfg.tau:g}" if cfg.tau is not None else "auto"
        if cfg.reconstruct_synq_stage == "last_block":
            text += (f" SynQ on top: {_reconstruction_images_phrase(cfg)}, and the last block's loss added "
                     f"{cfg.lambda_ce:g} × selective cross-entropy (τ = {tau}) and {cfg.lambda_cam:g} × Grad-CAM "
                     "alignment on the network output (the CAM term only where the Grad-CAM target lies inside the "
                     "block's trained layers; not on ViTs).")
        else:
            text += (f" SynQ on top: {_reconstruction_images_phrase(cfg)}, and after the last unit "
                     f"{cfg.reconstruct_synq_steps} steps of SynQ's loss on the whole network ({cfg.kd_weight:g} × KD at "
                     f"T = {cfg.kd_temperature:g}, {cfg.lambda_ce:g} × selective cross-entropy with τ = {tau}, "
                     f"{cfg.lambda_cam:g} × Grad-CAM alignment) trained the step sizes, activation ranges, biases "
                     "and normalization affines, every integer weight kept.")
    return text + f" Seed {cfg.seed}."


def _reconstruction_images_phrase(cfg: SynQConfig) -> str:
    """What reconstruction + SynQ ran on: the filtered images, each image raw and filtered, or the raw ones."""
    filtered, copies = reconstruction_image_copies(cfg)
    if not filtered:
        return "the images were not low-pass filtered"
    if copies == 2:
        return (f"each image was used twice, as synthesized and low-pass filtered (Gaussian, D0 = {cfg.lpf_d0:g}; "
                "the ranges were calibrated on the unfiltered ones)")
    return f"the images were low-pass filtered (Gaussian, D0 = {cfg.lpf_d0:g})"


def _synthetic_dataset_text(dataset_repo: str | None) -> str:
    if dataset_repo:
        return (f"The synthetic images are published as the dataset "
                f"[{dataset_repo}](https://huggingface.co/datasets/{dataset_repo}).")
    return "The synthetic images were not published."


def _check_card_inputs(library: str, repo_id: str | None, dataset_repo: str | None, base_model: Any) -> None:
    """One-line errors for what a card cannot be rendered with."""
    if library not in _LIBRARIES:
        raise ConfigError(f"library={library!r} is not supported; choose one of {list(_LIBRARIES)}")
    if repo_id is not None and not is_repo_id(repo_id):
        raise ConfigError(f"repo_id={repo_id!r} is not a Hub repo id of the form 'user/name'")
    if dataset_repo is not None and not is_repo_id(dataset_repo):
        raise ConfigError(f"dataset repo {dataset_repo!r} is not a Hub repo id of the form 'user/name'")
    if not isinstance(base_model, str) or not base_model.strip():
        raise ConfigError("base_model must name the float model (a Hub id, timm name or folder)")


def _data_texts(method: str, calibration: Mapping[str, Any], calibrated_on: str, zero_shot: bool) -> dict[str, str]:
    """What data the model saw, and the limitation that follows: zero-shot, or calibrated on real data."""
    if zero_shot:
        used = "calibration and fine-tuning" if METHOD_CARDS[method].trained else "calibration"
        return {
            "data_note": f"The quantized models never saw these images (or any real image): {used} used only "
                         "synthetic images generated from the base model.",
            "data_limitation": "- Zero-shot: no real image was used to quantize this model, so its accuracy depends "
                               "on how well the\n  synthetic images cover what the base model learned; classes the "
                               "base model is unsure about suffer most.",
        }
    skipped = f" (the first {calibration['skip']} rows skipped)" if calibration.get("skip") else ""
    return {
        "data_note": f"This model's activation ranges were calibrated on {calibrated_on}{skipped}.",
        "data_limitation": f"- Calibrated on {calibrated_on}: data unlike it may fall outside the calibrated ranges.",
    }


def _config_rows(cfg: SynQConfig, used: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """The card's settings table: each field's value (or "replaced by the budget"), the value used, its help."""
    help_text = SynQConfig.field_help()
    replaced = budget_replaces(cfg)
    return [
        (f.name, ("replaced by the budget" if f.name in replaced else _fmt(getattr(cfg, f.name))).replace("|", "\\|"),
         f"{_fmt(used[f.name])} used" if used.get(f.name) not in (None, getattr(cfg, f.name)) else "",
         help_text[f.name].replace("|", "\\|"))
        for f in dataclasses.fields(cfg)
    ]


def render_model_card(
    *,
    repo_id: str | None = None,
    base_model: str,
    library: str,
    synq_config: Mapping[str, Any] | SynQConfig,
    results: Mapping[str, Any] | None = None,
    synthetic_data: Mapping[str, Any] | None = None,
    training: Mapping[str, Any] | None = None,
    license: str | None = None,
    extra_tags: Iterable[str] = (),
    recipe: str | None = None,
    model_name: str | None = None,
    calibration: Mapping[str, Any] | None = None,
    method: str | None = None,
    load_id: str | None = None,
    coverage: Mapping[str, Any] | None = None,
    mixed_precision: Mapping[str, Any] | None = None,
    reference_calibration: Mapping[str, Any] | None = None,
    resumed: Mapping[str, Any] | None = None,
    dataset_repo: str | None = None,
) -> Any:
    """Render the card of a quantized model as a ``huggingface_hub.ModelCard`` (save it as ``README.md``).

    ``results`` holds accuracies in percent (``fp_top1``, ``ptq_top1``, ``synq_top1`` and ``*_top5``) with
    ``dataset`` (Hub id or short name), optional ``dataset_name``, ``split``, ``num_samples`` and ``method``
    (``"synq"`` or ``"ptq"``: which row is this model; default from the keys given). ``synthetic_data``
    (``num_images``, ``iterations``, ``seed``, ``family``, ``wall_time_s``, ``dataset_repo``...) and
    ``training`` (``steps`` actually trained, ``wall_time_s`` of the whole run, ``hardware``...) are shown as
    tables. ``calibration`` says what calibrated the activation ranges (``source``: ``"synthetic"``,
    ``"real"`` with ``data``, or ``"provided"``; ``num_images``): only a model calibrated and trained on
    synthetic images alone is called zero-shot. ``method`` (``"synq"``/``"ptq"``) defaults from the other
    records. ``repo_id`` (or ``load_id``, e.g. the folder name) is what the loading snippet loads. ``coverage`` is
    ``synq_hf.quant.coverage.coverage_summary`` of the model: which layers and inputs are quantized.
    ``mixed_precision`` (``MixedPrecisionPlan.to_record()``) adds the budget and the per-layer bits table.
    ``reference_calibration`` is the calibration record of the reference rows (the PTQ a SynQ model is compared
    with). ``resumed`` (``{"parts": N, "summed": bool}``) marks a run resumed after an interruption: wall times
    then say whether they add up every part or cover the last one only. ``dataset_repo`` (default:
    ``synthetic_data["dataset_repo"]``) is the dataset repo of the published synthetic images, linked from the card.

    Every label comes from these records and the config (ranges, image counts, real or synthetic data): the card
    states what ran, and :data:`METHOD_CARDS` names each method.
    """
    from huggingface_hub import ModelCard, ModelCardData

    from ..version import __version__

    _check_card_inputs(library, repo_id, dataset_repo, base_model)
    cfg = synq_config if isinstance(synq_config, SynQConfig) else SynQConfig.from_dict(dict(synq_config))
    results, synthetic, training, calibration = (
        sanitize(dict(d or {})) for d in (results, synthetic_data, training, calibration))
    _check_keys("results", results, _RESULT_KEYS)
    hub_id = hub_base_model(base_model)
    base_display, base_name = _base_display(base_model, hub_id)
    method = _method(results, training, method)
    calibration.setdefault("source", "synthetic")
    if "num_images" not in calibration and calibration["source"] == "synthetic" and synthetic.get("num_images"):
        calibration["num_images"] = min(cfg.calibration_num_images, int(synthetic["num_images"]))
    # what calibrated the reference rows (the PTQ a SynQ run is compared with): its own record, else this model's
    # images without the claim that they were filtered (only fine-tuning filters them)
    reference = sanitize(dict(reference_calibration)) if reference_calibration else {
        k: v for k, v in calibration.items() if k != "filtered"}
    zero_shot = calibration["source"] == "synthetic"
    mixed = _is_mixed(cfg)
    bits_short = _mixed_short(cfg, mixed_precision) if mixed else f"W{cfg.w_bits}A{cfg.a_bits}"
    tag = ("mixed-" + bits_short.removesuffix(" mixed")).lower() if mixed else f"w{cfg.w_bits}a{cfg.a_bits}"
    model_name = _scrub(model_name or (repo_id.split("/", 1)[1] if repo_id else f"{base_name}-{method}-{tag}"))
    load_id = repo_id or _scrub(load_id or model_name)
    bits_text = _bits_text(cfg, coverage, mixed_precision)
    weight_rows, act_rows = _layer_rows(mixed_precision)
    calibrated_on = _calibration_phrase(calibration)
    labels = {m: method_row(m, cfg, calibration if m == method else reference) for m in METHOD_CARDS}
    evals, result_rows = _eval_results(results, method, bits_short, labels) if results else ([], [])
    records = {"calibration": calibration, "synthetic": synthetic}
    used = {name: records[record].get(key) for name, (record, key) in _USED_FROM_RECORD.items()}
    times_note = resumed_note(resumed)
    dataset_repo = dataset_repo or synthetic.get("dataset_repo")

    tags = ["synq-hf", "quantized", *(["zero-shot-quantization"] if zero_shot else []), "fake-quantization", tag,
            *(["mixed-precision"] if mixed else []), method, library]
    tags += [t for t in (_scrub(str(t)) for t in extra_tags) if t not in tags]
    data = ModelCardData(
        base_model=hub_id,
        library_name="synq-hf",  # what loads it (synq_hf.load_model); plain timm refuses a packed folder
        pipeline_tag="image-classification",
        tags=tags,
        license=license,
        model_name=model_name,
        eval_results=evals or None,
        metrics=["accuracy"] if evals else None,
        datasets=[dataset_repo] if dataset_repo else None,
    )
    if hub_id is not None:
        data.base_model_relation = "quantized"
    context = {
        "model_name": model_name,
        "load_id": load_id,
        "library": library,
        "base_display": base_display,
        "method_title": _method_text(METHOD_CARDS[method].title, cfg, calibration),
        "summary": _method_text(METHOD_CARDS[method].summary, cfg, calibration, bits=bits_text.split(" (")[0],
                                base=base_display),
        **_data_texts(method, calibration, calibrated_on, zero_shot),
        "load_comment": "a Hub repo id" if repo_id else "this folder (its path), or its Hub repo id once pushed",
        "bits_text": bits_text,
        "bits_short": bits_short,
        "layer_rows": weight_rows,
        "act_rows": act_rows,
        "synq_hf_version": __version__,
        "recipe": _scrub(recipe) if recipe else None,
        "result_rows": result_rows,
        "eval_dataset_display": results.get("dataset_name") or results.get("dataset"),
        "eval_split": results.get("split"),
        "eval_num_samples": f"{results['num_samples']:,}" if results.get("num_samples") else None,
        "synthetic_rows": _rows(synthetic, _SYNTHETIC_LABELS, times_note),
        "synthetic_dataset_text": _synthetic_dataset_text(dataset_repo),
        "training_rows": _rows(training, _TRAINING_LABELS, times_note),
        "config_rows": _config_rows(cfg, used),
        "license_text": (
            f"`{license}`, inherited from the base model." if license else
            "The license of the base model applies; see its model card."
        ),
        "base_citation": (
            f"{base_display} — cite it as its model card asks; {_LIBRARY_CITATIONS[library]}" if hub_id else
            f"{base_display}; {_LIBRARY_CITATIONS[library]}"
        ),
        **_texts(cfg, method, synthetic, training, calibration),
    }
    card = ModelCard.from_template(data, template_str=template_text(), **sanitize(context))
    return ModelCard(_scrub(card.content))


def _record_base_model(base_model: str) -> str:
    """``base_model`` as the record keeps it: the same card, never a local path.

    A Hub id or timm name stays; a local folder becomes ``local-dir:./NAME`` (shown as "`NAME` (a local model
    folder)", like its full path) and any other name ``local-dir:NAME`` (shown as "`NAME`", never resolved on the
    Hub at push time).
    """
    raw = base_model.strip()
    if hub_base_model(raw) is not None:
        return raw
    display, name = _base_display(raw, None)
    return f"local-dir:./{name}" if display.endswith("(a local model folder)") else f"local-dir:{name}"


def save_model_card(folder: str | os.PathLike, **fields: Any) -> Any:
    """Render the card from ``fields`` (keyword arguments of :func:`render_model_card`), save it as ``folder``'s
    ``README.md`` and its inputs as :data:`CARD_RECORD`; returns the card.

    The record is scrubbed like the card (no token, no local path: a local base model is kept by its folder name)
    and names the model as the card does, so re-rendering it with a ``repo_id`` changes only what points at the repo.
    """
    from ..version import __version__

    card = render_model_card(**fields)
    inputs = {k: v for k, v in fields.items() if v is not None}
    cfg = inputs["synq_config"]
    inputs["synq_config"] = cfg.to_dict() if isinstance(cfg, SynQConfig) else dict(cfg)
    inputs["extra_tags"] = list(inputs.get("extra_tags", ()))
    inputs["model_name"] = card.data.model_name  # the card's title, kept when it is pushed under another name
    inputs = sanitize(inputs)
    inputs["base_model"] = _record_base_model(fields["base_model"])
    record = {"synq_hf_version": __version__, "template": TEMPLATE_NAME, "render_model_card": inputs}
    folder = Path(folder)
    card.save(folder / "README.md")
    (folder / CARD_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return card


def render_card_record(record: Mapping[str, Any], *, repo_id: str | None = None,
                       dataset_repo: str | None = None) -> Any:
    """The card of a :data:`CARD_RECORD` record, re-rendered by :func:`render_model_card` with ``repo_id`` (what the
    loading, evaluate and export lines name) and ``dataset_repo`` (the published synthetic images) as inputs."""
    inputs = dict(record["render_model_card"])
    inputs.update({k: v for k, v in (("repo_id", repo_id), ("dataset_repo", dataset_repo)) if v is not None})
    return render_model_card(**inputs)


def card_for_hub(folder: str | os.PathLike, repo_id: str, dataset_repo: str | None = None) -> str:
    """The ``README.md`` a push of ``folder`` to ``repo_id`` sends (the local file is never changed).

    When ``folder``'s README.md is exactly the card of its :data:`CARD_RECORD`, the card is rendered again from that
    record with ``repo_id`` (and ``dataset_repo``, linked as the synthetic images) as inputs. A README.md edited
    after saving is the user's: it is sent with every edit kept, and only its loading snippet, ``synq-hf
    evaluate``/``export`` lines and synthetic-dataset link are pointed at the repo (:func:`retarget_card`).
    """
    if not is_repo_id(repo_id):
        raise ConfigError(f"repo_id={repo_id!r} is not a Hub repo id of the form 'user/name'")
    folder = Path(folder)
    readme = (folder / "README.md").read_bytes().decode("utf-8")
    try:
        record = json.loads((folder / CARD_RECORD).read_text(encoding="utf-8"))
        saved = str(render_card_record(record))
    except (OSError, ValueError, KeyError, TypeError, SynQError):  # no readable record: nothing to re-render
        saved = None
    if saved == readme:
        return str(render_card_record(record, repo_id=repo_id, dataset_repo=dataset_repo))
    # Re-rendering cannot give this README.md (edited by hand, or saved without a card.json or by another synq_hf
    # version): keep its text and change only the lines that name the folder instead of the repo.
    return retarget_card(readme, repo_id, dataset_repo)


def retarget_card(content: str, repo_id: str, dataset_repo: str | None = None) -> str:
    """A card's text pointing its loading snippet at ``repo_id`` and, if given, linking ``dataset_repo``.

    Edits the text in place, for a card that cannot be rendered again (see :func:`card_for_hub`); a card with its
    record is re-rendered instead.
    """
    from huggingface_hub import ModelCard

    if not is_repo_id(repo_id):
        raise ConfigError(f"repo_id={repo_id!r} is not a Hub repo id of the form 'user/name'")
    card = ModelCard(content)
    text = re.sub(r'load_model\("[^"\n]*"\)(  # [^\n]*)?', f'load_model("{repo_id}")  # a Hub repo id', card.text)
    text = re.sub(r"synq-hf evaluate \S+ ", f"synq-hf evaluate {repo_id} ", text)
    text = re.sub(r"synq-hf export \S+ ", f"synq-hf export {repo_id} ", text)
    if dataset_repo is not None:
        if not is_repo_id(dataset_repo):
            raise ConfigError(f"dataset repo {dataset_repo!r} is not a Hub repo id of the form 'user/name'")
        text = re.sub(
            r"(<!-- synq-hf:synthetic-dataset -->\n).*?(\n<!-- /synq-hf:synthetic-dataset -->)",
            lambda m: m.group(1) + _synthetic_dataset_text(dataset_repo) + m.group(2),
            text,
            flags=re.S,
        )
        datasets = list(card.data.datasets or [])
        card.data.datasets = datasets + [dataset_repo] if dataset_repo not in datasets else datasets
    card.text = text
    return _scrub(card.content)
