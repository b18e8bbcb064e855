"""Per-group synthesis checkpoints: each finished group of images is saved as it completes, and reused.

A synthesis run is a plan of groups; group ``g`` (its index in the plan) starts from noise and labels seeded by
``(seed, g, attempt)`` and the augmentation of its forward unit by the unit's first group, so a group's pixels
depend on nothing but its index, its attempt and the run's config. :class:`GroupStore` keeps
``group-<g>.safetensors`` (pixels, labels, attempt, the unit's loss log) in a folder whose ``groups.json`` records the fingerprint of the run (teacher, resolved
config, plan size): a store written for another run is refused. Groups are written a forward unit at a time
(``synthesis_groups_per_forward`` groups, once all of them are finished), by whichever process optimized the
unit; a rerun with any number of processes loads them and synthesizes only the unfinished units.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..hub.outputs import write_file

__all__ = ["GroupStore"]

_MANIFEST = "groups.json"


class GroupStore:
    """A folder of finished synthesis groups for one run (identified by ``fingerprint``, any JSON dict)."""

    def __init__(self, folder: str | os.PathLike, fingerprint: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        manifest = self.folder / _MANIFEST
        fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True))
        if manifest.is_file():
            try:
                saved = json.loads(manifest.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as e:
                raise CheckpointError(f"{manifest} is unreadable ({e}); delete {self.folder} to start over") from None
            if saved != fingerprint:
                diff = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
                raise CheckpointError(
                    f"{self.folder} holds synthesis groups of another run (different {', '.join(diff)}); "
                    "delete it or use another work folder"
                )
        else:
            _atomic_write_bytes(manifest, (json.dumps(fingerprint, indent=2, sort_keys=True) + "\n").encode())
        self.fingerprint = fingerprint

    def path(self, group: int) -> Path:
        """The checkpoint file of group ``group``."""
        return self.folder / f"group-{group:06d}.safetensors"

    def done(self) -> set[int]:
        """Indices of the groups already saved."""
        out = set()
        for p in self.folder.glob("group-*.safetensors"):
            try:
                out.add(int(p.stem.split("-", 1)[1]))
            except ValueError:
                continue
        return out

    def save(self, group: int, pixels: torch.Tensor, labels: torch.Tensor, attempt: int = 0,
             history: list[dict[str, Any]] | None = None) -> None:
        """Save one finished group atomically (a crash never leaves a half-written file).

        ``history`` (the loss log of the forward unit the group was optimized in) is kept for :meth:`history`.
        """
        from safetensors.torch import save

        metadata = {"group": str(group), "attempt": str(attempt)}
        if history is not None:
            metadata["history"] = json.dumps(history)
        data = save({"pixels": pixels.detach().cpu().contiguous(), "labels": labels.detach().cpu().contiguous()},
                    metadata=metadata)
        _atomic_write_bytes(self.path(group), data)

    def load(self, group: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(pixels, labels, attempt) of a saved group."""
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        path = self.path(group)
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), "pt") as f:
                attempt = int((f.metadata() or {}).get("attempt", 0))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path} is corrupt ({e}); delete it to synthesize that group again") from None
        return tensors["pixels"], tensors["labels"], attempt

    def history(self, group: int) -> list[dict[str, Any]]:
        """The loss log saved with group ``group`` (empty for groups saved without one)."""
        from safetensors import SafetensorError, safe_open

        path = self.path(group)
        try:
            with safe_open(str(path), "pt") as f:
                return json.loads((f.metadata() or {}).get("history", "[]"))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{path} is corrupt ({e}); delete it to synthesize that group again") from None


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    write_file(path, lambda tmp: tmp.write_bytes(data))
