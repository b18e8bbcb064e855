"""``synq-hf demo``: the offline main job (bundled digits teacher → W4A4 with SynQ, in minutes on a CPU)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

_EPILOG = """\
example:
  synq-hf demo                       # writes ./synq-demo-w4a4 and prints float / PTQ / SynQ top-1
  synq-hf demo --out /tmp/demo --overwrite --json /tmp/demo.json

No network is needed: the teacher (a small CNN trained on scikit-learn's digits) ships with the
package, and its 500 held-out images are the real test set. The output folder is Hub-ready:
  synq-hf push synq-demo-w4a4 YOUR_NAME/digits-cnn-synq-w4a4
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``demo`` subcommand."""
    p = subparsers.add_parser(
        "demo",
        help="quantize the bundled digits teacher to W4A4 zero-shot and report float/PTQ/SynQ accuracy",
        description="Offline end-to-end demo: synthesize → PTQ baseline → SynQ fine-tuning → evaluate → save.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=Path("synq-demo-w4a4"), help="output folder (default ./synq-demo-w4a4)")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    p.add_argument("--seed", type=int, default=0, help="seed of synthesis and fine-tuning (default 0)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo and print a float / PTQ / SynQ table."""
    from ..demo.run import DEMO_CONFIG, run_demo
    from ..errors import SynQError

    out = args.out
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        raise SynQError(f"{out} exists and is not empty; pass --overwrite to replace it")
    record = run_demo(out, config=DEMO_CONFIG.replace(seed=args.seed), overwrite=args.overwrite,
                      progress=not args.no_progress)
    bits = f"W{record['w_bits']}A{record['a_bits']}"
    print(f"\nsynq-hf demo: digits CNN, {bits}, 500 real held-out images")
    print(f"  float top-1  {record['fp_top1']:6.2f}")
    print(f"  PTQ   top-1  {record['ptq_top1']:6.2f}   (min-max calibration on the synthetic images)")
    print(f"  SynQ  top-1  {record['synq_top1']:6.2f}   (synthesis-aware fine-tuning, no real data)")
    print(f"  synthesis {record['synthesis_s']:.0f} s, fine-tuning {record['finetune_s']:.0f} s, "
          f"total {record['wall_s']:.0f} s on {record['hardware']}")
    print(f"  saved to {record['out_dir']} (model, config, results.json, model card)")
    if args.json:
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0
