"""Worker launched by tests/cli/test_cli_launch.py: ``python -m synq_hf.cli ARGS`` (under torchrun, or alone) with hooks.

The hooks record, outside ``--out``, what this process held (its synthetic set, its final student) and which
writing steps it ran, to ``$SYNQ_TEST_DUMP/rank<r>-*``. ``$SYNQ_TEST_FAIL_RANK=r`` makes process ``r`` fail while
loading the model (a check before the work), to show that every process stops with one line.
"""

import json
import os
import runpy
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

import synq_hf.cli.common as common  # noqa: E402
import synq_hf.cli.quantize as cli_quantize  # noqa: E402
from synq_hf.errors import DataError  # noqa: E402
from synq_hf.quantizer import SynQQuantizer  # noqa: E402

WRITERS = ("check_output", "open_work_dir")
"""``synq_hf.cli.common`` functions that write (``check_output`` probes --out with a folder): main process only."""


def install(dump: Path, rank: int, fail_rank: int | None = None) -> list[str]:
    """Wrap the quantizer and the CLI's writing steps so that this process records what it did; returns the list
    of writing steps called (filled as they run)."""
    calls: list[str] = []
    synthesize, quantize, save = SynQQuantizer.synthesize, SynQQuantizer.quantize, SynQQuantizer.save_pretrained

    def recording_synthesize(self, *args, **kwargs):
        data = synthesize(self, *args, **kwargs)
        arrays = data.with_format("numpy")
        torch.save({"pixels": torch.from_numpy(np.stack(arrays["pixel_values"])),
                    "labels": torch.from_numpy(np.asarray(arrays["label"]))}, dump / f"rank{rank}-synthetic.pt")
        return data

    def recording_quantize(self, *args, **kwargs):
        model = quantize(self, *args, **kwargs)
        torch.save({k: v.clone() for k, v in model.state_dict().items()}, dump / f"rank{rank}-student.pt")
        return model

    def recording_save(self, *args, **kwargs):
        calls.append("save_pretrained")
        return save(self, *args, **kwargs)

    SynQQuantizer.synthesize, SynQQuantizer.quantize = recording_synthesize, recording_quantize
    SynQQuantizer.save_pretrained = recording_save
    for name in WRITERS:
        real = getattr(common, name)

        def wrapper(*args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            return _real(*args, **kwargs)

        setattr(common, name, wrapper)
    if fail_rank == rank:
        def failing_load(*args, **kwargs):
            raise DataError(f"injected failure on process {rank}")

        cli_quantize.load_cli_model = failing_load
    return calls


def main() -> None:
    """Run ``synq_hf.cli`` as ``python -m`` does, then write the writing steps this process ran."""
    torch.set_num_threads(1)
    dump, rank = Path(os.environ["SYNQ_TEST_DUMP"]), int(os.environ.get("RANK", "0"))
    fail = os.environ.get("SYNQ_TEST_FAIL_RANK")
    calls = install(dump, rank, int(fail) if fail else None)
    sys.argv = ["synq-hf", *sys.argv[1:]]
    try:
        runpy.run_module("synq_hf.cli", run_name="__main__")
    finally:
        (dump / f"rank{rank}-calls.json").write_text(json.dumps(calls))


if __name__ == "__main__":
    main()
