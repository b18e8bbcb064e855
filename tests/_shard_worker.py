"""Worker launched by tests/test_distributed.py under ``torchrun --nproc_per_node 2``.

Runs sharded synthesis and evaluation on CPU ranks (tiny models, generated inputs, everything seeded the way
the test's single-process references are) and writes what each rank got to ``OUT/rank<r>-*.pt``.
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _shard_common as common  # noqa: E402

import synq_hf.synthesis.api as api  # noqa: E402
from synq_hf.distributed import ProcessFailedError  # noqa: E402
from synq_hf.evaluation import evaluate_model  # noqa: E402


def main(out: str) -> None:
    torch.set_num_threads(1)
    out_dir = Path(out)
    rank = int(os.environ["RANK"])
    teacher = common.teacher()
    record: dict = {}
    for per_forward in (1, 2):
        images = common.synthesize(teacher, per_forward=per_forward)
        torch.save(common.as_dict(images), out_dir / f"rank{rank}-gpf{per_forward}.pt")

    # A process fails on group 3: every process reports it, the finished units stay in the store.
    real_init = api._init_chunk

    def failing_init(chunk, *args, **kwargs):
        if 3 in chunk:
            raise RuntimeError("injected failure")
        return real_init(chunk, *args, **kwargs)

    api._init_chunk = failing_init
    try:
        common.synthesize(teacher, per_forward=1, checkpoint_dir=out_dir / "store-two")
        record["failure"] = None
    except ProcessFailedError as e:
        record["failure"] = str(e)
    finally:
        api._init_chunk = real_init

    # Resume under two processes a store left by a single process that failed (prepared by the test).
    calls = []

    def counting_init(chunk, *args, **kwargs):
        calls.append(list(chunk))
        return real_init(chunk, *args, **kwargs)

    api._init_chunk = counting_init
    try:
        resumed = common.synthesize(teacher, per_forward=1, checkpoint_dir=out_dir / "store-one")
    finally:
        api._init_chunk = real_init
    record["resumed_groups"] = calls
    torch.save(common.as_dict(resumed), out_dir / f"rank{rank}-resumed.pt")

    model, dataset, data_config = common.evaluation_case()
    record["evaluation"] = evaluate_model(model, dataset, data_config, batch_size=4, progress=False)
    (out_dir / f"rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    from synq_hf.distributed import end_processes

    try:
        main(sys.argv[1])
    finally:
        end_processes()  # exit without the gloo teardown abort (SIGABRT at interpreter exit)
