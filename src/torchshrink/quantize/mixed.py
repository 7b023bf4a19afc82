"""Mixed precision: per-layer weight bits chosen under an average-bits budget from sensitivity.

Sensitivity of layer ``l`` at ``b`` bits is the mean KL divergence between the float model's
output distribution and the output when only ``l``'s weight is quantized (per channel,
symmetric) to ``b`` bits, on a few calibration inputs. The allocation starts every layer at the
widest candidate and then, greedily, lowers the layer whose next narrower width costs the least
extra sensitivity per saved weight bit, until the weight bits of the quantized layers average
at most the budget; bits left over then go to the raises that remove the most KL per bit. Layers kept in float do not count towards the average. Scales and zero
points (one float per output channel) are not counted either.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    >>> plan = mixed_precision(net, [torch.randn(64, 16)], avg_bits=6)
    >>> plan.avg_bits <= 6, sorted(plan.bits.values())
    (True, [4, 8])
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from torchshrink.core.errors import ConfigError, EmptyDataError
from torchshrink.quantize.config import QuantConfig
from torchshrink.quantize.fold import fold_bn
from torchshrink.quantize.primitives import check_finite, fake_quantize, qparams_from_tensor
from torchshrink.quantize.ptq import _batches, _select_layers
from torchshrink.quantize.spec import QuantSpec

CANDIDATES = (2, 3, 4, 8)


@dataclass(frozen=True)
class LayerBits:
    """One row of the allocation: ``bits`` is ``None`` for a layer kept in float.

    Attributes:
        name: the layer's name.
        bits: chosen weight bits, or ``None`` (float).
        params: weights of the layer (its ``weight.numel()``).
        sensitivity: output KL at the chosen bits (0 for float).
        by_bits: output KL at every candidate width.
    """

    name: str
    bits: int | None
    params: int
    sensitivity: float
    by_bits: dict[int, float] = field(default_factory=dict)


@dataclass(frozen=True)
class MixedPrecisionPlan:
    """What :func:`mixed_precision` chose: a :class:`QuantConfig` plus the table behind it.

    Attributes:
        config: weight-only config with one override per layer (a spec, or ``"float"``).
        layers: one :class:`LayerBits` per Linear / Conv2d layer.
        budget_bits: the requested average weight bits.
        avg_bits: the achieved average over the quantized layers (weighted by params).
    """

    config: QuantConfig
    layers: tuple[LayerBits, ...]
    budget_bits: float
    avg_bits: float

    @property
    def bits(self) -> dict[str, int | None]:
        """``{layer: bits}`` (``None`` = float)."""
        return {row.name: row.bits for row in self.layers}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the plan."""
        return {
            "budget_bits": self.budget_bits,
            "avg_bits": self.avg_bits,
            "layers": [
                {
                    "name": r.name,
                    "bits": r.bits,
                    "params": r.params,
                    "sensitivity": r.sensitivity,
                    "by_bits": {str(b): v for b, v in r.by_bits.items()},
                }
                for r in self.layers
            ],
        }


def layer_spec(bits: int) -> QuantSpec:
    """The weight spec used for ``bits``: symmetric, per output channel.

    Example:
        >>> layer_spec(4).qmax
        7
    """
    return QuantSpec(bits=bits, granularity="per_channel")


@torch.no_grad()
def layer_sensitivity(
    model: nn.Module,
    calibration: Any,
    *,
    candidates: Sequence[int] = CANDIDATES,
    layers: Sequence[str] | None = None,
    samples: int = 256,
) -> dict[str, dict[int, float]]:
    """Output KL (float vs one layer quantized) for every layer and candidate width.

    Args:
        model: the float model (not changed: a copy is measured).
        calibration: inputs, as for :func:`~torchshrink.quantize.ptq.quantize`.
        candidates: weight widths to try (2..8).
        layers: layer names (default: every Linear / Conv2d).
        samples: at most this many calibration inputs.

    Raises:
        EmptyDataError: no calibration inputs.
    """
    work = copy.deepcopy(model).eval()
    names = list(layers) if layers is not None else _quantizable(work, QuantConfig(scheme="w8"))
    inputs = _inputs(calibration, samples)
    ref = [F.log_softmax(_logits(work(x)), dim=-1) for x in inputs]  # each (B, classes)
    out: dict[str, dict[int, float]] = {}
    for name in names:
        weight = cast(torch.Tensor, work.get_submodule(name).weight)
        original = weight.detach().clone()
        out[name] = {}
        for bits in candidates:
            spec = layer_spec(bits)
            scale, zp = qparams_from_tensor(original, spec, name=f"{name}.weight")
            weight.data.copy_(fake_quantize(original, scale, zp, spec))
            kl = sum(
                float(F.kl_div(F.log_softmax(_logits(work(x)), -1), r, log_target=True,
                               reduction="sum"))
                for x, r in zip(inputs, ref, strict=True)
            )  # fmt: skip
            out[name][bits] = kl / sum(int(x.shape[0]) for x in inputs)
        weight.data.copy_(original)
    return out


