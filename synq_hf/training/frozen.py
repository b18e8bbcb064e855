"""``frozen``: use the caller's teacher in eval mode without gradients, and give it back as it was.

Fine-tuning must not change the objects it is handed: a teacher the caller left in train mode, or with
trainable parameters, gets that state back after ``finetune()`` / ``SynQTrainer.train()`` (a student copied
from it afterwards must still train).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class ModuleState:
    """Which parameters of a module require gradients and which of its submodules are in train mode."""

    requires_grad: tuple[bool, ...]
    training: tuple[bool, ...]

    @classmethod
    def of(cls, module: nn.Module) -> ModuleState:
        return cls(tuple(p.requires_grad for p in module.parameters()), tuple(m.training for m in module.modules()))

    def restore(self, module: nn.Module) -> None:
        """Put this state back on ``module`` (the same module, or one with the same structure)."""
        for p, flag in zip(module.parameters(), self.requires_grad):
            p.requires_grad_(flag)
        for m, flag in zip(module.modules(), self.training):
            m.training = flag


@contextlib.contextmanager
def frozen(module: nn.Module, restore: ModuleState | None = None) -> Iterator[nn.Module]:
    """``module`` in eval mode with no parameter requiring gradients; on exit (also on errors) ``restore`` (default:
    its state on entry) is put back."""
    state = restore or ModuleState.of(module)
    module.eval().requires_grad_(False)
    try:
        yield module
    finally:
        state.restore(module)


__all__ = ["ModuleState", "frozen"]
