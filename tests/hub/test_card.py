"""Model cards: parseable YAML with the measured results, no token or local path, and a loading snippet that runs."""

import re
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

from synq_hf import ConfigError, SynQConfig
from synq_hf.apply import ptq
from synq_hf.demo import digits as D
from synq_hf.evaluation import evaluate_model
from synq_hf.hub.card import (
    CARD_RECORD,
    card_for_hub,
    render_model_card,
    retarget_card,
    sanitize,
    save_model_card,
    template_text,
)
from synq_hf.hub.checkpoint import load_quantized, save_quantized

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz0123"
CFG = SynQConfig(w_bits=4, a_bits=4, seed=3).resolve(family="cnn", input_size=16)


def _card(**overrides):
    kwargs = dict(
        repo_id=None,
        base_model="timm/resnet18.a1_in1k",
        library="timm",
        synq_config=CFG.to_dict(),
        results=dict(fp_top1=91.64, ptq_top1=84.3, synq_top1=89.07, synq_top5=99.41, dataset="cifar10",
                     dataset_name="CIFAR-10 test (first 1,017)", split="test", num_samples=1017),
        synthetic_data=dict(num_images=512, iterations=200, seed=3, family="cnn", wall_time_s=95.2),
        training=dict(steps=300, wall_time_s=1234.5, hardware="2 CPU cores"),
        license="apache-2.0",
    )
    kwargs.update(overrides)
    return render_model_card(**kwargs)


def test_shipped_template_is_the_repository_template():
    assert template_text() == (REPO_ROOT / "model_card_template.md").read_text(encoding="utf-8")


def test_card_yaml_holds_the_measured_results(tmp_path):
    _card().save(tmp_path / "README.md")
    card = ModelCard.load(tmp_path / "README.md")
    data = card.data
    assert data.base_model == "timm/resnet18.a1_in1k" and data.base_model_relation == "quantized"
    assert data.library_name == "synq-hf" and data.pipeline_tag == "image-classification"
    assert data.license == "apache-2.0" and {"w4a4", "synq", "synq-hf"} <= set(data.tags)
    values = {r.metric_type: r.metric_value for r in data.eval_results}
    assert values == {"accuracy": 89.07, "top_5_accuracy": 99.41}  # only this model's own metrics
    assert "91.64" in card.text and "84.30" in card.text  # the references are in the body table
    assert all(r.dataset_type == "cifar10" and r.dataset_split == "test" for r in data.eval_results)
    assert all(r.task_type == "image-classification" for r in data.eval_results)
    assert data.model_name == "resnet18.a1_in1k-synq-w4a4"
    text = card.text
    assert "| **SynQ — this model** | W4A4 | 89.07 | 99.41 |" in text
    assert "| Float base model (reference) | float | 91.64 | – |" in text
    for needle in ("2rnOgyFQgb", "Kim, Minjun and Kim, Jongjin and Kang, U", "https://huggingface.co/timm/resnet18.a1_in1k",
                   "300 steps", "20 min 34 s", "2 CPU cores", "`lambda_cam` | `50`", "`seed` | `3`"):
        assert needle in text, needle
    # every SynQConfig field is listed
    assert len(re.findall(r"^\| `\w+` \| `", text, flags=re.M)) == len(CFG.to_dict())


def test_ptq_card_and_card_without_results():
    card = _card(results=dict(fp_top1=99.6, ptq_top1=97.0, dataset="digits"), training=None)
    assert {r.metric_type for r in card.data.eval_results} == {"accuracy"}
    assert "**PTQ, searched ranges, calibrated on 512 synthetic images — this model**" in card.text
    assert "calibration used only synthetic images" in card.text  # nothing was fine-tuned
    minmax = CFG.replace(act_range_init="minmax", weight_range_init="minmax")
    card = _card(synq_config=minmax, results=dict(fp_top1=99.6, ptq_top1=97.0, dataset="digits"), training=None)
    assert "**PTQ, min-max ranges, calibrated on 512 synthetic images — this model**" in card.text
    assert "searched" not in card.text.split("## What was done")[0]
    bare = _card(results=None, synthetic_data=None, training=None, license=None)
    assert bare.data.eval_results is None and bare.data.license is None
    assert "No evaluation was run" in bare.text and "license of the base model applies" in bare.text


