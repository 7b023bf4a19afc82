"""Quantization-aware training: LSQ fake-quant layers trained by the one training loop, then converted.

:func:`prepare_qat` folds BatchNorm, picks the layers :func:`~torchshrink.quantize.ptq.quantize`
would quantize (same ``overrides`` / ``ignore`` rules) and wraps each in a :class:`QATLayer`:

- uniform weights (``w8a8``, ``w4``, ... and per-layer ``QuantSpec`` overrides): an
  :class:`~torchshrink.quantize.lsq.LSQFakeQuant` whose learnable scale starts where PTQ's
  weight observer puts it, so an untrained prepared model computes what PTQ computes;
- ``binary`` weights: ``sign(w)`` times the channel's mean ``|w|`` (XNOR-Net), ``ternary``:
  TWN threshold ``0.7 * mean|w|`` with the kept weights' mean ``|w|`` as scale; the sign and the
  threshold pass the gradient straight through, the scale is differentiable;
- static activations: an LSQ fake-quantizer per layer input, scale and zero point from the
  calibration observer (``config.observer``); dynamic activations: per-batch min-max with STE.

The prepared model is an ordinary ``nn.Module``: train it with :func:`torchshrink.train.train`
(the scales are parameters like the weights). :func:`convert_qat` then builds the same
``QuantLinear`` / ``QuantConv2d`` layers PTQ builds, so saving, ONNX export and ONNX Runtime work
unchanged. :func:`qat` does all three in one call.

BatchNorm is folded *before* QAT (``config.fold_bn``, on by default): the weights that are
fake-quantized during training are then exactly the ones the integer kernel runs, with no
train / inference mismatch from batch statistics, and short low-learning-rate QAT fine-tuning
does not need BN's conditioning. (Freezing BN statistics instead would keep a second scale in
the graph that conversion would have to fold after the fact, changing the quantized weights.)

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    >>> prepared = prepare_qat(net, QuantConfig.preset("w4"))
    >>> type(prepared[0]).__name__, prepared[0].kind
    ('QATLayer', 'uniform')
    >>> type(convert_qat(prepared)[0]).__name__
    'QuantLinear'
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, cast

import torch
from torch import nn

from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import ConfigError
from torchshrink.quantize.config import QuantConfig
from torchshrink.quantize.lsq import LSQFakeQuant
from torchshrink.quantize.nonuniform import binarize, ternarize
from torchshrink.quantize.observers import make_observer
from torchshrink.quantize.primitives import (
    EPS,
    check_finite,
    fake_quantize,
    from_blocks,
    qparams_from_tensor,
    to_blocks,
)
from torchshrink.quantize.primitives import quantize as quantize_codes
from torchshrink.quantize.ptq import (
    _REPORT_ATTR,
    LayerQuant,
    QuantReport,
    _calibrate,
    _set_submodule,
    input_observers,
    prepared_copy,
)
from torchshrink.quantize.qmodules import QUANT_LAYERS, ActMode, QuantLayer
from torchshrink.quantize.spec import QuantSpec

if TYPE_CHECKING:
    from torchshrink.train.config import TrainConfig
    from torchshrink.train.hooks import TrainHook
    from torchshrink.train.loop import TrainResult

WeightKind = Literal["uniform", "binary", "ternary"]
# Binary / ternary codes (-1, 0, 1) are stored in a 2-bit per-channel QuantLayer: code * scale.
_CODE_SPEC = QuantSpec.preset("int2")  # 2 bits per channel, symmetric
_REPORT_BITS = {"binary": 1, "ternary": 2}


def _ste(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Forward ``value``, gradient of the identity with respect to ``x``."""
    return (value - x).detach() + x


