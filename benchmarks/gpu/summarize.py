"""Tables and issue 24's checks from the output folder of ``benchmarks/gpu/run.sh``.

    python benchmarks/gpu/summarize.py /tmp/r24              # markdown tables + the checks, for BENCHMARKS.md
    python benchmarks/gpu/summarize.py /tmp/r24 --json       # the same as one JSON object

Reads ``ttm.json`` (time_to_model.py), ``ft256.json`` (finetune_speed.py at batch 256), ``kde.json`` and
``r18x4.json`` (synthesis_speed.py) and the fidelity runs ``{r20,vit}_{fp32,bf16}_s{seed}.json`` (their stdout, or
the rows their stderr logs as they land when a run was cut short). Missing files leave their rows out and their
checks "missing"; nothing is invented.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

CNN_RECIPES = ("resnet18_w4a4", "resnet50_w4a4", "mobilenetv2_w4a4")
VIT_RECIPES = ("deit_w4a8", "swin_t_w4a8")
SYNTHESIS_LIMIT = {**{r: 1.15 for r in CNN_RECIPES}, **{r: 1.5 for r in VIT_RECIPES}}
FINETUNE_LIMIT = 1.3
SPEEDUP_RECIPES = ("resnet50_w4a4", "deit_w4a8")
SPEEDUP_MIN = 2.0
HOUR_RECIPE = "resnet18_w4a4"
FIDELITY_BITS = {"r20": ("W4A4", "W3A3"), "vit": ("W4A4", "W4A8")}
LOW = "bf16"


def read_jsonl(path: Path) -> list[dict]:
    """JSON objects, one per line (lines that are not JSON objects are skipped)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def fidelity_rows(folder: Path) -> list[dict]:
    """Rows of every fidelity run: ``{"model", "precision", "seed", "bits", "data", "top1"}``."""
    rows = []
    for path in sorted(folder.glob("*_s*.json")):
        m = re.fullmatch(r"(r20|vit)_(\w+)_s(\d+)\.json", path.name)
        if not m:
            continue
        model, precision, seed = m.group(1), m.group(2), int(m.group(3))
        found: list[dict] = []
        try:
            found = json.loads(path.read_text(encoding="utf-8")).get("rows", [])
        except (json.JSONDecodeError, OSError, AttributeError):
            found = [r for r in read_jsonl(path.with_suffix(".log")) if "bits" in r and "synq_top1" in r]
        for r in found:
            rows.append({"model": model, "precision": precision, "seed": seed, "bits": r["bits"], "data": r["data"],
                         "top1": r["synq_top1"], "nonfinite": r.get("nonfinite", False)})
    return rows


def fidelity(rows: list[dict]) -> list[dict]:
    """Per model, bits, test set and precision: mean, min, max over seeds; and the decision per (model, bits, data):
    the low precision passes when its mean is at least fp32's mean minus fp32's seed spread (max - min)."""
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["bits"], r["data"], r["precision"]), []).append(r["top1"])
    out = []
    for (model, bits, data, precision), vals in sorted(groups.items()):
        out.append({"model": model, "bits": bits, "data": data, "precision": precision, "seeds": len(vals),
                    "mean": round(statistics.mean(vals), 2), "min": min(vals), "max": max(vals),
                    "spread": round(max(vals) - min(vals), 2)})
    return out


def checks(ttm: list[dict], ft256: list[dict], fid: list[dict]) -> list[dict]:
    """Issue 24's must-show thresholds, each ``{"check", "value", "limit", "status"}`` (pass / FAIL / missing)."""
    out = []

    def add(name: str, value: float | None, limit: str, ok: bool | None) -> None:
        out.append({"check": name, "value": value, "limit": limit,
                    "status": "missing" if ok is None else ("pass" if ok else "FAIL")})

    by = {(r["recipe"], r["precision"]): r for r in ttm}
    precisions = sorted({r["precision"] for r in ttm}) or ["fp32"]
    for recipe, limit in SYNTHESIS_LIMIT.items():
        for p in precisions:
            r = by.get((recipe, p))
            v = r["synthesis"]["ratio"] if r else None
            add(f"synthesis step/floor {recipe} {p}", v, f"<= {limit}", None if v is None else v <= limit)
    for recipe in (*CNN_RECIPES, *VIT_RECIPES):
        for p in precisions:
            r = by.get((recipe, p))
            v = r["finetune"]["ratio"] if r else None
            add(f"fine-tune step/floor {recipe} batch {r['finetune']['batch'] if r else 16} {p}", v,
                f"<= {FINETUNE_LIMIT}", None if v is None else v <= FINETUNE_LIMIT)
    for r in ttm:
        for part, key in (("synthesis", "host_syncs_per_iteration"), ("finetune", "host_syncs_per_step")):
            v = r[part].get(key)
            if v is not None:  # CUDA only (torch's sync debug mode)
                add(f"host syncs per {part} step {r['recipe']} {r['precision']}", v, "== 0", v == 0)
    big = {(r["model"], r["precision"]): r for r in ft256}
    for (model, p), r in sorted(big.items()):
        add(f"fine-tune step/floor {model} batch {r['batch']} {p}", r["ratio"], f"<= {FINETUNE_LIMIT}",
            r["ratio"] <= FINETUNE_LIMIT)
    for recipe in SPEEDUP_RECIPES:
        a, b = by.get((recipe, "fp32")), by.get((recipe, LOW))
        for part, key in (("synthesis", "iteration_s"), ("finetune", "train_step_s")):
            v = round(a[part][key] / b[part][key], 2) if a and b else None
            add(f"{LOW} / fp32 {part} throughput {recipe}", v, f">= {SPEEDUP_MIN}",
                None if v is None else v >= SPEEDUP_MIN)
    for p in precisions:
        r = by.get((HOUR_RECIPE, p))
        v = r["projection"]["projected_h"] if r else None
        add(f"{HOUR_RECIPE} projected paper schedule {p} (hours)", v, "<= 1", None if v is None else v <= 1.0)
    stats = {(f["model"], f["bits"], f["data"], f["precision"]): f for f in fid}
    for model, bits_list in FIDELITY_BITS.items():
        for bits in bits_list:
            for data in sorted({f["data"] for f in fid if f["model"] == model}) or ["lossless"]:
                a, b = stats.get((model, bits, data, "fp32")), stats.get((model, bits, data, LOW))
                v = round(b["mean"] - a["mean"], 2) if a and b else None
                limit = f">= -{a['spread']} (fp32 seed spread)" if a else ">= -(fp32 seed spread)"
                add(f"{LOW} - fp32 mean top-1 {model} {bits} {data}", v, limit,
                    None if v is None else v >= -a["spread"])
    return out


