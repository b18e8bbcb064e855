"""Processes of an ``accelerate launch`` / ``torchrun`` run: who this process is, and sharing results among them.

Thin wrappers over Accelerate's ``PartialState`` and its object collectives, so that sharded synthesis and
evaluation agree on one definition of "the processes". Every function here is collective when more than one
process runs: all processes must call it, in the same order. In a plain ``python`` run they are no-ops.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import SynQError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["ProcessFailedError", "Processes", "default_device", "end_processes", "launched", "partial_state",
           "processes"]

T = TypeVar("T")


class ProcessFailedError(SynQError):
    """One process of a multi-process run failed; every process raises this, naming the one that failed."""


class Processes:
    """This process's ``rank`` among ``world`` processes, with the collectives sharded work needs."""

    def __init__(self, rank: int = 0, world: int = 1) -> None:
        self.rank, self.world = rank, world

    @property
    def is_main(self) -> bool:
        """Whether this is the main process (rank 0), the one that writes shared outputs."""
        return self.rank == 0

    def share(self, items: list[T]) -> list[T]:
        """This process's share of ``items``: every ``world``-th item from position ``rank`` (round robin)."""
        return items[self.rank::self.world]

    def gather(self, obj: T) -> list[T]:
        """``obj`` of every process, in rank order, on every process (picklable objects)."""
        if self.world == 1:
            return [obj]
        from accelerate.utils import gather_object

        return gather_object([obj])

    def from_main(self, obj: T) -> T:
        """The main process's ``obj`` on every process."""
        if self.world == 1:
            return obj
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([obj], from_process=0)[0]

    def check(self, error: str | None) -> None:
        """Raise :class:`ProcessFailedError` on every process if any process reports an ``error`` message.

        A process that failed passes its message instead of raising alone, so the others do not wait for it
        forever in the next collective.
        """
        errors = [(rank, e) for rank, e in enumerate(self.gather(error)) if e]
        if errors:
            rank, message = errors[0]
            where = f"process {rank} of {self.world}: " if self.world > 1 else ""
            raise ProcessFailedError(f"{where}{message}")

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        """Run a block on every process; if it raised on any, raise :class:`ProcessFailedError` on every one.

        The block must hold no collective (a process that failed would leave the others waiting in it); one
        collective (:meth:`check`) follows it. Alone, the block's own exception propagates unchanged.
        """
        if self.world == 1:
            yield
            return
        try:
            yield
        except Exception as e:
            self.check(str(e) if isinstance(e, SynQError) else f"{type(e).__name__}: {e}")
            raise  # pragma: no cover - check() raised
        self.check(None)

    def barrier(self) -> None:
        """Wait until every process gets here."""
        if self.world > 1:
            partial_state().wait_for_everyone()


def partial_state() -> Any:
    """Accelerate's ``PartialState`` for this run, with CPU processes (gloo) set up when there is no CUDA.

    Accelerate sets up CPU processes only when asked to (``accelerate launch --cpu``); a plain ``torchrun`` on
    a machine without CUDA must ask too. A state made earlier (by the Trainer, or by the script) is reused.
    """
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available())


def default_device() -> torch.device:
    """This process's device when none is given: Accelerate's (``cuda``, or ``cuda:LOCAL_RANK`` under a launcher;
    ``cpu`` without CUDA), from :func:`partial_state`."""
    return partial_state().device


def processes(distributed: bool | None = None) -> Processes:
    """The processes of this run (Accelerate's view); ``distributed=False`` pretends this one is alone.

    ``None`` (the default) means: shard when the script was started by ``accelerate launch`` or ``torchrun``
    with more than one process (``WORLD_SIZE`` > 1), else run alone.
    """
    if distributed is False:
        return Processes()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 and not distributed:
        return Processes()
    state = partial_state()
    return Processes(state.process_index, state.num_processes)


def launched() -> tuple[int, int]:
    """(rank, world) from the launcher's environment: no collective, safe before the process group exists.

    ``(0, 1)`` in a plain ``python`` run.
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    return (int(os.environ.get("RANK", "0") or 0), world) if world > 1 else (0, 1)


def end_processes() -> None:
    """Tear down this run's process group, if one was set up; a no-op in a plain ``python`` run.

    Call it last in a multi-process script: a gloo group left to the interpreter's exit can abort the process
    (``terminate called without an active exception``, exit code -6) while its threads are destroyed, which turns a
    finished run into a failed one. Not collective: a process that failed may call it alone.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