def test_card_never_contains_a_token_or_a_local_path(tmp_path):
    base = tmp_path / "my-teacher"
    base.mkdir()
    card = _card(
        base_model=f"local-dir:{base}",
        results=dict(synq_top1=80.0, dataset=str(tmp_path / "data" / "val.parquet"), split="test"),
        training=dict(hardware=f"cpu, token {TOKEN}", log=str(tmp_path / "runs" / "log.txt")),
        recipe="/home/someone/recipes/cifar.yaml",
        extra_tags=[TOKEN],
    )
    content = card.content
    assert str(tmp_path) not in content and "/home/someone" not in content and TOKEN not in content
    assert card.data.base_model is None and "base_model_relation" not in card.data.to_dict()
    assert "`my-teacher` (a local model folder)" in content and "`cifar.yaml`" in content
    assert card.data.eval_results[0].dataset_type == "val.parquet"
    assert sanitize({"a": [f"see {tmp_path}/x.txt", "https://huggingface.co/a/b", f"local-dir:{tmp_path}/m",
                           f"file://{tmp_path}/f.bin", "~/models/r18", "W4/A4", r"C:\Users\me\m"]}) == {
        "a": ["see x.txt", "https://huggingface.co/a/b", "local-dir:m", "f.bin", "r18", "W4/A4", "m"]
    }


@pytest.mark.parametrize(("filtered", "phrase"), [(True, "512 low-pass filtered synthetic images"),
                                                  (False, "512 unfiltered synthetic images"),
                                                  (None, "over 512 synthetic images")])
def test_card_says_which_images_calibrated_the_ranges(filtered, phrase):
    calibration = {"source": "synthetic", "num_images": 512}
    if filtered is not None:
        calibration["filtered"] = filtered
    text = _card(calibration=calibration).text
    assert phrase in text
    if filtered is None:  # PTQ records and older cards say nothing about a filter
        assert "filtered synthetic" not in text


@pytest.mark.parametrize(("changes", "says", "never"), [
    ({}, "Block reconstruction", "SynQ on top"),
    ({"reconstruct_synq": True, "reconstruct_synq_images": "filtered"},
     "SynQ on top: the images were low-pass filtered (Gaussian, D0 = 8)", "used twice"),
    ({"reconstruct_synq": True},
     "SynQ on top: each image was used twice, as synthesized and low-pass filtered (Gaussian, D0 = 8", "were low-pass"),
    ({"reconstruct_synq": True, "lpf_d0": 0.0}, "SynQ on top: the images were not low-pass filtered", "D0 ="),
    ({"reconstruct_synq": True, "reconstruct_synq_images": "raw"}, "SynQ on top: the images were not low-pass",
     "D0 ="),
])
def test_reconstruction_card_says_which_images_it_ran_on(changes, says, never):
    """A reconstruction card names the images as they were used: raw, filtered, or both, and never claims a filter
    that was off."""
    cfg = SynQConfig(**{"w_bits": 4, "a_bits": 4, "method": "reconstruct", "lpf_d0": 8.0, **changes})
    cfg = cfg.resolve(family="cnn", input_size=16)
    text = _card(synq_config=cfg, method="reconstruct",
                 results=dict(fp_top1=91.6, ptq_top1=88.4, synq_top1=91.2, dataset="cifar10")).text
    assert says in text and never not in text