def _gb(n: int | None) -> str:
    return "-" if not n else f"{n / 2**30:.1f} GB"


def markdown(ttm: list[dict], ft256: list[dict], kde: list[dict], fid: list[dict], found: list[dict]) -> str:
    """The tables for BENCHMARKS.md and the checks."""
    lines = []
    gpu = next((r.get("gpu") for r in (*ttm, *ft256, *kde) if r.get("gpu")), None) or "CPU (tiny)"
    lines.append(f"Card: {gpu}\n")
    if ttm:
        lines += ["| recipe | precision | synthesis iteration / floor (ratio) | fine-tune step / floor (ratio), batch | "
                  "train step + data | peak memory | projected (synthesis + calibration + fine-tuning) |",
                  "|---|---|---|---|---|---|---|"]
        for r in ttm:
            s, f, p = r["synthesis"], r["finetune"], r["projection"]
            lines.append(f"| {r['recipe']} | {r['precision']} | {s['iteration_s'] * 1e3:.1f} / {s['floor_s'] * 1e3:.1f} ms "
                         f"(**{s['ratio']}**) | {f['step_s'] * 1e3:.1f} / {f['floor_s'] * 1e3:.1f} ms (**{f['ratio']}**), "
                         f"{f['batch']} | {f['train_step_s'] * 1e3:.1f} + {f.get('data_s', 0.0) * 1e3:.1f} ms | "
                         f"{_gb(r['peak_memory_bytes'])} | "
                         f"{p['synthesis_s']:.0f} + {p['calibration_s']:.0f} + {p['finetune_s']:.0f} s = "
                         f"**{p['projected_h']:.2f} h** |")
            if "reference" in r:
                ref = r["reference"]
                lines.append(f"| | | | | epoch {p['epoch_s']:.1f} s here; {ref['epoch_s']:.0f} s/epoch is "
                             f"{ref['source']} ({ref['card']}) | | |")
        lines.append("")
    if ft256:
        lines += ["| model | batch | precision | step / floor (ratio) | train step | peak memory |", "|---|---|---|---|---|---|"]
        for r in ft256:
            lines.append(f"| {r['model']} | {r['batch']} | {r['precision']} | {r['step_s'] * 1e3:.1f} / "
                         f"{r['floor_s'] * 1e3:.1f} ms (**{r['ratio']}**) | {r['train_step_s'] * 1e3:.1f} ms | "
                         f"{_gb(r['peak_memory_bytes'])} |")
        lines.append("")
    if kde:
        lines += ["| model | batch | precision | KDE | iteration / floor (ratio) | images/s |", "|---|---|---|---|---|---|"]
        for r in kde:
            lines.append(f"| {r['model']} | {r['batch']} | {r['precision']} | {r['kde']} | {r['iteration_s'] * 1e3:.1f} / "
                         f"{r['floor_s'] * 1e3:.1f} ms (**{r['ratio']}**) | {r['images_per_s']} |")
        lines.append("")
    if fid:
        lines += ["| model | bits | test set | precision | seeds | mean | min / max | spread |",
                  "|---|---|---|---|---|---|---|---|"]
        for f in fid:
            lines.append(f"| {f['model']} | {f['bits']} | {f['data']} | {f['precision']} | {f['seeds']} | "
                         f"**{f['mean']}** | {f['min']} / {f['max']} | {f['spread']} |")
        lines.append("")
    lines += ["| check | value | limit | status |", "|---|---|---|---|"]
    lines += [f"| {c['check']} | {c['value'] if c['value'] is not None else '-'} | {c['limit']} | {c['status']} |"
              for c in found]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the run's output folder (run.sh's R, or the unpacked r24.tgz)")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of markdown")
    args = parser.parse_args(argv)
    if not args.folder.is_dir():
        raise SystemExit(f"{args.folder} is not a folder")
    ttm = [r for r in read_jsonl(args.folder / "ttm.json") if "recipe" in r]
    ft256 = [r for r in read_jsonl(args.folder / "ft256.json") if "step_s" in r]
    kde = [r for r in (*read_jsonl(args.folder / "kde.json"), *read_jsonl(args.folder / "r18x4.json"))
           if "iteration_s" in r]
    fid = fidelity(fidelity_rows(args.folder))
    found = checks(ttm, ft256, fid)
    if args.json:
        print(json.dumps({"time_to_model": ttm, "finetune_256": ft256, "synthesis": kde, "fidelity": fid,
                          "checks": found}))
    else:
        print(markdown(ttm, ft256, kde, fid, found))
    return 0


if __name__ == "__main__":
    sys.exit(main())
