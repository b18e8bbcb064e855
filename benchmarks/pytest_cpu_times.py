"""A pytest plugin recording each test's wall and CPU seconds (its process and the subprocesses it waited for).

CPU seconds hardly depend on what else runs on the machine, so they size a test tier on a shared machine where
wall times do not. Used by ``benchmarks/test_tiers.py``; on its own::

    SYNQ_TEST_TIMES=times.jsonl python -m pytest -p benchmarks.pytest_cpu_times -m slow

appends one JSON line per test (``nodeid``, ``wall_s``, ``cpu_s``, ``outcome``) to ``times.jsonl``, also from
pytest-xdist workers.
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Iterator
from typing import Any

import pytest


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its finished (waited-for) children."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    path = os.environ.get("SYNQ_TEST_TIMES")
    wall, cpu = time.perf_counter(), cpu_seconds()
    outcome: dict[str, Any] = {}
    item.stash[_OUTCOME] = outcome
    yield
    if path:
        line = {"nodeid": item.nodeid, "wall_s": round(time.perf_counter() - wall, 2),
                "cpu_s": round(cpu_seconds() - cpu, 2), "outcome": outcome.get("outcome", "passed")}
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")


_OUTCOME = pytest.StashKey[dict]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    report = (yield).get_result()
    outcome = item.stash.get(_OUTCOME, None)
    if outcome is not None and report.outcome != "passed":
        outcome["outcome"] = report.outcome