def test_timm_name_maps_to_its_hub_repo():
    import timm

    card = _card(base_model="resnet18")
    assert card.data.base_model == timm.models.get_pretrained_cfg("resnet18").hf_hub_id
    assert _card(base_model="hf-hub:google/vit-base-patch16-224").data.base_model == "google/vit-base-patch16-224"


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(library="keras"), "library"),
        (dict(repo_id="not a repo"), "repo_id"),
        (dict(results=dict(synq_top1=0.5, dataset="d", top1=3)), "unknown key"),
        (dict(results=dict(synq_top1=120.0, dataset="d")), "percent"),
        (dict(results=dict(synq_top1=90.0)), "dataset"),
        (dict(synq_config={"w_bits": 4, "wbits": 4}), "did you mean"),
    ],
)
def test_bad_inputs_raise_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        _card(**overrides)


def _saved_card(folder: Path, **overrides) -> dict:
    """save_model_card's inputs for a local base model and a folder name with a space (nothing evaluated)."""
    fields = dict(base_model=f"local-dir:{folder.parent}/teachers/digits_teacher", library="timm",
                  synq_config=CFG, synthetic_data=dict(num_images=8, iterations=2, seed=3, family="cnn"),
                  training=dict(steps=4, wall_time_s=12.0, hardware="2 CPU cores"), load_id="my digits w4a4",
                  recipe=f"{folder.parent}/recipes/run.py --token {TOKEN}")
    fields.update(overrides)
    save_model_card(folder, **fields)
    return fields


def test_card_for_hub_renders_the_card_again_with_the_repo_as_input(tmp_path):
    import json

    folder = tmp_path / "my digits w4a4"
    fields = _saved_card(folder)
    readme = (folder / "README.md").read_text(encoding="utf-8")
    assert readme == str(render_model_card(**fields))  # save_model_card saves the card render_model_card makes
    record = (folder / CARD_RECORD).read_text(encoding="utf-8")
    assert str(tmp_path) not in record and TOKEN not in record  # public, like the card
    assert json.loads(record)["render_model_card"]["base_model"] == "local-dir:./digits_teacher"

    hub = card_for_hub(folder, "me/digits-w4a4", "me/digits-w4a4-synthetic")
    name = ModelCard(readme).data.model_name
    assert hub == str(render_model_card(**fields, repo_id="me/digits-w4a4", dataset_repo="me/digits-w4a4-synthetic",
                                        model_name=name))  # the same render with the repo ids as inputs
    card = ModelCard(hub)
    assert card.data.model_name == name == "digits_teacher-synq-w4a4"  # the title stays
    assert 'load_model("me/digits-w4a4")  # a Hub repo id' in card.text
    assert "`synq-hf evaluate me/digits-w4a4 --data DATA`" in card.text
    assert "`synq-hf export me/digits-w4a4 --format onnx --out model.onnx`" in card.text
    assert "my digits" not in hub and "`digits_teacher` (a local model folder)" in hub
    assert "[me/digits-w4a4-synthetic](https://huggingface.co/datasets/me/digits-w4a4-synthetic)" in card.text
    assert card.data.datasets == ["me/digits-w4a4-synthetic"] and "were not published" not in card.text
    assert (folder / "README.md").read_text(encoding="utf-8") == readme  # the local card is not touched


def test_card_for_hub_keeps_an_edited_card_and_a_card_without_record(tmp_path):
    folder = tmp_path / "digits-w4a4"
    _saved_card(folder, load_id=folder.name)
    edited = (folder / "README.md").read_text(encoding="utf-8") + "\nMy own notes on this model.\n"
    (folder / "README.md").write_text(edited, encoding="utf-8")
    hub = card_for_hub(folder, "me/digits-w4a4")
    assert hub.endswith("\nMy own notes on this model.\n") and 'load_model("me/digits-w4a4")' in hub
    assert hub == retarget_card(edited, "me/digits-w4a4")  # every edit kept; only the repo lines change
    (folder / CARD_RECORD).unlink()  # a folder saved before card.json existed: its text, re-pointed
    (folder / "README.md").write_text(str(_card()), encoding="utf-8")
    assert card_for_hub(folder, "me/x") == retarget_card(str(_card()), "me/x")
    with pytest.raises(ConfigError, match="repo id"):
        card_for_hub(folder, "not a repo")