class ExactLSQFakeQuant(LSQFakeQuant):
    """:class:`LSQFakeQuant` whose forward *value* uses the scale bit for bit.

    ``lsq._grad_scale`` computes ``(s - s*g) + s*g``, which can differ from ``s`` by one ulp;
    values on a rounding tie (a min-max range's extreme weight, discrete input pixels) then go
    to the other level than the converted integer layer picks. Here the scale's value is ``s``
    exactly and its gradient is still multiplied by ``g``, so fake-quant and converted models
    compute the same numbers.

    Example:
        >>> fq = ExactLSQFakeQuant(QuantSpec(bits=4, granularity="per_channel"), torch.randn(3, 5))
        >>> fq(torch.ones(3, 5)).shape
        torch.Size([3, 5])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_finite(x, self.name)
        blocks = to_blocks(x, self.spec).float()  # (R, K)
        g = 1.0 / math.sqrt(max(blocks.shape[1], 1) * self.spec.qmax)
        sg = self.scale * g
        s = (self.scale.detach() + (sg - sg.detach())).reshape(-1, 1).clamp(min=EPS)  # (R, 1)
        z = self.zero_point.float().reshape(-1, 1)  # (R, 1)
        v = (blocks / s + z).clamp(self.spec.qmin, self.spec.qmax)
        out = (_ste(torch.round(v), v) - z) * s  # (R, K)
        return from_blocks(out, self.spec, x.shape).to(x.dtype)


class SignScaleQuant(nn.Module):
    """Binary or ternary fake-quantizer of a weight, per output channel (axis 0).

    Codes come from :func:`~torchshrink.quantize.nonuniform.binarize` /
    :func:`~torchshrink.quantize.nonuniform.ternarize` (no gradient); the per-channel scale is
    the mean ``|w|`` of the (kept) weights, recomputed from the current weight with gradient,
    and the codes pass the gradient straight through.

    Args:
        kind: ``"binary"`` or ``"ternary"``.
        threshold: ternary threshold as a fraction of the channel's mean ``|w|``.

    Example:
        >>> q = SignScaleQuant("ternary")
        >>> q(torch.tensor([[2.0, -2.0, 0.1]])).tolist()
        [[2.0, -2.0, 0.0]]
    """

    def __init__(self, kind: Literal["binary", "ternary"], *, threshold: float = 0.7) -> None:
        super().__init__()
        self.kind = kind
        self.threshold = threshold

    def codes_and_scale(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Int8 codes shaped like ``w`` and the float32 ``(C_out,)`` scale the kernel uses."""
        if self.kind == "binary":
            sc = binarize(w.detach(), axis=0)
        else:
            sc = ternarize(w.detach(), axis=0, threshold=self.threshold)
        return sc.codes, sc.scale

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        codes, _ = self.codes_and_scale(w)
        rows = w.reshape(w.shape[0], -1)  # (C, K)
        c = codes.reshape(w.shape[0], -1).to(w.dtype)  # (C, K) in {-1, 0, 1}
        kept = c.abs()
        scale = (rows.abs() * kept).sum(1) / kept.sum(1).clamp(min=1)  # (C,), has gradient
        return (_ste(c, rows) * scale[:, None]).reshape(w.shape)

    def extra_repr(self) -> str:
        return self.kind if self.kind == "binary" else f"ternary, threshold={self.threshold}"


class DynamicInputQuant(nn.Module):
    """Per-batch min-max fake quantization of a layer input (what dynamic int8 does at run time).

    Example:
        >>> q = DynamicInputQuant(QuantSpec.preset("uint8"))
        >>> q(torch.linspace(0, 1, 5)).shape
        torch.Size([5])
    """

    def __init__(self, spec: QuantSpec, *, name: str = "input") -> None:
        super().__init__()
        self.spec = spec
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale, zp = qparams_from_tensor(x.detach(), self.spec, name=self.name)
        return fake_quantize(x, scale, zp, self.spec, name=self.name)


