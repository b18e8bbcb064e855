"""``SynQQuantizer``: the one object users drive — load a teacher, synthesize, quantize, evaluate, save, push.

Each step works alone and records what it did (timings, settings, measured accuracies), so the
saved folder's model card and ``results.json`` describe exactly the run that produced them.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from .apply import calibrate, iter_batches, quantize_model
from .config import SynQConfig, reconstruction_image_copies
from .distributed import default_device
from .errors import AlreadyQuantizedError, DataError, SynQError
from .hub.outputs import is_local_name, public_name, write_output
from .pipeline import LoadedModel, match_spec, resolve_config

RESULTS_NAME = "results.json"
Which = Literal["synq", "ptq", "reconstruct", "float"]


class SynQQuantizer:
    """Zero-shot quantization of one teacher classifier (SynQ, ICLR 2025).

    >>> q = SynQQuantizer.from_pretrained("local-dir:teachers/cifar10-resnet20", w_bits=4, a_bits=4)  # doctest: +SKIP
    >>> q.synthesize(); q.quantize(); q.evaluate("cifar10-test.parquet"); q.save_pretrained("out")  # doctest: +SKIP

    ``config`` holds every knob; fields left ``None`` get the paper's value for the teacher's family
    and input size (``SynQConfig.resolve``). The quantized model is kept as ``.model``.
    """

    def __init__(
        self, teacher: LoadedModel, config: SynQConfig | None = None, *, device: str | torch.device | None = None
    ) -> None:
        if teacher.is_quantized:
            raise AlreadyQuantizedError.for_model(teacher.model_id, teacher.base_model)
        self.teacher = teacher
        self.spec = match_spec(teacher.model, teacher.spec)  # matched once per run, handed down to every step
        self._requested = config or SynQConfig()  # what the user asked for (synthesize() may change num_images)
        self.config = resolve_config(self._requested, family=teacher.family, input_size=teacher.input_size)
        self.device = torch.device(device) if device is not None else default_device()
        self.teacher.model.to(self.device).eval()
        self.synthetic: Any | None = None
        self.model: nn.Module | None = None
        self.ptq_model: nn.Module | None = None
        self.method: str | None = None
        self.results: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        self.training: dict[str, Any] = {}
        self.recipe: str | None = None
        self.record: dict[str, Any] = {}  # JSON provenance saved in config.json (e.g. calibration source)
        self._start = time.perf_counter()  # total wall time is measured from here to save_pretrained
        from .mixed import check_budget

        # a mixed-precision budget no allocation reaches (or not below the float size) fails here, before synthesis
        self.mixed_size = check_budget(self.teacher.model, self.config)
        self.mixed_plan: Any | None = None

    @classmethod
    def from_pretrained(
        cls,
        model_id: str,
        config: SynQConfig | None = None,
        *,
        trust_remote_code: bool = False,
        device: str | torch.device | None = None,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        **config_overrides: Any,
    ) -> SynQQuantizer:
        """Load the float teacher (timm name, ``timm/<arch>``, ``hf-hub:``, transformers id, folder).

        ``revision``, ``token``, ``cache_dir`` and ``local_files_only`` go to every Hub download, as in
        transformers. Keyword arguments that are ``SynQConfig`` fields override ``config`` (e.g. ``w_bits=4``).
        A folder that :meth:`save_pretrained` wrote is refused (``AlreadyQuantizedError``): load it with
        ``synq_hf.load_model``.
        """
        from .hub.loading import load_model

        config = (config or SynQConfig()).replace(**config_overrides) if config_overrides else config
        loaded = load_model(model_id, trust_remote_code=trust_remote_code, revision=revision, token=token,
                            cache_dir=cache_dir, local_files_only=local_files_only)
        return cls(loaded, config, device=device)

    # -- step 1: synthetic data -------------------------------------------------------------------
    def synthesize(
        self,
        num_images: int | None = None,
        iterations: int | None = None,
        seed: int | None = None,
        *,
        checkpoint_dir: str | os.PathLike | None = None,
        progress: bool = True,
    ) -> Any:
        """Generate the synthetic training set from the teacher (a ``datasets.Dataset``; also ``.synthetic``).

        With ``checkpoint_dir`` every finished group of images is saved there and reused on the next call
        (resuming an interrupted synthesis gives the same pixels as an uninterrupted one).
        """
        from .synthesis import synthesis_metadata, synthesize

        overrides = {"num_images": num_images, "synthesis_iterations": iterations, "seed": seed}
        overrides = {k: v for k, v in overrides.items() if v is not None}
        if num_images is not None and self._requested.synthesis_batch_size is None:
            # a new image count re-derives the batch the user left to resolution (min(num_images, family default))
            overrides["synthesis_batch_size"] = None
            self.config = resolve_config(self.config.replace(**overrides), family=self.teacher.family,
                                         input_size=self.teacher.input_size)
        elif overrides:
            self.config = self.config.replace(**overrides)
        start = time.perf_counter()
        self.synthetic = synthesize(
            self.teacher.model,
            self.config,
            data_config=self.teacher.data_config,
            family=self.teacher.family,
            class_names=self.teacher.class_names,
            teacher_id=self.teacher.model_id,
            device=self.device,
            checkpoint_dir=checkpoint_dir,
            progress=progress,
            spec=self.spec,
        )
        self.timings["synthesis_s"] = time.perf_counter() - start
        self.record_synthetic(self.synthetic)
        meta = synthesis_metadata(self.synthetic)
        self.record["synthesis"]["restarts"] = meta.get("restarts", 0)
        return self.synthetic

    def record_synthetic(self, dataset: Any) -> None:
        """Record what the synthetic set really holds (images, iterations, batch, seed) from its metadata."""
        from .synthesis import synthesis_metadata

        meta = synthesis_metadata(dataset)
        cfg = meta.get("config") or {}
        self.record["synthesis"] = {
            "num_images": len(dataset),
            "iterations": cfg.get("synthesis_iterations"),
            "batch_size": cfg.get("synthesis_batch_size"),
            "seed": meta.get("seed"),
            "family": meta.get("family"),
            "wall_time_s": self.timings.get("synthesis_s"),
        }

    # -- step 2: quantization ---------------------------------------------------------------------
    def allocate_bits(
        self, images: Any | None = None, *, cache_dir: str | os.PathLike | None = None, progress: bool = True
    ) -> Any | None:
        """Mixed precision: choose per-layer bits under the config's budget from the synthetic images (or ``images``).

        Measures each layer's sensitivity (KL to the float model's outputs on the first ``sensitivity_num_images``
        images; cached in ``cache_dir`` when given), allocates the bits exactly, and writes them into
        ``config.layer_w_bits``/``layer_a_bits``. Returns the :class:`synq_hf.mixed.MixedPrecisionPlan` (also
        ``.mixed_plan``), or None when the config has no budget or its bits are already chosen.
        ``quantize()`` and ``ptq()`` call it first.
        """
        from .mixed import needs_allocation, plan_mixed_precision

        layers = list(self.mixed_size.numel) if self.mixed_size is not None else None
        activations = None
        if self.config.avg_a_bits is not None and self.config.layer_a_bits:  # partly given: are all chosen?
            from .mixed import placement_activations

            activations = list(placement_activations(self.teacher.model, self.config))
        if not needs_allocation(self.config, layers, activations):
            return None
        if images is None:
            if self.synthetic is None:
                self.synthesize(progress=progress)
            images = self.synthetic
        tensor = images if isinstance(images, torch.Tensor) else self._pixel_values(images)
        tensor = tensor[: self.config.sensitivity_num_images].float()
        plan = plan_mixed_precision(self.teacher.model, self.config, tensor, cache_dir=cache_dir, device=self.device,
                                    progress=progress, size=self.mixed_size)
        self.config = plan.apply(self.config)
        self.mixed_plan = plan
        self.timings["mixed_precision_s"] = plan.seconds
        self.record["mixed_precision"] = plan.to_record()
        return plan

    def ptq(
        self, calibration: Any | None = None, *, source: dict[str, Any] | None = None, progress: bool = True
    ) -> nn.Module:
        """PTQ baseline (no fine-tuning) with the config's ranges, calibrated on ``calibration`` or the synthetic set.

        ``calibration`` is a tensor of normalized images, a dataset with ``pixel_values`` or ``None``: the
        synthetic set (``.synthetic``, synthesized first if needed), of which PTQ takes exactly the images SynQ
        calibrates on (:func:`synq_hf.training.calibration_images`: low-pass filtered for CNNs), so PTQ and SynQ
        start from the same ranges. Other images are used as given; ``source`` says what they are (e.g.
        ``{"source": "real", "data": "cifar10"}``) for the card. Returns the model (also ``.ptq_model``).
        """
        synthetic = calibration is None or (calibration is self.synthetic and source is None)
        if synthetic:
            from .training import calibration_images

            if self.synthetic is None:
                self.synthesize(progress=progress)
            images = calibration_images(self.synthetic, self.config)
            record = self._synthetic_calibration_record(len(images))
        else:
            images = self._calibration_images(calibration)
            record = dict(source or {"source": "provided"})
            if "data" in record and record["data"] is not None:
                record["data"] = public_name(record["data"])
            record["num_images"] = len(images)
        self.allocate_bits(calibration if calibration is not None else self.synthetic, progress=progress)
        student = quantize_model(copy.deepcopy(self.teacher.model), self.config, spec=self.spec)
        batches = iter_batches(images, self.config.calibration_batch_size)
        total = -(-len(images) // self.config.calibration_batch_size)
        self.ptq_model = calibrate(student, batches, device=self.device, progress=progress, total=total)
        if self.model is None or self.method == "ptq":
            self.model, self.method = self.ptq_model, "ptq"
            self.record["calibration"] = record
        else:
            self.record["ptq_reference_calibration"] = record
        return self.ptq_model

    def quantize(
        self,
        synthetic: Any | None = None,
        max_steps: int | None = None,
        training_args: Any | None = None,
        *,
        output_dir: str | os.PathLike | None = None,
        resume_from_checkpoint: str | bool | None = None,
        progress: bool = True,
        augment: str | None = None,
    ) -> nn.Module:
        """SynQ: calibrate a fake-quantized copy on synthetic data, then fine-tune it against the teacher.

        ``synthetic`` defaults to ``.synthetic`` (synthesized now if absent); ``max_steps`` caps
        fine-tuning; ``augment`` (``"none"``, ``"shift_flip"``, ``"crop_flip"``) sets ``config.augment``;
        ``training_args`` is a ``TrainingArguments`` or a dict of overrides (on the CPU ``use_cpu=True`` unless it
        says otherwise, so that under a launcher the processes fine-tune together with DDP over gloo). Checkpoints
        go to ``output_dir`` (a temporary folder when omitted). Returns the model (also ``.model``).

        With ``config.method="reconstruct"`` this runs :meth:`reconstruct` instead (``output_dir`` is its work
        folder, ``resume_from_checkpoint`` resumes it), and with ``"ptq"`` :meth:`ptq` on the synthetic set.
        """
        from .training import TrainedSteps, finetune

        if self.config.method == "reconstruct":
            return self.reconstruct(synthetic, output_dir=output_dir, resume=bool(resume_from_checkpoint),
                                    progress=progress)
        if self.config.method == "ptq":
            if synthetic is not None:
                self.synthetic = synthetic
                self.record_synthetic(synthetic)
            return self.ptq(progress=progress)
        if augment is not None:
            self.config = self.config.replace(augment=augment)

        if synthetic is not None:
            self.synthetic = synthetic
            self.record_synthetic(synthetic)
        elif self.synthetic is None:
            self.synthesize(progress=progress)
        if max_steps is not None:
            self.config = self.config.replace(max_steps=max_steps)
        self.allocate_bits(progress=progress)
        # A previous fine-tuning froze the shared teacher (requires_grad False); the copy must train.
        student = quantize_model(copy.deepcopy(self.teacher.model), self.config, spec=self.spec).requires_grad_(True)
        if self.device.type == "cpu" and (training_args is None or isinstance(training_args, dict)):
            # under accelerate launch / torchrun the Trainer joins CPU processes (gloo) only when told so
            training_args = {"use_cpu": True, **(training_args or {})}
        steps = TrainedSteps()
        start = time.perf_counter()
        with _work_dir(output_dir) as work:
            self.model = finetune(
                self.teacher,
                student,
                self.synthetic,
                self.config,
                output_dir=work,
                training_args=training_args,
                resume_from_checkpoint=resume_from_checkpoint,
                progress=progress,
                save_final=False,
                callbacks=[steps],
                spec=self.spec,
            )
        self.model.eval()
        if self.method == "ptq" and "calibration" in self.record:  # ptq() ran first: it is now the reference
            self.record["ptq_reference_calibration"] = self.record.pop("calibration")
        if resume_from_checkpoint:  # only this part is timed here (the CLI adds earlier parts: add_earlier_parts)
            self.record.setdefault("resumed", {"parts": None, "summed": False})
        self.method = "synq"
        self.timings["finetune_s"] = time.perf_counter() - start
        self.training = {"steps": steps.state.get("global_step"), "epochs": steps.state.get("epoch"),
                         "batch_size": steps.state.get("batch_size")}
        self.record["calibration"] = self._synthetic_calibration_record(
            min(self.config.calibration_num_images, len(self.synthetic)))
        self.record["training"] = dict(self.training, wall_time_s=self.timings["finetune_s"])
        return self.model

    def add_earlier_parts(self, earlier: dict[str, float], parts: int) -> None:
        """Count the wall time of the earlier parts of an interrupted run that this one resumed.

        ``earlier`` holds their ``synthesis_s``, ``finetune_s`` and ``total_s``; ``parts`` counts every part, this
        one included. results.json and the model card then report the whole run and say it was resumed.
        """
        for key in ("synthesis_s", "finetune_s"):
            if earlier.get(key):
                self.timings[key] = self.timings.get(key, 0.0) + float(earlier[key])
        self._start -= float(earlier.get("total_s") or 0.0)
        for record, key in (("synthesis", "synthesis_s"), ("training", "finetune_s")):
            if record in self.record and key in self.timings:
                self.record[record]["wall_time_s"] = self.timings[key]
        self.record["resumed"] = {"parts": parts, "summed": True}

    def reconstruct(
        self,
        synthetic: Any | None = None,
        *,
        output_dir: str | os.PathLike | None = None,
        resume: bool = False,
        progress: bool = True,
    ) -> nn.Module:
        """Zero-shot PTQ by block reconstruction (Genie/BRECQ/QDrop/AdaRound), SynQ on top with ``reconstruct_synq``.

        ``synthetic`` (a synthetic dataset; default ``.synthetic``, synthesized now with ``reconstruct_num_images``
        images if absent) supplies the images and labels. Each finished block is saved to ``output_dir`` (a
        temporary folder when omitted); ``resume=True`` continues a run interrupted there at its next block.
        Runs on one process. Returns the model (also ``.model``): an ordinary fake-quant model, rounding hard. A
        mixed-precision budget (``size_budget``/``avg_w_bits``) is allocated first (:meth:`allocate_bits`).
        """
        from .reconstruction import reconstruct_model
        from .reconstruction.api import reconstruction_config

        self.config = reconstruction_config(self.config.replace(method="reconstruct"))
        if synthetic is not None:
            self.synthetic = synthetic
            self.record_synthetic(synthetic)
        elif self.synthetic is None:
            self.synthesize(num_images=self.config.reconstruct_num_images, progress=progress)
        columns = getattr(self.synthetic, "column_names", ())
        if "pixel_values" not in columns or "label" not in columns:
            raise DataError("reconstruction needs a synthetic dataset with 'pixel_values' and 'label' columns "
                            "(written by synq-hf synthesize)")
        self.allocate_bits(progress=progress)  # a size/average-bits budget: per-layer bits before any block
        data = self.synthetic.with_format("torch")[: self.config.reconstruct_num_images]
        images, labels = data["pixel_values"].float().to(self.device), data["label"].long().to(self.device)
        work = Path(output_dir) if output_dir is not None else None
        if work is not None and not resume:
            from .reconstruction.engine import PROGRESS_FILE

            if (work / PROGRESS_FILE).is_file():
                raise SynQError(f"{work} holds an interrupted reconstruction: pass resume=True to continue it, or "
                                "delete that folder")
        start = time.perf_counter()
        with _work_dir(output_dir) as folder:
            self.model, report = reconstruct_model(self.teacher.model, images, self.config, labels=labels,
                                                   work_dir=folder, progress=progress)
        self.model.eval()
        self.method = "reconstruct"
        self.timings["reconstruct_s"] = time.perf_counter() - start
        cfg = self.config
        filtered, copies = reconstruction_image_copies(cfg)
        both = copies == 2  # raw images first, then their filtered copies: calibration sees the raw ones
        self.record["calibration"] = {"source": "synthetic", "num_images": min(cfg.calibration_num_images,
                                                                              len(images)),
                                      "filtered": filtered and not both}
        self.record["reconstruction"] = {
            "num_images": len(images), "filtered": filtered, "raw_and_filtered": both,
            "iterations_per_unit": cfg.reconstruct_iterations,
            "batch_size": cfg.reconstruct_batch_size, "units": [u["unit"] for u in report.units],
            "synq": cfg.reconstruct_synq, "synq_stage": cfg.reconstruct_synq_stage if cfg.reconstruct_synq else None,
            "layer_rule": cfg.layer_rule, "wall_time_s": self.timings["reconstruct_s"],
            "resumed_units": report.resumed_units,
        }
        return self.model

    # -- step 3: evaluation -----------------------------------------------------------------------
    def evaluate(
        self,
        data: Any,
        *,
        which: Which | None = None,
        split: str | None = None,
        image_column: str | None = None,
        label_column: str | None = None,
        batch_size: int = 256,
        limit: int | None = None,
        progress: bool = True,
    ) -> dict[str, Any]:
        """Top-1/top-5 (percent) of the quantized model (or ``which="float"``/``"ptq"``) on real data.

        ``data`` is a ``datasets.Dataset`` or a spec accepted by ``synq-hf evaluate --data``. The
        result is recorded (``fp_top1``/``ptq_top1``/``synq_top1``) for the model card.
        """
        from .data import load_image_dataset
        from .evaluation import evaluate_model

        which = which or self.method or "float"
        if which not in ("float", "ptq", "synq", "reconstruct"):
            raise SynQError(f"which={which!r} is not allowed; choose one of ['float', 'ptq', 'synq', 'reconstruct']")
        model = {"float": self.teacher.model, "ptq": self.ptq_model,
                 "synq": self.model if self.method == "synq" else None,
                 "reconstruct": self.model if self.method == "reconstruct" else None}[which]
        if model is None:
            step = {"synq": "quantize()", "reconstruct": "reconstruct()"}.get(which, "ptq()")
            raise SynQError(f"there is no {which!r} model yet: run {step} first")
        name = data if isinstance(data, str) else getattr(getattr(data, "info", None), "dataset_name", None)
        if isinstance(data, str):
            data = load_image_dataset(data, split=split, image_column=image_column, label_column=label_column)
        metrics = evaluate_model(model, data, self.teacher.data_config, batch_size=batch_size, limit=limit,
                                 device=self.device, image_column=image_column, label_column=label_column,
                                 progress=progress)
        prefix = {"float": "fp", "ptq": "ptq", "synq": "synq", "reconstruct": "reconstruct"}[which]
        self.results[f"{prefix}_top1"] = metrics["top1"]
        self.results[f"{prefix}_top5"] = metrics["top5"]
        self.results["eval_data"] = public_name(name) if name else self.results.get("eval_data")
        self.results["eval_split"] = split or self.results.get("eval_split")
        self.results["num_samples"] = metrics["num_samples"]
        return metrics

    # -- step 4: save / push ----------------------------------------------------------------------
    def results_json(self) -> dict[str, Any]:
        """The ``results.json`` record: accuracies (2 decimals), bits, what ran, timings (seconds), hardware."""
        out = {
            "fp_top1": self.results.get("fp_top1"),
            "ptq_top1": self.results.get("ptq_top1"),
            "synq_top1": self.results.get("synq_top1"),
            **({"reconstruct_top1": self.results.get("reconstruct_top1")} if self.method == "reconstruct" else {}),
            "w_bits": None if self.config.layer_w_bits else self.config.w_bits,  # mixed: see mixed_precision
            "a_bits": None if self.config.layer_a_bits else self.config.a_bits,
            "synthesis_s": self.timings.get("synthesis_s"),
            "finetune_s": self.timings.get("finetune_s"),
            **({"reconstruct_s": self.timings.get("reconstruct_s")} if self.method == "reconstruct" else {}),
            "total_s": self.timings.get("total_s", time.perf_counter() - self._start),
            "method": self.method,
            "base_model": public_name(self.teacher.model_id),
            "base_model_local": is_local_name(self.teacher.model_id),
            "hardware": hardware_description(self.device),
        }
        out.update({k: v for k, v in self.results.items() if k not in out})
        out.update({k: v for k, v in self.run_record().items() if k not in out})
        out.update(self._coverage_json())
        out["config"] = self.config.to_dict()  # every setting of the run (config.json keeps only the model's)
        return {k: _rounded(k, v) for k, v in out.items()}

    def run_record(self) -> dict[str, Any]:
        """What actually ran: method, calibration data, synthetic set, fine-tuning steps (JSON, no local path)."""
        return {"method": self.method, **copy.deepcopy(self.record)}

    def _coverage_json(self) -> dict[str, Any]:
        """Coverage hook for results.json (and the card): the summary of the report quantize_model recorded."""
        from .quant.coverage import COVERAGE_ATTR, coverage_summary

        report = getattr(self.model, COVERAGE_ATTR, None) if self.model is not None else None
        return {"coverage": coverage_summary(report)} if report is not None else {}

    def save_pretrained(self, save_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the quantized model, its config, ``results.json`` and a model card to ``save_dir``.

        The card is ``README.md``; ``card.json`` records what it was rendered from, so a push renders it again for
        the repo it goes to.

        The folder is assembled in a temporary sibling and moved into place, so a failure leaves no
        partial output; an existing non-empty folder is refused unless ``overwrite`` and it is an earlier
        synq_hf output (see :mod:`synq_hf.hub.outputs`).
        """
        from .hub.card import save_model_card
        from .hub.checkpoint import save_quantized

        if self.model is None:
            raise SynQError("nothing to save: run quantize() (or ptq()) first")
        target = Path(save_dir)
        self.timings["total_s"] = time.perf_counter() - self._start

        def write(tmp: Path) -> None:
            save_quantized(self.model, tmp, base_model=self.teacher.model_id, library=self.teacher.library,
                           config=self.config, source=self.teacher, extra=self.run_record())
            (tmp / RESULTS_NAME).write_text(json.dumps(self.results_json(), indent=2) + "\n")
            save_model_card(tmp, **self.card_fields(), load_id=target.name)  # README.md and card.json

        return write_output(target, write, overwrite=overwrite, flag="")

    def card_fields(self) -> dict[str, Any]:
        """Everything the model card shows, as keyword arguments of ``render_model_card``."""
        synthetic = None
        syn = self.record.get("synthesis")
        if syn is not None:
            synthetic = {"num_images": syn["num_images"], "iterations": syn.get("iterations"),
                         "batch_size": syn.get("batch_size"), "seed": syn.get("seed"),
                         "family": syn.get("family"), "wall_time_s": self.timings.get("synthesis_s")}
        results: dict[str, Any] | None = {k: v for k, v in self.results.items() if v is not None}
        if not any(k.endswith("_top1") for k in results):
            results = None  # nothing measured: the card says so instead of showing an empty table
        else:
            results["method"] = self.method
        if results and "eval_data" in results:
            results["dataset"] = results.pop("eval_data")
        if results and "eval_split" in results:
            results["split"] = results.pop("eval_split")
        if results:  # evaluated on an in-memory dataset without a name: the card still needs to say on what
            results.setdefault("dataset", "unnamed evaluation data")
        training = {"method": self.method}
        if self.method == "synq":
            training.update(steps=self.training.get("steps"), epochs=self.training.get("epochs"),
                            batch_size=self.training.get("batch_size"),
                            finetune_wall_time_s=self.timings.get("finetune_s"))
        elif self.method == "reconstruct":
            rec = self.record.get("reconstruction", {})
            training.update(units=len(rec.get("units", [])), steps_per_unit=rec.get("iterations_per_unit"),
                            batch_size=rec.get("batch_size"), reconstruct_wall_time_s=self.timings.get("reconstruct_s"))
        training.update(synthesis_wall_time_s=self.timings.get("synthesis_s"),
                        wall_time_s=self.timings.get("total_s", time.perf_counter() - self._start),
                        hardware=hardware_description(self.device))
        return {
            "base_model": self.teacher.model_id,
            "library": self.teacher.library,
            "synq_config": self.config,
            "results": results,
            "synthetic_data": synthetic,
            "calibration": self.record.get("calibration"),
            "reference_calibration": self.record.get("ptq_reference_calibration"),
            "resumed": self.record.get("resumed"),
            "training": training,
            "license": self.teacher.extra.get("license"),
            "recipe": self.recipe,
            "coverage": self._coverage_json().get("coverage"),
            "mixed_precision": self.record.get("mixed_precision"),
        }

    def push_to_hub(
        self,
        repo_id: str,
        private: bool = False,
        token: str | None = None,
        *,
        commit_message: str | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        delete_patterns: str | list[str] | None = None,
        push_synthetic: bool = False,
        save_dir: str | os.PathLike | None = None,
    ) -> str:
        """Save (to ``save_dir`` or a temporary folder) and upload that folder's files in one commit.

        Nothing in the repo is deleted unless it matches ``delete_patterns``; ``revision`` (a branch) and
        ``create_pr`` work as in ``huggingface_hub.HfApi.create_commit``. With ``push_synthetic`` the
        synthetic set goes to the dataset repo ``<repo_id>-synthetic``, linked from the card. Returns the
        commit (or pull request) URL.
        """
        from .hub.push import push_folder_to_hub

        with _work_dir(save_dir) as work:
            folder = Path(work) / "model" if save_dir is None else Path(work)
            self.save_pretrained(folder, overwrite=save_dir is None)
            dataset = self.synthetic if push_synthetic else None
            if push_synthetic and dataset is None:
                raise SynQError("push_synthetic=True but there is no synthetic dataset: run synthesize() first")
            return push_folder_to_hub(folder, repo_id, private=private, token=token, commit_message=commit_message,
                                      revision=revision, create_pr=create_pr, delete_patterns=delete_patterns,
                                      dataset=dataset)

    # -- helpers ----------------------------------------------------------------------------------
    def _synthetic_calibration_record(self, n: int) -> dict[str, Any]:
        """What calibrated on the synthetic set: the first ``n`` images, low-pass filtered (with its D0) or not."""
        filtered = bool(self.config.calibrate_filtered and self.config.lpf_d0)
        record: dict[str, Any] = {"source": "synthetic", "num_images": n, "filtered": filtered}
        if filtered:
            record["lpf_d0"] = self.config.lpf_d0
        return record

    def _calibration_images(self, calibration: Any) -> torch.Tensor:
        """User-given calibration images (a tensor or a dataset with ``pixel_values``), used as they are."""
        images = calibration if isinstance(calibration, torch.Tensor) else self._pixel_values(calibration)
        n = min(len(images), self.config.calibration_num_images)
        return images[:n].float()

    @staticmethod
    def _pixel_values(dataset: Any) -> torch.Tensor:
        if "pixel_values" not in getattr(dataset, "column_names", ()):
            raise DataError("calibration data needs a 'pixel_values' column of normalized images "
                            "(a synthetic dataset); for real images use synq-hf quantize --calibration-data")
        return dataset.with_format("torch")["pixel_values"]


def _rounded(key: str, value: Any) -> Any:
    """Accuracies to 2 decimals and seconds to 0.1 s, so results.json shows no float noise."""
    if isinstance(value, dict):
        return {k: _rounded(k, v) for k, v in value.items()}
    if isinstance(value, float):
        if "_top" in key:
            return round(value, 2)
        if key.endswith("_s"):
            return round(value, 1)
    return value


def hardware_description(device: torch.device) -> str:
    """E.g. ``'cpu (2 threads, x86_64)'`` or ``'cuda: NVIDIA H200'`` for cards and results."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    n = torch.get_num_threads()
    return f"cpu ({n} thread{'' if n == 1 else 's'}, {platform.machine()})"


class _work_dir:
    """The given folder, or a temporary one removed afterwards."""

    def __init__(self, path: str | os.PathLike | None) -> None:
        self.path, self._tmp = path, None

    def __enter__(self) -> str:
        if self.path is not None:
            Path(self.path).mkdir(parents=True, exist_ok=True)
            return os.fspath(self.path)
        self._tmp = tempfile.TemporaryDirectory(prefix="synq-")
        return self._tmp.name

    def __exit__(self, *exc: Any) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()


__all__ = ["SynQQuantizer"]
