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
  synq-hf push YOUR_NAME/digits-cnn-synq-w4a4 synq-demo-w4a4
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
    p.add_argument("--overwrite", action="store_true", help="replace an earlier demo output folder")
    p.add_argument("--seed", type=int, default=0, help="seed of synthesis and fine-tuning (default 0)")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo and print a float / PTQ / SynQ table (results on stdout, progress and logs on stderr)."""
    import os

    import torch

    from ..demo.run import DEMO_CONFIG, run_demo
    from ..hub.outputs import check_output, check_output_file
    from .common import result

    check_output(args.out, overwrite=args.overwrite, create_parents=False)  # before any work
    if args.json:
        check_output_file(args.json, overwrite=True, flag="--json")
    if not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(1)  # the digits CNN is tiny: one thread is fastest, above all on busy cores
    record = run_demo(args.out, config=DEMO_CONFIG.replace(seed=args.seed), overwrite=args.overwrite,
                      progress=not args.no_progress)
    bits = f"W{record['w_bits']}A{record['a_bits']}"
    result(args, f"synq-hf demo: digits CNN, {bits}, 500 real held-out images")
    result(args, f"  float top-1  {record['fp_top1']:6.2f}")
    result(args, f"  PTQ   top-1  {record['ptq_top1']:6.2f}   (ranges searched on the synthetic images, no fine-tuning)")
    result(args, f"  SynQ  top-1  {record['synq_top1']:6.2f}   (synthesis-aware fine-tuning, no real data)")
    result(args, f"  synthesis {record['synthesis_s']:.0f} s, fine-tuning {record['finetune_s']:.0f} s, "
                 f"total {record['wall_s']:.0f} s on {record['hardware']}")
    result(args, f"  saved to {args.out} (model, config, results.json, model card)")
    if args.json:
        from ..hub.outputs import write_file
        from .common import writing_out

        with writing_out(args.json, flag="--json"):
            write_file(args.json, lambda tmp: tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8"))
    return 0
