"""BENCHMARKS.md's issue 25 table from the JSON rows beside this file: python table.py"""
import glob
import json
from pathlib import Path

rows = []
for f in sorted(glob.glob(str(Path(__file__).resolve().parent / "*.json"))):
    for r in json.load(open(f))["rows"]:
        r["file"] = Path(f).stem
        rows.append(r)


def get(bits, rule, variant, images="synthetic", data="lossless", files=None):
    c = [r for r in rows if r["bits"] == bits and r["rule"] == rule and r["variant"] == variant
         and r["images"] == images and r["data"] == data and (files is None or r["file"] in files)]
    return c[-1] if c else None


def val(r):
    return None if r is None else r.get("ceiling_top1", r.get(f"{r['variant']}_top1"))


def fmt(x):
    return "—" if x is None else f"{x:.2f}"


# QAT-style SynQ on the same synthetic set: the "Method fidelity" grid's default row (W4A4, W3A3) and the
# mixed-precision section's uniform W2A4 row (lossless only)
RESULTS = Path(__file__).resolve().parents[2]
QAT = {(r["bits"], r["data"]): r["synq_top1"]
       for r in json.load(open(RESULTS / "cpu-2026-12-07" / "fidelity" / "lastconv_sum_s0.json"))["rows"]}
QAT[("W2A4", "lossless")] = json.load(open(RESULTS / "cpu-2026-12-06" / "mixed_precision" / "uniform-w2a4.json"))["synq_top1"]
print("| bits | rule | test set | PTQ searched (raw / filtered) | reconstruction | + SynQ (filtered) | SynQ − recon | ceiling (1,024 real) | QAT-style SynQ | recon CPU s |")
print("|---|---|---|---|---|---|---|---|---|---|")
for bits in ("W4A4", "W3A3", "W2A4"):
    for rule in ("uniform", "genie"):
        for data in ("lossless", "jpeg"):
            rc = get(bits, rule, "recon", data=data, files={"w4w2-recon", "w3-recon-j", "w3-genie-recon"})
            sq = get(bits, rule, "recon_synq", data=data, files={"w4w2-synq", "w3-synq-last-lpf", "w3-genie-synq"})
            ce = get(bits, rule, "recon", images="real", data=data) if rule == "uniform" else None
            d = None if rc is None or sq is None else val(sq) - val(rc)
            ptq = f"{fmt(rc and rc['ptq_search_top1'])} / {fmt(sq and sq['ptq_search_top1'])}"
            qat = QAT.get((bits, data)) if rule == "uniform" else None
            cpu = rc["reconstruct_cpu_seconds"] if rc else None
            print(f"| {bits} | {rule} | {data} | {ptq} | {fmt(val(rc))} | {fmt(val(sq))} | "
                  f"{'—' if d is None else f'{d:+.2f}'} | {fmt(val(ce))} | {fmt(qat)} | {cpu if cpu else '—'} |")

# Seed 1 (its own cpu-budget synthetic set), beside seed 0's reconstruction and + SynQ: does SynQ on top hold up?
SEED0 = ({"w4w2-recon", "w3-recon-j", "w3-genie-recon"}, {"w4w2-synq", "w3-synq-last-lpf", "w3-genie-synq"})
SEED1 = {"seed1-w3", "seed1-w2w4"}
print()
print("| bits | rule | test set | seed 0: recon / + SynQ filtered (diff) | seed 1: recon / + SynQ filtered (diff) | mean diff |")
print("|---|---|---|---|---|---|")
for bits in ("W4A4", "W3A3", "W2A4"):
    for rule in ("uniform", "genie"):
        for data in ("lossless", "jpeg"):
            cells, diffs = [], []
            for rc_files, sq_files in (SEED0, (SEED1, SEED1)):
                rc = get(bits, rule, "recon", data=data, files=rc_files)
                sq = get(bits, rule, "recon_synq", data=data, files=sq_files)
                if rc is None or sq is None:
                    cells.append("—")
                    continue
                diffs.append(val(sq) - val(rc))
                cells.append(f"{fmt(val(rc))} / {fmt(val(sq))} ({diffs[-1]:+.2f})")
            mean = f"{sum(diffs) / len(diffs):+.2f}" if len(diffs) == 2 else "—"
            print(f"| {bits} | {rule} | {data} | {cells[0]} | {cells[1]} | {mean} |")