def test_retarget_points_snippet_and_dataset_link_at_the_hub():
    content = retarget_card(_card().content, "me/digits-w4a4", "me/digits-w4a4-synthetic")
    card = ModelCard(content)
    assert 'load_model("me/digits-w4a4")' in card.text
    assert "[me/digits-w4a4-synthetic](https://huggingface.co/datasets/me/digits-w4a4-synthetic)" in card.text
    assert "were not published" not in card.text and card.data.datasets == ["me/digits-w4a4-synthetic"]
    assert card.data.eval_results[0].metric_value == 89.07  # the YAML survives the round trip


def _snippet(card: ModelCard) -> str:
    blocks = re.findall(r"```python\n(.*?)```", card.text, flags=re.S)
    return next(b for b in blocks if "load_model(" in b)


def test_snippet_runs_on_a_saved_quantized_model(tmp_path, monkeypatch, capsys):
    teacher = D.load_demo_teacher()
    cfg = SynQConfig(w_bits=4, a_bits=4, calibration_num_images=64).resolve(family="cnn", input_size=16)
    torch.manual_seed(0)
    student = ptq(teacher, cfg, torch.randn(64, 3, 16, 16), progress=False)
    folder = save_quantized(student, tmp_path / "digits-ptq-w4a4", base_model=f"local-dir:{D.demo_teacher_path()}",
                            library="timm", config=cfg)
    test = D.digits_dataset("test").select(range(100))
    results = {
        "fp_top1": evaluate_model(teacher, test, load_quantized(folder).data_config, progress=False)["top1"],
        "ptq_top1": evaluate_model(load_quantized(folder), test, progress=False)["top1"],
        "dataset": "sklearn-digits", "split": "test", "num_samples": len(test), "method": "ptq",
    }
    card = render_model_card(repo_id="me/digits-ptq-w4a4", base_model=f"local-dir:{D.demo_teacher_path()}",
                             library="timm", synq_config=cfg, results=results)
    card.save(folder / "README.md")
    assert str(tmp_path) not in card.content and "site-packages" not in card.content
    reloaded = ModelCard.load(folder / "README.md")
    assert {r.metric_type: r.metric_value for r in reloaded.data.eval_results} == {
        "accuracy": round(results["ptq_top1"], 2)
    }

    code = _snippet(reloaded).replace('load_model("me/digits-ptq-w4a4")', f"load_model({str(folder)!r})")
    assert str(folder) in code
    monkeypatch.chdir(tmp_path)
    digit = test[0]
    digit["image"].resize((32, 32)).save(tmp_path / "image.jpg", quality=95)
    exec(compile(code, "model-card-snippet", "exec"), {"__name__": "__snippet__"})
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 5
    name, prob = lines[0].split(": ")
    assert name == str(digit["label"]) and float(prob) > 0.5


def test_card_states_the_activation_coverage_and_only_claims_true_bits():
    from synq_hf.hub.card import render_model_card

    cfg = SynQConfig(w_bits=4, a_bits=4)
    coverage = {"placement": "layer_inputs", "weight_bits": [4], "input_bits": [4], "quantized_layers": "82/82",
                "quantized_inputs": "81/82", "float_by_rule": {"conv_stem": {"count": 1, "rule": "image input"}},
                "gaps": 0}
    text = str(render_model_card(base_model="m", library="timm", synq_config=cfg, coverage=coverage))
    assert "W4A4 (4-bit weights" in text and "82/82 conv/linear layers quantized, 81/82 of their inputs" in text
    assert "conv_stem (1: image input)" in text
    mixed = dict(coverage, input_bits=[4, 8])  # some layer input at 8 bits that the config does not explain
    text = str(render_model_card(base_model="m", library="timm", synq_config=cfg, coverage=mixed))
    assert "W4A4 (" not in text and "mixed precision (weights [4]-bit, layer inputs [4, 8]-bit)" in text
    gap = dict(coverage, gaps=2)
    assert "2 activation(s) left float without a rule" in str(
        render_model_card(base_model="m", library="timm", synq_config=cfg, coverage=gap))


