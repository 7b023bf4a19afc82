"""Quantization around residual adds (static PTQ with ``residual_adds=True``).

Residual adds (static mode, ``residual_adds=True``): an int8 runtime can only run
``conv -> Add -> ReLU`` in integers when the tensors around the ``Add`` are quantized too.
One dynamic trace
(:func:`torchshrink.graph.trace`) finds every ``a + b`` whose operands come (through slicing /
zero padding) from a quantized layer or a ``ReLU`` module and whose result goes to a ``ReLU``
module; those modules' *outputs* get an observer during calibration and then a forward hook
(:class:`OutputFakeQuant`) that fake-quantizes them, so the simulation computes what the ONNX
QDQ graph computes (``deploy.onnx_export`` reads the same numbers via
:func:`get_output_qparams`). Model files keep each hook's qparams as the module extra
``output_quant`` (:mod:`torchshrink.core.modulestate_extra`), and loading puts the hooks back,
so a loaded model computes the same int8 adds and exports to the same QLinearAdd graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from torchshrink.core.errors import ModelFileError
from torchshrink.core.modulestate_extra import register_module_extra
from torchshrink.graph import trace
from torchshrink.quantize.config import QuantConfig
from torchshrink.quantize.observers import Observer
from torchshrink.quantize.primitives import fake_quantize
from torchshrink.quantize.spec import QuantSpec

_EXTRA_KEY = "output_quant"  # the module extra in model files
# Traced ops: a residual sum, ops that keep values on a quantization grid (slicing, zero padding).
_ADD_OPS = {"add", "add_", "__add__", "__iadd__", "__radd__"}
_GRID_OPS = {"__getitem__", "pad", "contiguous"}


@dataclass(frozen=True)
class OutputQParams:
    """Calibrated quantization of one module's *output* (a tensor around a residual add)."""

    name: str
    scale: float
    zero_point: int
    spec: QuantSpec


class OutputFakeQuant:
    """Forward hook that fake-quantizes a module's output with fixed calibrated qparams.

    Example:
        >>> spec = QuantSpec.preset("uint8")
        >>> relu = nn.ReLU()
        >>> _ = relu.register_forward_hook(OutputFakeQuant(OutputQParams("r", 0.5, 0, spec)))
        >>> relu(torch.tensor([0.7, -1.0])).tolist()
        [0.5, 0.0]
    """

    def __init__(self, qparams: OutputQParams) -> None:
        self.qparams = qparams
        self._scale = torch.tensor(qparams.scale)
        self._zp = torch.tensor(qparams.zero_point, dtype=torch.int32)

    def __call__(self, _module: nn.Module, _args: Any, output: Any) -> Any:
        if not isinstance(output, torch.Tensor):
            return output
        qp = self.qparams
        return fake_quantize(output, self._scale, self._zp, qp.spec, name=f"{qp.name}.output")


def get_output_qparams(model: nn.Module) -> dict[str, OutputQParams]:
    """Module name -> calibrated output qparams that :func:`quantize` attached (may be empty).

    The hooks are the record: a copy, a loaded model file or a model holding the quantized
    one as a submodule (names then relative to ``model``) all report what they run.

    Example:
        >>> get_output_qparams(nn.Linear(2, 2))
        {}
    """
    return {
        name: hook.qparams
        for name, module in model.named_modules()
        for hook in module._forward_hooks.values()
        if isinstance(hook, OutputFakeQuant)
    }


def strip_output_quant(model: nn.Module) -> None:
    """Remove every :class:`OutputFakeQuant` hook from ``model`` (in place), e.g. for export."""
    for module in model.modules():
        for key, hook in list(module._forward_hooks.items()):
            if isinstance(hook, OutputFakeQuant):
                del module._forward_hooks[key]


def residual_points(model: nn.Module, example: Any, selected: set[str]) -> list[str]:
    """Modules whose outputs surround a residual add (see the module docstring), in order.

    ``example`` is one input batch to trace with (``None``: no points).
    """
    if example is None or not any(isinstance(m, nn.ReLU) for m in model.modules()):
        return []  # nothing to trace with, or no ReLU module to quantize the sum at
    try:
        graph = trace(model, example)
    except Exception:  # a model the tracer cannot run keeps its residual adds in float
        return []

    def site(value: int) -> str | None:
        node = graph.nodes[graph.values[value].producer]
        while node.kind == "function" and node.target in _GRID_OPS and node.inputs:
            node = graph.nodes[graph.values[node.inputs[0]].producer]
        if node.kind == "module" and node.target in selected:
            return node.target
        if node.kind == "function" and node.target in ("relu", "relu_"):
            # the function a ReLU module runs: its output is the module's output
            return node.scope if node.scope_type == "ReLU" else None
        return None

    points: list[str] = []
    for node in graph.nodes:
        if node.kind != "function" or node.target not in _ADD_OPS or len(node.inputs) != 2:
            continue
        users = graph.users(node.outputs[0])
        found = [site(v) for v in node.inputs]
        if len(users) == 1 and users[0].target in ("relu", "relu_"):
            found.append(site(users[0].outputs[0]))
        if len(found) == 3 and all(found):
            points += [p for p in found if p is not None and p not in points]
    return points


def attach_output_quant(
    model: nn.Module, observers: dict[str, Observer], config: QuantConfig
) -> None:
    """Fake-quantize the observed module outputs from now on, and record their qparams."""
    for name, obs in observers.items():
        if obs.num_batches == 0:
            continue
        assert config.activation is not None
        scale, zp = obs.compute()
        qp = OutputQParams(name, float(scale), int(zp), config.activation)
        model.get_submodule(name).register_forward_hook(OutputFakeQuant(qp))


def _record(module: nn.Module) -> dict[str, Any] | None:
    """The ``output_quant`` extra of ``module`` in a model file, or ``None``."""
    hooks = [h for h in module._forward_hooks.values() if isinstance(h, OutputFakeQuant)]
    if not hooks:
        return None
    qp = hooks[-1].qparams
    spec = qp.spec.model_dump(mode="json")
    return {"name": qp.name, "scale": qp.scale, "zero_point": qp.zero_point, "spec": spec}


def _restore(module: nn.Module, value: Any) -> None:
    """Put the recorded output quantizer back on a loaded ``module``."""
    try:
        qp = OutputQParams(
            str(value["name"]),
            float(value["scale"]),
            int(value["zero_point"]),
            QuantSpec.model_validate(value["spec"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"malformed '{_EXTRA_KEY}' record {value!r}: {exc}") from None
    if not qp.scale > 0:
        raise ModelFileError(f"'{_EXTRA_KEY}' of '{qp.name}': scale must be > 0, got {qp.scale}")
    for key, hook in list(module._forward_hooks.items()):
        if isinstance(hook, OutputFakeQuant):
            del module._forward_hooks[key]
    module.register_forward_hook(OutputFakeQuant(qp))


register_module_extra(_EXTRA_KEY, record=_record, restore=_restore)