class QATLayer(nn.Module):
    """A Linear / Conv2d whose weight (and input) pass through fake-quantizers while training.

    Args:
        module: the float layer; trained in place (its weight stays the float master copy).
        weight_quant: :class:`LSQFakeQuant` or :class:`SignScaleQuant`.
        input_quant: the input fake-quantizer, ``None`` for weight-only.
        kind: ``"uniform"``, ``"binary"`` or ``"ternary"``.
        mode: the activation mode of the config (``static``, ``dynamic``, ``weight_only``).
        act_spec: the input spec, ``None`` for weight-only.
        name: the layer's name in the model.
    """

    def __init__(
        self,
        module: nn.Module,
        weight_quant: nn.Module,
        input_quant: nn.Module | None = None,
        *,
        kind: WeightKind = "uniform",
        mode: ActMode = "weight_only",
        act_spec: QuantSpec | None = None,
        name: str = "layer",
    ) -> None:
        super().__init__()
        if type(module) not in QUANT_LAYERS:
            raise ConfigError(f"QATLayer {name}: expected Linear or Conv2d, got {type(module)}")
        self.module = module
        self.weight_quant = weight_quant
        self.input_quant = input_quant
        self.kind: WeightKind = kind
        self.mode: ActMode = mode
        self.act_spec = act_spec
        self.layer_name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_quant is not None:
            x = self.input_quant(x)
        w = self.weight_quant(self.module.weight)
        bias = self._bias()
        if isinstance(self.module, nn.Conv2d):
            return self.module._conv_forward(x, w, bias)  # (B, C_out, H', W')
        return nn.functional.linear(x, w, bias)  # (*, out)

    def _bias(self) -> torch.Tensor | None:
        bias = cast(torch.Tensor | None, self.module.bias)
        wq, iq = self.weight_quant, self.input_quant
        if (
            bias is None
            or self.mode != "static"
            or not isinstance(wq, LSQFakeQuant)
            or not isinstance(iq, LSQFakeQuant)
            or wq.spec.granularity == "per_group"
        ):
            return bias
        # The int32 bias of the kernel (as QuantLayer.effective_bias rounds it, in float64):
        # without it, a 1e-6 bias difference can move an activation across a level boundary.
        bs = (iq.scale.detach().double() * wq.scale.detach().double()).float().double()  # (C,)
        codes = torch.round(bias.detach().double() / bs).clamp(-(2**31), 2**31 - 1)
        return _ste((codes * bs).float(), bias)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, mode={self.mode}, name={self.layer_name}"


def _weight_kind(config: QuantConfig, name: str) -> WeightKind:
    # A per-layer QuantSpec override (e.g. 8-bit first / last layers) is uniform in any scheme.
    overridden = name in config.overrides or any(re.fullmatch(p, name) for p in config.overrides)
    if config.scheme in ("binary", "ternary") and not overridden:
        return cast(WeightKind, config.scheme)
    return "uniform"


@dataclass(frozen=True)
class QATResult:
    """What :func:`qat` returns.

    Attributes:
        model: the converted model (``QuantLinear`` / ``QuantConv2d`` layers), in eval mode.
        prepared: the trained fake-quant model (what the training loop saw).
        train: the training loop's :class:`~torchshrink.train.loop.TrainResult`.
        report: per-layer record of the conversion (also on ``model``, see
            :func:`~torchshrink.quantize.ptq.get_quant_report`).
    """

    model: nn.Module
    prepared: nn.Module
    train: TrainResult
    report: QuantReport