# -- cards of real runs: every claim checked against results.json ------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory):
    """A random CIFAR ResNet-20 loaded as a teacher, 8 synthetic images, and 8 real-looking labelled images."""
    import datasets
    import numpy as np
    import timm
    from PIL import Image
    from timm.models import save_for_hf

    import synq_hf
    from synq_hf.synthesis import synthesize

    folder = tmp_path_factory.mktemp("teacher") / "r20"
    torch.manual_seed(0)
    save_for_hf(timm.create_model("cifar_resnet20").eval(), folder, safe_serialization=True)
    loaded = synq_hf.load_model(f"local-dir:{folder}")
    cfg = SynQConfig(num_images=8, synthesis_iterations=2, synthesis_batch_size=8)
    synthetic = synthesize(loaded.model, cfg, data_config=loaded.data_config, progress=False,
                           class_names=loaded.class_names, teacher_id="r20")
    rng = np.random.default_rng(0)
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    real = datasets.Dataset.from_dict(
        {"img": [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(8)],
         "label": list(range(8))}, features=features)
    return loaded, synthetic, real


_CASES = [(m, r, s, res) for m in ("ptq", "synq") for r in ("search", "minmax") for s in ("synthetic", "real")
          for res in ("no", "summed", "last part")
          if not (m == "synq" and s == "real") and not (m == "ptq" and res == "last part")]


_RUNS: dict = {}


def _run(tiny_run, method: str, ranges: str, source: str, work) -> object:  # noqa: ANN001
    """The quantizer after one run of (method, ranges, data source), evaluated; each case works on a copy."""
    from synq_hf import SynQQuantizer
    from synq_hf.data import build_eval_transform, collate_images

    key = (method, ranges, source)
    if key not in _RUNS:
        loaded, synthetic, real = tiny_run
        cfg = SynQConfig(w_bits=4, a_bits=4, act_range_init=ranges, weight_range_init=ranges, max_steps=2,
                         train_batch_size=4, calibration_batch_size=4)  # calibration_num_images stays 512: 8 exist
        q = SynQQuantizer(loaded, cfg, device="cpu")
        if method == "ptq" and source == "real":
            images = collate_images(list(real["img"]), build_eval_transform(loaded.data_config))
            q.ptq(images, source={"source": "real", "data": "/somewhere/cal.parquet", "num_images": len(images)},
                  progress=False)
        elif method == "ptq":
            q.synthetic = synthetic
            q.record_synthetic(synthetic)
            q.ptq(progress=False)
        else:
            q.quantize(synthetic, progress=False, output_dir=work / "-".join(key))
            q.ptq(progress=False)
        for which in ("float", method) if method == "ptq" else ("float", "ptq", "synq"):
            q.evaluate(real, which=which, progress=False)
        _RUNS[key] = (q, work / "-".join(key))
    return _RUNS[key]