def mixed_precision(
    model: nn.Module,
    calibration: Any,
    *,
    avg_bits: float,
    candidates: Sequence[int] = CANDIDATES,
    keep_float: Sequence[str] = (),
    ignore: Sequence[str] = (),
    samples: int = 256,
    fold: bool = True,
) -> MixedPrecisionPlan:
    """Choose per-layer weight bits with an average of at most ``avg_bits``.

    Args:
        model: the trained float model (not changed).
        calibration: inputs for the sensitivity measurement (a DataBundle, dataset, loader or
            list of batches).
        avg_bits: budget: average weight bits over the quantized layers, weighted by params.
        candidates: allowed widths, each 2..8.
        keep_float: names or regexes of layers kept in float (outside the budget).
        ignore: modules left alone entirely (also unsupported types), as in ``QuantConfig``.
        samples: calibration inputs used for the sensitivity.
        fold: fold BatchNorm first (as ``quantize`` will).

    Returns:
        The plan; ``quantize(model, plan.config)`` applies it.

    Raises:
        ConfigError: a candidate outside 2..8, or ``avg_bits`` outside
            ``[min(candidates), max(candidates)]``.
        EmptyDataError: no calibration inputs.

    Example:
        >>> from torchshrink.core.zoo import create_zoo_model
        >>> net = create_zoo_model("lenet300")
        >>> plan = mixed_precision(net, [torch.randn(32, 1, 28, 28)], avg_bits=4,
        ...                        keep_float=["fc3"])
        >>> plan.bits["fc3"], plan.avg_bits <= 4
        (None, True)
    """
    cands = sorted(set(candidates))
    bad = [b for b in cands if not 2 <= b <= 8]
    if not cands or bad:
        raise ConfigError(f"mixed precision: candidate bits must be 2..8, got {list(candidates)}")
    if not cands[0] <= avg_bits <= cands[-1]:
        raise ConfigError(
            f"mixed precision: average bits {avg_bits:g} is out of range; it must lie in "
            f"[{cands[0]}, {cands[-1]}] (the narrowest and widest candidate widths)"
        )
    for pname, param in model.named_parameters():
        check_finite(param.detach(), pname)
    work = copy.deepcopy(model).eval()
    if fold:
        fold_bn(work, inplace=True)
    floats: dict[str, Any] = dict.fromkeys(keep_float, "float")
    names = _quantizable(work, QuantConfig(scheme="w8", ignore=tuple(ignore), overrides=floats))
    kept = [n for n in _quantizable(work, QuantConfig(scheme="w8", ignore=tuple(ignore)))
            if n not in names]  # fmt: skip
    sens = layer_sensitivity(work, calibration, candidates=cands, layers=names, samples=samples)
    params = {n: cast(torch.Tensor, work.get_submodule(n).weight).numel() for n in [*names, *kept]}
    chosen = _allocate(sens, {n: params[n] for n in names}, cands, avg_bits)
    total = sum(params[n] for n in names)
    achieved = sum(chosen[n] * params[n] for n in names) / total if total else 0.0
    overrides: dict[str, Any] = {n: layer_spec(b) for n, b in chosen.items()}
    overrides.update(dict.fromkeys(kept, "float"))
    config = QuantConfig(scheme="w8", overrides=overrides, ignore=tuple(ignore), fold_bn=fold)
    rows = [LayerBits(n, chosen[n], params[n], sens[n][chosen[n]], sens[n]) for n in names]
    rows += [LayerBits(n, None, params[n], 0.0) for n in kept]
    order = {n: i for i, n in enumerate(_quantizable(work, QuantConfig(scheme="w8")))}
    rows.sort(key=lambda r: order.get(r.name, len(order)))
    return MixedPrecisionPlan(config, tuple(rows), float(avg_bits), achieved)


def _allocate(
    sens: dict[str, dict[int, float]], params: dict[str, int], cands: list[int], budget: float
) -> dict[str, int]:
    """Greedy: lower the layer with the least extra KL per saved bit until within budget."""
    bits = dict.fromkeys(params, cands[-1])
    limit = budget * sum(params.values()) + 1e-9
    while sum(bits[n] * params[n] for n in params) > limit:
        best: tuple[float, str, int] | None = None
        for n, b in bits.items():
            i = cands.index(b)
            if i == 0:
                continue
            lower = cands[i - 1]
            cost = max(0.0, sens[n][lower] - sens[n][b]) / ((b - lower) * params[n])
            if best is None or cost < best[0]:
                best = (cost, n, lower)
        assert best is not None  # the budget is at least the narrowest width (checked)
        bits[best[1]] = best[2]
    # Lowering overshoots; spend what is left on the raises that buy the most KL per bit.
    while True:
        spare = limit - sum(bits[n] * params[n] for n in params)
        ups = [
            ((sens[n][b] - sens[n][up]) / ((up - b) * params[n]), n, up)
            for n, b in bits.items()
            if b != cands[-1]
            for up in [cands[cands.index(b) + 1]]
            if (up - b) * params[n] <= spare
        ]
        if not ups:
            return bits
        _, name, up = max(ups)
        bits[name] = up


def _quantizable(model: nn.Module, config: QuantConfig) -> list[str]:
    return _select_layers(model, config)[0]


def _inputs(calibration: Any, samples: int) -> list[torch.Tensor]:
    """Up to ``samples`` calibration inputs as a list of batches."""
    config = QuantConfig(scheme="w8", calibration_size=max(samples, 1))
    out: list[torch.Tensor] = []
    seen = 0
    for batch in _batches(calibration, config):
        if not isinstance(batch, torch.Tensor) or batch.numel() == 0:
            continue
        out.append(batch[: samples - seen])
        seen += int(out[-1].shape[0])
        if seen >= samples:
            break
    if not out:
        raise EmptyDataError("mixed precision: the calibration data has no samples")
    return out


def _logits(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out.float()
    logits = getattr(out, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits.float()
    return cast(torch.Tensor, out[0]).float()
