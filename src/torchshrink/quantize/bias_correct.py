"""Empirical bias correction (Nagel et al. 2019, section 4.2; Banner et al. 2019).

Rounding a weight changes its layer's output by ``(W - Q(W)) x``. The mean of that error over
the data is rarely zero at low bit widths (a channel's weights round up more often than down),
and a shifted mean passes on through every later layer. The shift is known once the expected
input ``E[x]`` is: add ``E[W x] - E[Q(W) x]`` per output channel to the layer's bias, and the
mean output is right again.

Here the expectation is measured on calibration data, layer by layer, on the inputs each layer
sees in the *float* model. For a conv, the mean is over batch and spatial positions of the
conv itself (padding makes it differ from the conv of the mean input). The shift goes into the
float bias that the quant layer keeps (``layer.module.bias``, created if the layer had none),
*before* the layer rounds it to int32 in static mode, so the exported int32 bias carries it too.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from torchshrink.quantize.config import QuantConfig
    >>> from torchshrink.quantize.ptq import quantize
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    >>> q = quantize(net, QuantConfig.preset("w4"))
    >>> fixed = correct_bias(net, q, [torch.randn(32, 8)])
    >>> fixed[0].module.bias.shape
    torch.Size([16])
"""

from __future__ import annotations

import copy
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from torchshrink.core.errors import ConfigError, EmptyDataError
from torchshrink.quantize.config import QuantConfig
from torchshrink.quantize.ptq import _batches
from torchshrink.quantize.qmodules import QuantConv2d, QuantLayer, QuantLinear


def correct_bias(
    float_model: nn.Module,
    quant_model: nn.Module,
    calibration: Any,
    *,
    max_batches: int = 8,
    batch_size: int = 64,
) -> nn.Module:
    """Return a copy of ``quant_model`` whose quant layers' biases absorb their mean error.

    Args:
        float_model: the float model ``quant_model`` was made from (same layer names); it
            supplies each layer's float input. Not changed.
        quant_model: a model from :func:`~torchshrink.quantize.ptq.quantize` (its
            :class:`QuantLinear` / :class:`QuantConv2d` layers still hold the float weight as
            ``layer.module.weight``; a model loaded from a file holds only the codes, and then
            there is nothing to correct against). Not changed.
        calibration: input batches (tensor, list of tensors / ``(x, y)`` / keyword dicts,
            dataset, DataLoader or DataBundle).
        max_batches: at most this many batches are run.
        batch_size: batch size when ``calibration`` is a dataset.

    Returns:
        The corrected copy, in eval mode.

    Raises:
        ConfigError: ``quant_model`` has no quant layer, or ``max_batches`` is below 1.
        EmptyDataError: the calibration data holds no batch.

    Example:
        >>> from torchshrink.quantize.ptq import quantize
        >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
        >>> q = quantize(net, QuantConfig.preset("w4"))
        >>> type(correct_bias(net, q, torch.randn(64, 8))[2]).__name__
        'QuantLinear'
    """
    if max_batches < 1:
        raise ConfigError(f"correct_bias: max_batches must be >= 1, got {max_batches}")
    out = copy.deepcopy(quant_model).eval()
    qlayers = {n: m for n, m in out.named_modules() if isinstance(m, (QuantLinear, QuantConv2d))}
    if not qlayers:
        raise ConfigError("correct_bias: the quantized model has no QuantLinear / QuantConv2d")
    floats = dict(float_model.named_modules())
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name: str, layer: QuantLayer) -> Any:
        def fn(_m: nn.Module, args: tuple[Any, ...]) -> None:
            total, count = error_sum(layer, args[0].detach().float())
            sums[name] = sums.get(name, 0) + total  # (C_out,)
            counts[name] = counts.get(name, 0) + count

        return fn

    handles = [
        floats[n].register_forward_pre_hook(hook(n, q)) for n, q in qlayers.items() if n in floats
    ]
    cfg = QuantConfig(scheme="w8", batch_size=batch_size)
    seen = 0
    was_training = float_model.training
    float_model.eval()
    try:
        with torch.no_grad():
            for batch in _batches(calibration, cfg):
                _ = float_model(**batch) if isinstance(batch, dict) else float_model(batch)
                seen += 1
                if seen >= max_batches:
                    break
    finally:
        for h in handles:
            h.remove()
        float_model.train(was_training)
    if seen == 0:
        raise EmptyDataError("correct_bias: the calibration data holds no batch")
    for name, total in sums.items():
        _shift_bias(qlayers[name], total / counts[name])
    return out


@torch.no_grad()
def error_sum(layer: QuantLayer, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``(W - Q(W)) x`` of one input batch summed per output channel, and how many outputs
    per channel that sum holds (batch x positions or tokens).

    Example:
        >>> from torchshrink.quantize.spec import QuantSpec
        >>> q = QuantLinear(nn.Linear(4, 3), QuantSpec.preset("int4"))
        >>> total, count = error_sum(q, torch.ones(2, 5, 4))
        >>> total.shape, count
        (torch.Size([3]), 10)
    """
    delta = cast(torch.Tensor, layer.module.weight).detach() - layer.dequantized_weight()
    if isinstance(layer, QuantConv2d):
        conv = cast(nn.Conv2d, layer.module)
        y = conv._conv_forward(x, delta, None).movedim(1, -1)  # (B, H', W', C_out)
    else:
        y = F.linear(x, delta)  # (*, C_out)
    flat = y.reshape(-1, y.shape[-1])  # (N, C_out)
    return flat.sum(dim=0), flat.shape[0]


def _shift_bias(layer: QuantLayer, shift: torch.Tensor) -> None:
    module = layer.module
    with torch.no_grad():
        if module.bias is None:
            module.bias = nn.Parameter(torch.zeros_like(shift))
        cast(torch.Tensor, module.bias).add_(shift.to(cast(torch.Tensor, module.bias).dtype))