@pytest.mark.parametrize(("method", "ranges", "source", "resumed"), _CASES, ids=["-".join(c) for c in _CASES])
def test_card_of_a_run_states_only_what_results_json_records(method, ranges, source, resumed, tiny_run, tmp_path,
                                                              tmp_path_factory):
    """method x range init x calibration data x resumed: the card's labels, counts and times are the record's."""
    import copy
    import json

    from synq_hf.training import last_checkpoint

    base, work = _run(tiny_run, method, ranges, source, tmp_path_factory.getbasetemp())
    q = copy.deepcopy(base)
    if resumed == "last part":  # the Python API resumed: only this part is timed, and the card says so
        q.quantize(progress=False, output_dir=work, resume_from_checkpoint=last_checkpoint(str(work)))
        q.evaluate(tiny_run[2], which="synq", progress=False)
    if resumed == "summed":  # what the CLI does after --resume
        earlier = {"synthesis_s": 61.0, "total_s": 3700.0, **({"finetune_s": 122.0} if method == "synq" else {})}
        q.add_earlier_parts(earlier, parts=3)
    folder = q.save_pretrained(tmp_path / "out")
    record = json.loads((folder / "results.json").read_text())
    card = ModelCard.load(folder / "README.md")
    text = card.text
    config = record["config"]

    # the results table: each row's accuracy and label from the record
    rows = dict(re.findall(r"^\| (.+?) \| (?:W4A4|float) \| ([\d.]+) \|", text, flags=re.M))
    assert float(rows["Float base model (reference)"]) == record["fp_top1"]
    ptq_label = next(label for label in rows if label.lstrip("*").startswith("PTQ"))
    assert float(rows[ptq_label]) == record["ptq_top1"]
    words = "searched ranges" if config["act_range_init"] == config["weight_range_init"] == "search" else \
        "min-max ranges"
    assert words in ptq_label and ("min-max" in ptq_label) == (ranges == "minmax")
    ptq_cal = record["calibration"] if method == "ptq" else record["ptq_reference_calibration"]
    kind = "real" if ptq_cal["source"] == "real" else {True: "low-pass filtered synthetic", False: "unfiltered synthetic",
                                                         None: "synthetic"}[ptq_cal.get("filtered")]
    assert f"calibrated on {ptq_cal['num_images']} {kind} images" in ptq_label
    assert ("— this model" in ptq_label) == (method == "ptq")
    if method == "synq":
        assert float(rows["**SynQ — this model**"]) == record["synq_top1"]
    assert ("zero-shot-quantization" in card.data.tags) == (record["calibration"]["source"] == "synthetic")

    # the hyperparameter table shows what really calibrated the ranges
    used = record["calibration"]["num_images"]
    assert config["calibration_num_images"] == 512 and used == 8
    assert "| `calibration_num_images` | `512` (8 used) |" in text

    # what was done
    assert ("nothing was fine-tuned" in text) == (method == "ptq")
    if method == "synq":
        assert f"for {record['training']['steps']} steps" in text and "8 low-pass filtered synthetic images" in text

    # wall times: the record's, and a resumed run says how they were counted
    compute = dict(re.findall(r"^\| ((?:Total|Synthesis|Fine-tuning) wall time[^|]*) \| ([^|]+) \|", text, re.M))
    notes = {"no": "", "summed": " (3 parts of a resumed run, added up)",
             "last part": " (the last part only of a resumed run)"}
    assert record.get("resumed") == {"no": None, "summed": {"parts": 3, "summed": True},
                                     "last part": {"parts": None, "summed": False}}[resumed]
    from synq_hf.hub.card import format_seconds
    assert compute[f"Total wall time{notes[resumed]}"].strip() == format_seconds(record["total_s"])
    for key, label in (("synthesis_s", "Synthesis wall time"), ("finetune_s", "Fine-tuning wall time")):
        if record.get(key) is not None:
            assert compute[f"{label}{notes[resumed]}"].strip() == format_seconds(record[key])
    if resumed == "summed":
        assert record["total_s"] >= 3700.0 and (method == "ptq" or record["finetune_s"] >= 122.0)
    assert "/somewhere" not in card.content


def test_wall_times_round_like_results_json_at_the_boundary() -> None:
    """The card formats a time from its 0.1-s rounding, as results.json stores it: the two never disagree."""
    from synq_hf.hub.card import format_seconds

    for raw in (122.55, 122.45, 59.96, 3599.95, 7.04):
        assert format_seconds(raw) == format_seconds(round(raw, 1)), raw
    assert format_seconds(122.55) == "2 min 02 s" and format_seconds(59.96) == "1 min 00 s"
    assert format_seconds(7.04) == "7.0 s" and format_seconds(3725) == "1 h 02 min"
