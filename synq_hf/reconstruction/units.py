"""Reconstruction units: the stem, the registry's blocks, layers between blocks and the head, in forward order.

The architecture registry names each family's blocks (``ArchSpec.feature_blocks``: a residual block, an
MBConv, a ViT/Swin block...). One traced forward of the quantized model orders them and assigns every quantizer
to the unit it runs in:

* ``stem``: everything from the image to the first block's input (ResNet: the first conv, its BatchNorm, ReLU
  and their quantizers; ViT: the patch embedding and position add). Run by a forward that stops at the first
  block; reconstructed against the float network's first-block input.
* ``block``: one block module, run on its input (cached), reconstructed against the float block's output.
* ``layer``: a quantized conv/linear that runs between two blocks outside both (Swin's patch merging), on its own.
* ``head``: everything after the last block (final norm, pooling, classifier and their quantizers). Run by a
  forward in which every block replays a given tensor, so nothing before the head is recomputed; reconstructed
  against the float logits.

Runners (:func:`run_unit`) give a unit's output for a given input with gradients; :func:`collect` gives a
unit's inputs (and outputs) in a network over many images, stopping each forward as early as it can.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from ..architectures import get_spec
from ..errors import UnsupportedModelError
from ..model_info import hooked_forward, model_logits
from ..quant import ActQuantizer, QuantConv2d, QuantLinear

__all__ = ["Unit", "collect", "reconstruction_units", "run_unit"]

Kind = Literal["stem", "block", "layer", "head"]


@dataclass
class Unit:
    """One reconstruction step: its kind, the module it runs (blocks, layers), the quantizers it trains."""

    name: str
    kind: Kind
    module: str | None = None  # the block or layer module's name (None for stem/head)
    layers: list[str] = field(default_factory=list)  # quantized conv/linear layers it owns
    act_quantizers: list[str] = field(default_factory=list)  # activation quantizers it owns
    call_args: tuple = ()  # non-tensor positional arguments after the input (as traced)
    call_kwargs: dict[str, Any] = field(default_factory=dict)
    returns_tuple: bool = False
    chained: bool = True  # its input is the previous unit's output (so it can be carried over, not recomputed)


class _Stop(Exception):  # noqa: N818 - control flow, never escapes this module
    """Raised by a hook to end a forward once the wanted tensor is captured."""

    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value


def _first_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    raise UnsupportedModelError(f"a reconstruction unit produced {type(value).__name__}, not a tensor")


def block_names(model: nn.Module) -> list[str]:
    """The registry's blocks of ``model`` (outermost only: a block inside another block is part of it)."""
    names = get_spec(model).feature_blocks(model)
    return [n for n in names if not any(n.startswith(f"{o}.") for o in names if o != n)]


