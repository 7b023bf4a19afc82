"""Post-training quantization: fold BatchNorm, calibrate activation ranges, swap in quant layers.

Static mode runs the calibration data through the (BN-folded) float model once, with a forward
pre-hook on every selected layer that feeds its input to an observer; the observed ranges become
each layer's input scale / zero point. Weights are quantized from their own values. Every
``nn.Linear`` / ``nn.Conv2d`` becomes a :class:`QuantLinear` / :class:`QuantConv2d`; layers with
no matrix-like weight (norms, pools, activations) stay float; any other layer with a weight of
two or more dimensions (Conv1d, Embedding, attention, RNN, ...) is an error unless ignored
(or stays float with ``QuantConfig(strict=False)``). Tensors that a container module owns
itself (a model's ``pos_embed``) stay float.
With ``residual_adds=True`` the tensors around residual adds are quantized too
(:mod:`torchshrink.quantize.residual`).

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    >>> batches = [torch.randn(32, 8) for _ in range(4)]
    >>> qnet = quantize(net, QuantConfig.preset("w8a8"), calibration=batches)
    >>> [type(m).__name__ for m in qnet]
    ['QuantLinear', 'ReLU', 'QuantLinear']
    >>> get_quant_report(qnet).num_quantized
    2
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import EmptyDataError, UnsupportedLayerError
from torchshrink.quantize.config import QuantConfig
from torchshrink.quantize.fold import fold_bn
from torchshrink.quantize.observers import Observer, make_observer
from torchshrink.quantize.primitives import check_finite
from torchshrink.quantize.qmodules import QUANT_LAYERS
from torchshrink.quantize.residual import (
    attach_output_quant,
    residual_points,
)
from torchshrink.quantize.spec import QuantSpec

_REPORT_ATTR = "_torchshrink_quant_report"


@dataclass(frozen=True)
class LayerQuant:
    """How one layer ended up: ``kind`` is ``"quantized"`` or ``"float"`` with a ``reason``."""

    name: str
    layer_type: str
    kind: str
    weight_bits: int | None = None
    granularity: str | None = None
    mode: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class QuantReport:
    """What :func:`quantize` did: scheme, folded BatchNorms, calibration samples, every layer."""

    scheme: str
    mode: str
    folded_bn: int
    calibration_samples: int
    layers: tuple[LayerQuant, ...]

    @property
    def num_quantized(self) -> int:
        return sum(layer.kind == "quantized" for layer in self.layers)

    @property
    def float_layers(self) -> list[str]:
        return [layer.name for layer in self.layers if layer.kind == "float"]


def quantize(
    model: nn.Module,
    config: QuantConfig | None = None,
    *,
    calibration: Any = None,
    residual_adds: bool = False,
) -> nn.Module:
    """Return a quantized copy of ``model``; ``model`` itself is not changed.

    Args:
        model: a trained float model.
        config: the quantization config (default: ``QuantConfig.preset("w8a8")``).
        calibration: input data for static mode (ignored otherwise): a :class:`DataBundle`
            (its train split), a dataset of ``(x, y)`` or ``x``, a DataLoader, or an iterable
            of input batches (tensors, ``(x, y)`` tuples or keyword dicts). At most
            ``config.calibration_size`` samples are used.
        residual_adds: static mode: also quantize the tensors around residual adds (module
            docstring), so that an int8 runtime runs ``conv -> Add -> ReLU`` in integers.
            These output quantizers are forward hooks; model files keep them (a loaded
            model computes the same int8 adds and exports to the same ONNX graph).

    Returns:
        A new model in eval mode whose Linear / Conv2d layers are quant layers; its
        :class:`QuantReport` is available through :func:`get_quant_report`.

    Raises:
        ConfigError: a parameter holds NaN / Inf (named), or a spec does not fit a layer.
        EmptyDataError: static mode and the calibration data is missing or has no samples.
        UnsupportedLayerError: ``config.strict`` and layers of a type that cannot be
            quantized are not in ``ignore``. Parameters that a container module owns itself
            (``pos_embed`` on a model's root) are never an error: they stay float.

    Example:
        >>> from torchshrink.core.zoo import create_zoo_model
        >>> m = create_zoo_model("lenet5")
        >>> q = quantize(m, QuantConfig.preset("w8"))
        >>> type(q.fc1).__name__, type(m.fc1).__name__
        ('QuantLinear', 'Linear')
    """
    config = config or QuantConfig()
    if config.scheme in ("binary", "ternary"):
        # Sign / threshold codes times a channel scale are not a uniform grid: post-training
        # they live in the codebook layers (the same levels quantize.qat trains).
        from torchshrink.quantize.codebook import quantize_codebook

        floats = [name for name, v in config.overrides.items() if v == "float"]
        return quantize_codebook(
            model, config.scheme, ignore=config.ignore, keep_float=floats, fold=config.fold_bn
        )
    out, folded, selected, records = prepared_copy(model, config)
    observers: dict[str, Observer] = {}
    out_observers: dict[str, Observer] = {}
    n_samples = 0
    if config.mode == "static" and selected:
        assert config.activation is not None  # guaranteed by QuantConfig validation
        observers = input_observers(selected, config)
        points = (
            residual_points(out, _example(calibration, config), set(selected))
            if residual_adds
            else []
        )
        out_observers = {
            name: make_observer(config.observer, config.activation, name=f"{name}.output")
            for name in points
        }
        n_samples = _calibrate(out, observers, calibration, config, outputs=out_observers)

    for name in selected:
        module = out.get_submodule(name)
        if name in observers and observers[name].num_batches == 0:
            records[name] = _float(name, module, "not reached by the calibration data")
            continue
        spec = config.weight_spec_for(name)
        assert spec is not None  # float overrides were dropped by _select_layers
        weight = cast(torch.Tensor, module.weight)
        spec, note = fit_group_size(spec, tuple(weight.shape), name=name)
        qlayer = QUANT_LAYERS[type(module)](
            module,
            spec,
            config.activation,
            mode=config.mode,
            weight_observer=config.weight_observer,
            name=name,
        )
        if name in observers:
            qlayer.set_input_qparams(*observers[name].compute())
        _set_submodule(out, name, qlayer)
        records[name] = LayerQuant(
            name,
            type(module).__name__,
            "quantized",
            spec.bits,
            spec.granularity,
            config.mode,
            reason=note,
        )

    attach_output_quant(out, out_observers, config)
    report = QuantReport(
        config.scheme, config.mode, folded, n_samples, tuple(records[n] for n in records)
    )
    object.__setattr__(out, _REPORT_ATTR, report)  # plain metadata, survives deepcopy
    return out


def fit_group_size(
    spec: QuantSpec, weight_shape: torch.Size | tuple[int, ...], *, name: str = "layer"
) -> tuple[QuantSpec, str]:
    """A per-group spec whose groups fit ``weight_shape``, and why it changed (or ``""``).

    When ``group_size`` does not divide the flattened input dim ``K`` (784 for a 28x28 input),
    the largest divisor of ``K`` below it is used; when that is under 8 (``K`` prime, say),
    groups would cost more scale bytes than they save, so the layer goes per channel.

    Example:
        >>> spec, why = fit_group_size(QuantSpec.preset("int4g128"), (300, 784), name="fc1")
        >>> spec.group_size, why
        (112, 'fc1: group_size 128 does not divide the input dim 784; groups of 112')
    """
    if spec.granularity != "per_group" or len(weight_shape) < 2:
        return spec, ""
    assert spec.group_size is not None  # guaranteed by QuantSpec validation
    k = math.prod(weight_shape) // max(weight_shape[spec.resolve_axis(len(weight_shape))], 1)
    if k % spec.group_size == 0:
        return spec, ""
    size = next(d for d in range(min(spec.group_size, k), 0, -1) if k % d == 0)
    why = f"{name}: group_size {spec.group_size} does not divide the input dim {k}"
    if size < 8:
        fields = spec.model_dump(exclude={"group_size"})
        return QuantSpec(**{**fields, "granularity": "per_channel"}), f"{why}; per channel"
    return spec.model_copy(update={"group_size": size}), f"{why}; groups of {size}"


def prepared_copy(
    model: nn.Module, config: QuantConfig
) -> tuple[nn.Module, int, list[str], dict[str, LayerQuant]]:
    """The common start of PTQ and QAT: check for NaN / Inf, copy, fold BN, select the layers.

    Returns the copy (eval mode), the number of BN layers folded, the selected layer names and
    the records of the layers left in float (with their reasons).
    """
    for pname, param in model.named_parameters():
        check_finite(param.detach(), pname)
    out = copy.deepcopy(model).eval()
    folded = 0
    if config.fold_bn:
        n_bn = _count_bn(out)
        fold_bn(out, inplace=True)
        folded = n_bn - _count_bn(out)
    selected, records = _select_layers(out, config)
    return out, folded, selected, records


def input_observers(selected: list[str], config: QuantConfig) -> dict[str, Observer]:
    """One activation observer per selected layer input (static mode)."""
    assert config.activation is not None  # static configs always have one
    return {
        n: make_observer(config.observer, config.activation, name=f"{n}.input") for n in selected
    }


def get_quant_report(model: nn.Module) -> QuantReport | None:
    """The :class:`QuantReport` recorded by :func:`quantize`, or ``None``."""
    return getattr(model, _REPORT_ATTR, None)


def _example(calibration: Any, config: QuantConfig) -> Any:
    """One calibration sample to trace with, or ``None`` (a one-shot iterator would lose it)."""
    if calibration is None or isinstance(calibration, Iterator):
        return None
    try:
        return _trim(next(_batches(calibration, config)), 1)
    except Exception:  # empty or odd data: calibration itself reports it
        return None


def _select_layers(model: nn.Module, config: QuantConfig) -> tuple[list[str], dict[str, Any]]:
    """Names of the layers to quantize, and float records of the layers left alone."""
    selected: list[str] = []
    records: dict[str, LayerQuant] = {}
    unsupported: list[str] = []

    def visit(module: nn.Module, name: str) -> None:
        if name and config.is_ignored(name):
            if _has_matrix_weight(module) or type(module) in QUANT_LAYERS:
                records[name] = _float(name, module, "ignored")
            return
        if type(module) in QUANT_LAYERS:
            if config.weight_spec_for(name) is None:
                records[name] = _float(name, module, "override 'float'")
            else:
                selected.append(name)
            return
        if _has_matrix_weight(module) and _is_layer(module):
            if config.strict:
                unsupported.append(f"{name or '<root>'} ({type(module).__name__})")
            else:
                records[name] = _float(name, module, "unsupported layer type")
            return
        for pname, param in module.named_parameters(recurse=False):
            # a container's own tensor (a position embedding, a class token) is no layer
            if param.dim() >= 2:
                full = f"{name}.{pname}" if name else pname
                records[full] = LayerQuant(
                    full, type(module).__name__, "float", reason="parameter of a container"
                )
        for child_name, child in module.named_children():
            visit(child, f"{name}.{child_name}" if name else child_name)

    visit(model, "")
    if unsupported:
        raise UnsupportedLayerError(
            f"cannot quantize {len(unsupported)} layer(s) of unsupported type: "
            f"{', '.join(unsupported)}; supported: Linear, Conv2d. Add them to "
            "QuantConfig.ignore (or set strict=False) to keep them in float"
        )
    return selected, records


def _has_matrix_weight(module: nn.Module) -> bool:
    return any(p.dim() >= 2 for p in module.parameters(recurse=False))


def _is_layer(module: nn.Module) -> bool:
    """A layer (whose weights a kernel uses), not a container that also owns a tensor.

    Leaves are layers; so are torch.nn built-ins with children (``MultiheadAttention`` owns
    ``in_proj_weight`` beside its ``out_proj``). A user's module with children that owns a
    parameter (``pos_embed`` on a model's root) is a container.
    """
    is_leaf = next(module.children(), None) is None
    return is_leaf or type(module).__module__.startswith("torch.nn.")


def _float(name: str, module: nn.Module, reason: str) -> LayerQuant:
    return LayerQuant(name, type(module).__name__, "float", reason=reason)


@torch.no_grad()
def _calibrate(
    model: nn.Module,
    observers: dict[str, Observer],
    calibration: Any,
    config: QuantConfig,
    *,
    outputs: dict[str, Observer] | None = None,
) -> int:
    """Run up to ``calibration_size`` samples through ``model``, observing layer inputs.

    ``outputs`` observers watch their module's output instead of its input.
    """
    if calibration is None:
        raise EmptyDataError(
            f"scheme '{config.scheme}' quantizes activations statically and needs calibration "
            "data: pass calibration=<dataset, DataLoader or list of input batches>"
        )
    handles = [
        model.get_submodule(name).register_forward_pre_hook(_observe_hook(obs))
        for name, obs in observers.items()
    ]
    handles += [
        model.get_submodule(name).register_forward_hook(_observe_output_hook(obs))
        for name, obs in (outputs or {}).items()
    ]
    seen = 0
    try:
        for batch in _batches(calibration, config):
            batch = _trim(batch, config.calibration_size - seen)
            n = _batch_size(batch)
            if n == 0:
                continue
            if isinstance(batch, dict):
                model(**batch)
            else:
                model(batch)
            seen += n
            if seen >= config.calibration_size:
                break
    finally:
        for h in handles:
            h.remove()
    if seen == 0:
        raise EmptyDataError("the calibration data has no samples")
    return seen


def _observe_hook(observer: Observer) -> Any:
    def hook(_module: nn.Module, args: tuple[Any, ...]) -> None:
        if args and isinstance(args[0], torch.Tensor):
            observer.observe(args[0])

    return hook


def _observe_output_hook(observer: Observer) -> Any:
    def hook(_module: nn.Module, _args: Any, output: Any) -> None:
        if isinstance(output, torch.Tensor):
            observer.observe(output)

    return hook


def _batches(calibration: Any, config: QuantConfig) -> Iterator[Any]:
    """Model inputs (tensor or kwargs dict), one batch at a time."""
    source: Iterable[Any]
    if isinstance(calibration, DataBundle):
        calibration = calibration.calibration(config.calibration_size)
    if isinstance(calibration, torch.Tensor):
        source = [calibration]
    elif isinstance(calibration, Dataset) and not isinstance(calibration, DataLoader):
        if len(calibration) == 0:  # type: ignore[arg-type]
            raise EmptyDataError("the calibration dataset has no samples")
        source = DataLoader(calibration, batch_size=config.batch_size, shuffle=False)
    else:
        source = calibration
    for batch in source:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


def _batch_size(batch: Any) -> int:
    if isinstance(batch, dict):
        batch = next(iter(batch.values()), torch.empty(0))
    return int(batch.shape[0]) if isinstance(batch, torch.Tensor) and batch.dim() > 0 else 1


def _trim(batch: Any, n: int) -> Any:
    if isinstance(batch, torch.Tensor) and batch.dim() > 0:
        return batch[:n]
    if isinstance(batch, dict):
        return {k: v[:n] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    return batch


def _count_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