def prepare_qat(
    model: nn.Module,
    config: QuantConfig | None = None,
    *,
    calibration: Any = None,
) -> nn.Module:
    """Return a fake-quant copy of ``model`` ready for training; ``model`` is not changed.

    Args:
        model: a trained float model.
        config: which layers and how (default ``QuantConfig.preset("w8a8")``); schemes
            ``binary`` / ``ternary`` use sign / threshold codes for every layer without a
            ``QuantSpec`` override (overrides, e.g. 8-bit first and last layers, stay uniform).
        calibration: input data for the initial activation ranges (static mode; as for
            :func:`~torchshrink.quantize.ptq.quantize`).

    Returns:
        A copy whose selected layers are :class:`QATLayer`; BatchNorm folded if
        ``config.fold_bn``. Untrained, it computes what PTQ with the same config computes
        (up to the int32 rounding of static biases).

    Raises:
        ConfigError: NaN / Inf in a parameter (named), or a spec that does not fit a layer.
        EmptyDataError: static mode without calibration samples.
        UnsupportedLayerError: a layer with a matrix weight that cannot be quantized.

    Example:
        >>> from torchshrink.core.zoo import create_zoo_model
        >>> m = create_zoo_model("lenet5")
        >>> p = prepare_qat(m, QuantConfig.preset("ternary"))
        >>> p.fc1.kind, sum(1 for _ in p.parameters()) == sum(1 for _ in m.parameters())
        ('ternary', True)
    """
    config = config or QuantConfig()
    # the same folding, layer selection and calibration as ptq.quantize: the same layers
    out, folded, selected, records = prepared_copy(model, config)
    observers = {}
    n_samples = 0
    if config.mode == "static" and selected:
        observers = input_observers(selected, config)
        n_samples = _calibrate(out, observers, calibration, config)
    for name in selected:
        module = out.get_submodule(name)
        if name in observers and observers[name].num_batches == 0:
            records[name] = LayerQuant(
                name, type(module).__name__, "float", reason="not reached by the calibration data"
            )
            continue
        kind = _weight_kind(config, name)
        w = cast(torch.Tensor, module.weight).detach()
        if kind == "uniform":
            spec = config.weight_spec_for(name)
            assert spec is not None  # float overrides were dropped by _select_layers
            # PTQ's weight range, not LSQ's 2 mean|w| / sqrt(Qp): QAT starts from the PTQ model
            obs = make_observer(config.weight_observer, spec, name=f"{name}.weight")
            obs.observe(w)
            weight_quant: nn.Module = _lsq(spec, w, *obs.compute(), f"{name}.weight")
            bits, gran = spec.bits, spec.granularity
        else:
            weight_quant = SignScaleQuant(kind)
            bits, gran = _REPORT_BITS[kind], "per_channel"
        input_quant: nn.Module | None = None
        if config.mode == "static":
            assert config.activation is not None
            scale, zp = observers[name].compute()
            # (one value per tensor: the init tensor only fixes the scale's shape)
            input_quant = _lsq(config.activation, torch.zeros(1), scale, zp, f"{name}.input")
        elif config.mode == "dynamic":
            assert config.activation is not None
            input_quant = DynamicInputQuant(config.activation, name=f"{name}.input")
        qat_layer = QATLayer(
            module, weight_quant, input_quant, kind=kind, mode=config.mode,
            act_spec=config.activation, name=name,
        )  # fmt: skip
        _set_submodule(out, name, qat_layer)
        records[name] = LayerQuant(
            name, type(module).__name__, "quantized", bits, gran, config.mode
        )
    report = QuantReport(config.scheme, config.mode, folded, n_samples, tuple(records.values()))
    object.__setattr__(out, _REPORT_ATTR, report)  # plain metadata, survives deepcopy
    return out


def convert_qat(model: nn.Module) -> nn.Module:
    """Return a copy of a (trained) :func:`prepare_qat` model with quant layers in eval mode.

    Each :class:`QATLayer` becomes the ``QuantLinear`` / ``QuantConv2d`` PTQ would build, holding
    the integer codes of the trained weight at the learned scale (binary / ternary: codes in
    {-1, 0, 1} of a 2-bit per-channel spec) and, for static mode, the learned input scale.

    Raises:
        ConfigError: ``model`` holds no :class:`QATLayer`.

    Example:
        >>> net = prepare_qat(nn.Sequential(nn.Linear(4, 2)), QuantConfig.preset("binary"))
        >>> q = convert_qat(net)[0]
        >>> sorted(set(q.weight_q.flatten().tolist())) in ([-1, 1], [-1], [1])
        True
    """
    out = copy.deepcopy(model).eval()
    layers = [(n, m) for n, m in out.named_modules() if isinstance(m, QATLayer)]
    if not layers:
        raise ConfigError(
            f"convert_qat: {type(model).__name__} has no QATLayer; prepare it with prepare_qat"
        )
    for name, layer in layers:
        _set_submodule(out, name, _convert_layer(layer))
    return out