class _UnitTracer:
    """Forward hooks that record, during one forward, the blocks and between-block layers in call order and which
    unit trains each quantized layer and activation quantizer (see :func:`reconstruction_units`)."""

    def __init__(self, model: nn.Module, blocks: list[str]) -> None:
        modules = dict(model.named_modules())
        self.model_name, self.modules, self.blocks = type(model).__name__, modules, blocks
        self.block_set = set(blocks)
        self.layers = {n for n, m in modules.items() if isinstance(m, (QuantConv2d, QuantLinear))}
        self.quantizers = {n for n, m in modules.items() if isinstance(m, ActQuantizer)}
        self.order: list[str] = []  # blocks and between-block layers, in call order
        self.owner: dict[str, str] = {}  # layer/quantizer name -> the unit that trains it
        self.calls: dict[str, int] = {}
        self.traced: dict[str, Unit] = {}
        self.finished: set[str] = set()  # blocks whose forward has returned
        self.last_output: Any = None  # the output of the unit that ran last (kept alive: ids stay unique)

    def block_pre(self, name: str):  # noqa: ANN201
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            self.calls[name] = self.calls.get(name, 0) + 1
            if self.calls[name] > 1:
                return
            self.order.append(name)
            extra = args[1:]
            if any(isinstance(a, torch.Tensor) for a in (*extra, *kwargs.values())):
                raise UnsupportedModelError(
                    f"{self.model_name}: block {name} takes tensor arguments besides its input; block "
                    "reconstruction cannot replay it"
                )
            self.traced[name] = Unit(name, "block", name, call_args=tuple(extra), call_kwargs=dict(kwargs),
                                     chained=len(self.order) == 1 or _first_tensor(args) is self.last_output)
        return hook

    def block_post(self, name: str):  # noqa: ANN201
        def hook(module: nn.Module, args: tuple, out: Any) -> None:
            self.traced[name].returns_tuple = not isinstance(out, torch.Tensor)
            self.last_output = _first_tensor(out)
            self.finished.add(name)
        return hook

    def layer_post(self, name: str):  # noqa: ANN201
        def hook(module: nn.Module, args: tuple, out: Any) -> None:
            if name in self.traced:
                self.last_output = _first_tensor(out)
        return hook

    def element(self, name: str):  # noqa: ANN201
        def hook(module: nn.Module, args: tuple) -> None:
            if name in self.owner:
                return
            block = next((b for b in self.blocks if name.startswith(f"{b}.")), None)
            if block is not None:
                self.owner[name] = block
            elif not self.order:
                self.owner[name] = "stem"
            elif self.finished == self.block_set:
                self.owner[name] = "head"
            elif name in self.layers:  # a quantized layer between two blocks: a unit of its own
                self.order.append(name)
                self.traced[name] = Unit(name, "layer", name, chained=_first_tensor(args) is self.last_output)
                self.owner[name] = name
            elif name.endswith(".input_quantizer") and name.removesuffix(".input_quantizer") in self.owner:
                self.owner[name] = self.owner[name.removesuffix(".input_quantizer")]
            # any other quantizer between two blocks keeps its calibrated range (no built-in placement has one)
        return hook

    def trace(self, model: nn.Module, example: torch.Tensor) -> None:
        """One eval-mode forward of ``example`` with the hooks on; the model's mode is restored."""
        m, handles = self.modules, []
        for name in self.blocks:
            handles.append(m[name].register_forward_pre_hook(self.block_pre(name), with_kwargs=True))
            handles.append(m[name].register_forward_hook(self.block_post(name)))
        handles += [m[name].register_forward_pre_hook(self.element(name)) for name in self.layers | self.quantizers]
        handles += [m[name].register_forward_hook(self.layer_post(name)) for name in self.layers]
        hooked_forward(model, example, handles)


@torch.no_grad()
def reconstruction_units(model: nn.Module, example: torch.Tensor) -> list[Unit]:
    """The units of quantized ``model`` in forward order, traced with one forward of ``example`` (a small batch).

    Raises ``UnsupportedModelError`` in one line when the registry names no block, a block runs more than once
    per forward, or a block takes tensor arguments besides its input.
    """
    blocks = block_names(model)
    if not blocks:
        raise UnsupportedModelError(
            f"{type(model).__name__}: the architecture registry names no blocks to reconstruct"
        )
    tracer = _UnitTracer(model, blocks)
    tracer.trace(model, example)
    calls = tracer.calls
    repeated = sorted(n for n, c in calls.items() if c > 1)
    if repeated:
        raise UnsupportedModelError(
            f"{type(model).__name__}: block {repeated[0]} runs {calls[repeated[0]]} times per forward; block "
            "reconstruction needs each block to run once"
        )
    missing = [b for b in blocks if b not in calls]
    if missing:
        raise UnsupportedModelError(f"{type(model).__name__}: block {missing[0]} does not run in a forward")
    units = [Unit("stem", "stem")] + [tracer.traced[n] for n in tracer.order] + [Unit("head", "head")]
    by_name = {u.name: u for u in units}
    for name, unit_name in tracer.owner.items():
        unit = by_name.get(unit_name)
        if unit is None:
            continue
        (unit.layers if name in tracer.layers else unit.act_quantizers).append(name)
    return [u for u in units if u.kind in ("block", "layer") or u.layers or u.act_quantizers]


# -- running units ----------------------------------------------------------------------------------------


