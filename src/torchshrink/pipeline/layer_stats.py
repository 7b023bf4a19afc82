"""Per-layer records of a model for the report: size, sparsity, bit-width, rank and a histogram.

One :class:`LayerStats` per weight layer, in model order. What counts as one layer:

* a quantized layer (``QuantLinear`` / ``QuantConv2d``): its bits come from its weight spec and
  its histogram from the weight the integer kernel uses (the codes dequantized);
* a low-rank replacement: the ``nn.Sequential`` of 2-3 Linear / Conv2d layers with no bias
  before the last one and nothing in between, as :mod:`torchshrink.lowrank` builds it. It keeps
  the name of the layer it replaced, and its rank is the narrowest inner width (SVD and
  Tucker-2) or the depth multiplier (depthwise + pointwise);
* any other module owning a parameter of two or more dimensions (Linear, Conv, Embedding, ...).

Weight sharing (:mod:`torchshrink.cluster`) leaves no marker: a float layer whose non-zero
weights take few distinct values (each used 4 times or more on average) is reported with
``ceil(log2(distinct values))`` bits, the index width its codebook needs; otherwise the dtype's
width (32 for float32).

The histogram counts the **non-zero** weights (zeros are ``params - nonzeros`` already, and
their spike would hide the rest) in ``bins`` equal bins over ``hist_range``. Pass the
baseline's ranges (:func:`hist_ranges`) when measuring a later model so that before and after
share their bins; values outside are counted in the end bins.

Example:
    >>> import torch
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> rows = layer_stats(m, bins=8)
    >>> [(r.name, r.type, r.params, r.bits, r.rank) for r in rows]
    [('0', 'Linear', 36, 32, None), ('2', 'Linear', 10, 32, None)]
    >>> sum(rows[0].hist) == rows[0].nonzeros - int((m[0].bias != 0).sum())
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, cast

import torch
from torch import nn

from torchshrink.core.errors import ConfigError

MAX_BINS = 40
MAX_LAYERS = 64
# A float layer counts as weight-shared when its non-zeros reuse each value this often on average.
_SHARED_REUSE = 4


@dataclass(frozen=True)
class LayerStats:
    """One layer of a model (see the module docstring).

    Attributes:
        name: module name (the replaced layer's name for a low-rank replacement).
        type: class name (``"Linear"``, ``"QuantConv2d"``, ``"Factorized(Linear)"``, ...).
        params: parameter elements of the layer (weights and biases).
        nonzeros: those that are not exactly zero (quantized: of the dequantized weight).
        sparsity: ``1 - nonzeros / params`` (0.0 for a layer without parameters).
        bits: bits per weight: quantized spec bits, codebook index bits or the dtype's width.
        rank: inner width of a low-rank replacement, else ``None``.
        hist: counts of the non-zero weights in ``len(hist)`` equal bins over ``hist_range``.
        hist_range: ``[lo, hi]`` of the histogram.
    """

    name: str
    type: str
    params: int
    nonzeros: int
    sparsity: float
    bits: int
    rank: int | None
    hist: list[int]
    hist_range: list[float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists, ints, floats and strings only)."""
        return asdict(self)


def layer_stats(
    model: nn.Module,
    *,
    ranges: Mapping[str, list[float] | tuple[float, float]] | None = None,
    bins: int = 32,
    max_layers: int = MAX_LAYERS,
) -> list[LayerStats]:
    """Describe every weight layer of ``model`` (the model is not changed).

    Args:
        model: any ``nn.Module``.
        ranges: ``{layer name: [lo, hi]}`` histogram ranges to reuse (from
            :func:`hist_ranges` of the baseline); other layers use their own ``[-a, a]``,
            ``a`` the largest absolute weight.
        bins: histogram bins, 2..40.
        max_layers: at most this many layers are listed: the largest by parameters, kept in
            model order.

    Raises:
        ConfigError: ``bins`` or ``max_layers`` out of range.

    Example:
        >>> from torch import nn
        >>> [r.rank for r in layer_stats(nn.Sequential(nn.Linear(6, 2, bias=False),
        ...                                             nn.Linear(2, 6)))]
        [2]
    """
    if not 2 <= bins <= MAX_BINS:
        raise ConfigError(f"bins: must be in 2..{MAX_BINS}, got {bins}")
    if max_layers < 1:
        raise ConfigError(f"max_layers: must be at least 1, got {max_layers}")
    ranges = ranges or {}
    rows = [
        _describe(name, module, kind, bins, ranges.get(name))
        for name, module, kind in _layers(model)
    ]
    if len(rows) > max_layers:
        keep = sorted(range(len(rows)), key=lambda i: -rows[i].params)[:max_layers]
        rows = [rows[i] for i in sorted(keep)]
    return rows


def hist_ranges(rows: list[LayerStats] | list[dict[str, Any]]) -> dict[str, list[float]]:
    """``{name: hist_range}`` of records (or their dicts), to share bins with a later model.

    Example:
        >>> hist_ranges([{"name": "fc", "hist_range": [-1.0, 1.0]}])
        {'fc': [-1.0, 1.0]}
    """
    out = {}
    for r in rows:
        d = r if isinstance(r, dict) else r.to_dict()
        out[str(d["name"])] = [float(v) for v in d["hist_range"]]
    return out


def _layers(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """``(name, module, kind)`` with kind ``quant`` / ``lowrank`` / ``plain``, in model order."""
    from torchshrink.quantize.qmodules import QuantLayer

    out: list[tuple[str, nn.Module, str]] = []
    skip: list[str] = []  # prefixes of modules already described as one layer
    for name, module in model.named_modules():
        if any(s == "" or name == s or name.startswith(s + ".") for s in skip):
            continue
        if isinstance(module, QuantLayer):
            out.append((name, module, "quant"))
            skip.append(name)
        elif _low_rank_rank(module) is not None:
            out.append((name, module, "lowrank"))
            skip.append(name)
        elif any(p.dim() >= 2 for p in module.parameters(recurse=False)):
            out.append((name, module, "plain"))
    return out


def _low_rank_rank(module: nn.Module) -> int | None:
    """The inner width when ``module`` is a low-rank replacement, else ``None``."""
    if not isinstance(module, nn.Sequential) or not 2 <= len(module) <= 3:
        return None
    parts = cast(list[Any], list(module))  # Linear or Conv2d, checked next
    if not (all(type(p) is nn.Linear for p in parts) or all(type(p) is nn.Conv2d for p in parts)):
        return None
    if any(p.bias is not None for p in parts[:-1]):
        return None
    widths = [int(p.weight.shape[0]) for p in parts]  # output width of each part
    ins = [p.in_features if isinstance(p, nn.Linear) else p.in_channels for p in parts]
    if any(w != i for w, i in zip(widths[:-1], ins[1:], strict=True)):
        return None
    first = parts[0]
    if isinstance(first, nn.Conv2d) and first.groups > 1 and first.groups == first.in_channels:
        return int(first.out_channels // first.in_channels)  # depthwise + pointwise: multiplier
    return min(widths[:-1])


def _describe(
    name: str,
    module: nn.Module,
    kind: str,
    bins: int,
    hist_range: list[float] | tuple[float, float] | None,
) -> LayerStats:
    n_params = sum(p.numel() for p in module.parameters())
    with torch.no_grad():
        if kind == "quant":
            q = cast(Any, module)  # a QuantLayer (checked by _layers)
            weights = [q.dequantized_weight()]
            bias = getattr(q.module, "bias", None)
            others = [] if bias is None else [bias]
            bits = int(q.weight_spec.bits)
            type_name = type(module).__name__
        else:
            own = list(module.parameters())
            weights = [p for p in own if p.dim() >= 2]
            others = [p for p in own if p.dim() < 2]
            bits = 0
            type_name = type(module).__name__
            if kind == "lowrank":
                type_name = f"Factorized({type(next(iter(module.children()))).__name__})"
        flat = torch.cat([w.detach().reshape(-1).float() for w in weights])  # (n_weights,)
        nz = flat[flat != 0]  # (nnz,)
        nonzeros = int(nz.numel()) + sum(int(torch.count_nonzero(o)) for o in others)
        if kind != "quant":
            bits = _float_bits(nz, weights[0].dtype)
        lo, hi = _range(nz, hist_range)
        finite = nz[torch.isfinite(nz)]  # (n_finite,)
        hist = torch.histc(finite.clamp(lo, hi), bins=bins, min=lo, max=hi)  # (bins,)
    return LayerStats(
        name=name,
        type=type_name,
        params=n_params,
        nonzeros=nonzeros,
        sparsity=1.0 - nonzeros / n_params if n_params else 0.0,
        bits=bits,
        rank=_low_rank_rank(module) if kind == "lowrank" else None,
        hist=[int(c) for c in hist.tolist()],
        hist_range=[lo, hi],
    )


def _float_bits(nz: torch.Tensor, dtype: torch.dtype) -> int:
    width = torch.finfo(dtype).bits if dtype.is_floating_point else torch.iinfo(dtype).bits
    if nz.numel() == 0:
        return width
    distinct = int(torch.unique(nz).numel())
    if distinct * _SHARED_REUSE <= nz.numel():
        return min(width, max(1, math.ceil(math.log2(distinct))))
    return width


def _range(nz: torch.Tensor, given: list[float] | tuple[float, float] | None) -> list[float]:
    if given is not None:
        lo, hi = float(given[0]), float(given[1])
        if math.isfinite(lo) and math.isfinite(hi) and lo < hi:
            return [lo, hi]
    finite = nz[torch.isfinite(nz)]  # (n_finite,)
    a = float(finite.abs().max()) if finite.numel() else 0.0
    a = a if a > 0 else 1.0  # an all-zero layer still gets a usable range
    return [-a, a]