def qat(
    model: nn.Module,
    data: DataBundle,
    config: QuantConfig | None = None,
    train_config: TrainConfig | None = None,
    *,
    hooks: Sequence[TrainHook] = (),
    device: str | torch.device = "cpu",
) -> QATResult:
    """Prepare, train with :func:`torchshrink.train.train`, and convert, in one call.

    Args:
        model: a trained float model; not changed.
        data: the classification data; its train split calibrates and trains.
        config: the quantization config (default ``w8a8``).
        train_config: a :class:`~torchshrink.train.config.TrainConfig` (default: preset
            ``finetune`` with ``lr=1e-3``, without progress bar). BatchNorm is folded, so the
            net trains without normalisation: at the preset's ``lr=0.01`` a BN-folded
            ResNet-20 on MNIST diverged (90% error), at ``1e-3`` it kept its accuracy.
        hooks: training hooks, passed to the loop.
        device: where to train.

    Returns:
        A :class:`QATResult` with the converted model.

    Example:
        >>> import torchshrink
        >>> from torchshrink.train.config import TrainConfig
        >>> from torchshrink.core.zoo import create_zoo_model
        >>> data = torchshrink.load_data("digits", limit=200)
        >>> net = create_zoo_model("lenet300", input_size=8)
        >>> cfg = TrainConfig(epochs=1, show_progress=False)
        >>> res = qat(net, data, QuantConfig.preset("w4"), cfg)
        >>> type(res.model.fc1).__name__, res.train.epochs_run
        ('QuantLinear', 1)
    """
    from torchshrink.train.config import TrainConfig
    from torchshrink.train.loop import train

    # (imported here: quantize stays importable without the training loop's dependencies)
    train_config = train_config or TrainConfig.preset("finetune", lr=1e-3, show_progress=False)
    prepared = prepare_qat(model, config, calibration=data)
    result = train(prepared, data, train_config, hooks=hooks, device=device)
    converted = convert_qat(prepared)
    report = getattr(prepared, _REPORT_ATTR)
    return QATResult(model=converted, prepared=prepared, train=result, report=report)


def _lsq(
    spec: QuantSpec, init: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor, name: str
) -> ExactLSQFakeQuant:
    """An LSQ fake-quantizer shaped for ``init``, starting at ``scale`` / ``zp``."""
    fq = ExactLSQFakeQuant(spec, init, name=name)
    with torch.no_grad():
        fq.scale.copy_(scale.reshape(fq.scale.shape))
        fq.zero_point.copy_(zp.reshape(fq.zero_point.shape))
    return fq


def _convert_layer(layer: QATLayer) -> QuantLayer:
    module = layer.module
    w = cast(torch.Tensor, module.weight).detach()
    wq = layer.weight_quant
    if isinstance(wq, LSQFakeQuant):
        spec = wq.spec
        scale = wq.scale.detach().clamp(min=EPS).float()
        zp = wq.zero_point.detach().clone()
        # Codes of the fake-quant *output* (exact multiples of the scale), not of w: the largest
        # weight of a min-max range sits on a rounding tie that float noise could break either way.
        fq_w = wq(w).detach()
        codes = quantize_codes(fq_w, scale, zp, spec, name=f"{layer.layer_name}.weight")
    else:
        assert isinstance(wq, SignScaleQuant)
        spec = _CODE_SPEC
        codes, scale = wq.codes_and_scale(w)
        zp = torch.zeros(scale.shape, dtype=torch.int32)
    q = QUANT_LAYERS[type(module)](
        module, spec, layer.act_spec, mode=layer.mode, name=layer.layer_name
    )
    q.weight_q, q.weight_scale, q.weight_zero_point = codes, scale, zp
    with torch.no_grad():
        # the float child holds what the codes stand for, as after loading a model file
        cast(torch.Tensor, module.weight).copy_(q.dequantized_weight())
    if layer.mode == "static":
        iq = cast(LSQFakeQuant, layer.input_quant)
        q.set_input_qparams(iq.scale.detach().clamp(min=EPS), iq.zero_point.detach())
    return q