# SynQ on top on each image raw and filtered (reconstruct_synq_images="both"), seeds 0-2, against reconstruction;
# the last column is the filtered-only + SynQ of the table above (seeds 0-1) for comparison
RECON = {0: SEED0[0], 1: SEED1, 2: {"seed2", "seed2-genie"}}
BOTH = {0: {"both-s0", "both-genie-s0"}, 1: {"both-s1", "both-genie-s1"}, 2: {"seed2", "seed2-genie"}}
print()
print("| bits | rule | test set | seed 0: recon / both (diff) | seed 1 | seed 2 | mean diff, both | mean diff, filtered (seeds 0–1) |")
print("|---|---|---|---|---|---|---|---|")
for bits in ("W4A4", "W3A3", "W2A4"):
    for rule in ("uniform", "genie"):
        for data in ("lossless", "jpeg"):
            cells, diffs = [], []
            for seed in (0, 1, 2):
                rc = get(bits, rule, "recon", data=data, files=RECON[seed])
                sq = get(bits, rule, "recon_synq_both", data=data, files=BOTH[seed])
                if rc is None or sq is None:
                    cells.append("—")
                    continue
                diffs.append(val(sq) - val(rc))
                cells.append(f"{fmt(val(rc))} / {fmt(val(sq))} ({diffs[-1]:+.2f})")
            filtered = []
            for rc_files, sq_files in (SEED0, (SEED1, SEED1)):
                rc, sq = get(bits, rule, "recon", data=data, files=rc_files), get(bits, rule, "recon_synq", data=data,
                                                                                  files=sq_files)
                if rc is not None and sq is not None:
                    filtered.append(val(sq) - val(rc))
            mean = f"{sum(diffs) / len(diffs):+.2f} ({len(diffs)})" if diffs else "—"
            fmean = f"{sum(filtered) / len(filtered):+.2f}" if filtered else "—"
            print(f"| {bits} | {rule} | {data} | {cells[0]} | {cells[1]} | {cells[2]} | {mean} | {fmean} |")

# mean top-1 over the seeds each has (uniform rule): reconstruction and + SynQ on raw and filtered images
print()
print("| bits | test set | reconstruction, seeds 0 / 1 / 2 (mean) | + SynQ both, seeds 0 / 1 / 2 (mean) |")
print("|---|---|---|---|")
for bits in ("W4A4", "W3A3", "W2A4"):
    for data in ("lossless", "jpeg"):
        cells = []
        for variant, files in (("recon", RECON), ("recon_synq_both", BOTH)):
            v = [val(get(bits, "uniform", variant, data=data, files=files[s])) for s in (0, 1, 2)]
            cells.append(" / ".join(fmt(x) for x in v) + f" ({sum(v) / 3:.2f})")
        print(f"| {bits} | {data} | {cells[0]} | {cells[1]} |")

# the shared ViT at W4A4 with 128 synthetic images: reconstruction and SynQ on top with each choice of images
VIT = {0: {"recon": "vit128-w4", "recon_synq": "vit128-w4", "recon_synq_both": "vit128-both",
           "recon_synq_raw": "vit128-ablation"},
       1: {"recon": "vit128-s1-recon", "recon_synq_both": "vit128-s1-both", "recon_synq_raw": "vit128-s1-raw"}}
print()
print("| ViT W4A4, 128 images | test set | reconstruction | + SynQ raw (a ViT's default) | + SynQ both | + SynQ filtered |")
print("|---|---|---|---|---|---|")
for seed, files in VIT.items():
    for data in ("lossless", "jpeg"):
        cells = [fmt(val(get("W4A4", "uniform", v, data=data, files={files[v]}) if v in files else None))
                 for v in ("recon", "recon_synq_raw", "recon_synq_both", "recon_synq")]
        print(f"| seed {seed} | {data} | " + " | ".join(cells) + " |")