class _Replay(nn.Module):
    """Stands in for a block while the head runs: returns ``value`` (the last block) or its own input."""

    def __init__(self, returns_tuple: bool) -> None:
        super().__init__()
        self.value: torch.Tensor | None = None
        self.returns_tuple = returns_tuple

    def forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        out = self.value if self.value is not None else _first_tensor(x)
        return (out,) if self.returns_tuple else out


@contextmanager
def _replaying(model: nn.Module, blocks: list[Unit]) -> Iterator[_Replay]:
    """Swap every block of ``model`` for a :class:`_Replay`; yields the last block's (set its ``value``)."""
    swapped = []
    try:
        for unit in blocks:
            parent_name, _, child = unit.module.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            swapped.append((parent, child, parent._modules[child]))
            parent._modules[child] = _Replay(unit.returns_tuple)
        yield swapped[-1][0]._modules[swapped[-1][1]]
    finally:
        for parent, child, original in swapped:
            parent._modules[child] = original


def _stem_input_shape(x: torch.Tensor, image_shape: tuple[int, ...]) -> torch.Tensor:
    return x.new_zeros((x.shape[0], *image_shape))


def run_unit(model: nn.Module, unit: Unit, x: torch.Tensor, units: list[Unit],
             image_shape: tuple[int, ...]) -> torch.Tensor:
    """``unit``'s output for input ``x`` (images for the stem), with gradients to its parameters."""
    if unit.kind == "stem":
        first = model.get_submodule(next(u.module for u in units if u.kind == "block"))
        return _capture(model, x, [(first, "input")])[0]
    if unit.kind == "head":
        blocks = [u for u in units if u.kind == "block"]
        with _replaying(model, blocks) as replay:
            replay.value = x
            return model_logits(model, _stem_input_shape(x, image_shape))
    module = model.get_submodule(unit.module)
    return _first_tensor(module(x, *unit.call_args, **unit.call_kwargs))


Site = tuple[nn.Module | None, str]  # (module, "input" | "output"), or (None, "logits")


def _sites(model: nn.Module, unit: Unit, units: list[Unit]) -> tuple[Site | None, Site]:
    """Where ``unit``'s input and output appear in a forward (input None: the images)."""
    blocks = [u for u in units if u.kind == "block"]
    if unit.kind == "stem":
        return None, (model.get_submodule(blocks[0].module), "input")
    if unit.kind == "head":
        return (model.get_submodule(blocks[-1].module), "output"), (None, "logits")
    module = model.get_submodule(unit.module)
    return (module, "input"), (module, "output")


def _capture(model: nn.Module, images: torch.Tensor, sites: list[Site]) -> list[torch.Tensor]:
    """The tensors at ``sites`` (in forward order) in one forward of ``images``, stopped after the last one."""
    got: list[torch.Tensor] = []
    handles = []

    def keep(value: Any, last: bool) -> None:
        got.append(_first_tensor(value))
        if last:
            raise _Stop(got[-1])

    for i, (module, where) in enumerate(sites):
        last = i == len(sites) - 1
        if module is None:
            continue
        if where == "input":
            handles.append(module.register_forward_pre_hook(lambda m, a, last=last: keep(a, last)))
        else:
            handles.append(module.register_forward_hook(lambda m, a, o, last=last: keep(o, last)))
    try:
        logits = model_logits(model, images)
        got.append(logits)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    if len(got) != len(sites):
        raise UnsupportedModelError(f"{type(model).__name__}: a reconstruction unit was not reached by the forward")
    return got


@torch.no_grad()
def collect(model: nn.Module, unit: Unit, units: list[Unit], images: torch.Tensor, batch_size: int, *,
            outputs: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(inputs, outputs or None) of ``unit`` in ``model`` over ``images``, batch by batch, each forward stopped as
    soon as it has what it needs. The stem's inputs are the images; the head's outputs are the logits."""
    in_site, out_site = _sites(model, unit, units)
    sites = ([in_site] if in_site is not None else []) + ([out_site] if outputs else [])
    if not sites:
        return images, None
    ins, outs = [], []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        got = _capture(model, batch, sites)
        ins.append(got[0] if in_site is not None else batch)
        if outputs:
            outs.append(got[-1])
    return torch.cat(ins), (torch.cat(outs) if outputs else None)
