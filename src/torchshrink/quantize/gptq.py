"""GPTQ: weight-only low-bit Linear quantization with error-compensating rounding.

Round-to-nearest (RTN) rounds every weight on its own. GPTQ (Frantar et al. 2022, "GPTQ:
Accurate Post-Training Quantization for Generative Pre-trained Transformers") rounds the input
columns of a Linear weight one at a time and pushes each column's rounding error onto the
columns not yet rounded, weighted by the inverse of ``H = 2 X X^T`` (the layer inputs ``X`` from
calibration data), so that the layer *output* ``W X`` moves as little as possible. It needs no
gradients and runs in seconds per layer.

The result is ordinary :class:`~torchshrink.quantize.qmodules.QuantLinear` state (integer codes,
scale, zero point, weight-only mode): it saves, loads, packs and exports like any RTN layer.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    >>> q = gptq_quantize(net, QuantSpec.preset("int4"), [torch.randn(64, 16)])
    >>> type(q[0]).__name__, q[0].weight_q.dtype
    ('QuantLinear', torch.int8)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from torchshrink.core.errors import ConfigError, EmptyDataError
from torchshrink.quantize.config import QuantConfig
from torchshrink.quantize.primitives import qparams_from_tensor
from torchshrink.quantize.ptq import _batches, fit_group_size
from torchshrink.quantize.qmodules import QuantLinear
from torchshrink.quantize.spec import QuantSpec

_REPORT_ATTR = "_torchshrink_gptq_report"
# Parents that read a child Linear's ``.weight`` directly instead of calling it (MHA's out_proj;
# the encoder / decoder layers' fused inference fast path): a QuantLinear there would not run.
_DIRECT_READERS = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)


@dataclass(frozen=True)
class GPTQLayer:
    """One quantized layer: relative output error ``||(W - Q) X|| / ||W X||`` on the
    calibration inputs, with GPTQ's codes and with round-to-nearest on the same spec."""

    name: str
    bits: int
    granularity: str
    error_gptq: float
    error_rtn: float


@dataclass(frozen=True)
class GPTQReport:
    """What :func:`gptq_quantize` did: quantized layers and ``(name, reason)`` of skipped ones."""

    layers: tuple[GPTQLayer, ...]
    skipped: tuple[tuple[str, str], ...]
    calibration_samples: int


def gptq_quantize(
    model: nn.Module,
    spec: QuantSpec,
    calibration: Any,
    *,
    layers: list[str] | None = None,
    block_size: int = 128,
    damp: float = 0.01,
    act_order: bool = False,
    max_samples: int = 512,
) -> nn.Module:
    """Return a copy of ``model`` whose Linear weights are quantized by GPTQ; ``model`` is kept.

    Args:
        model: a float model.
        spec: the weight spec (e.g. ``QuantSpec.preset("int4")`` per channel or ``"int4g128"``);
            a group size that does not divide a layer's input dim is fitted as in
            :func:`~torchshrink.quantize.ptq.quantize`.
        calibration: input batches (tensor, list of tensors / ``(x, y)`` / keyword dicts,
            dataset, DataLoader or :class:`DataBundle`); at most ``max_samples`` samples.
        layers: names of the Linear layers to quantize (default: every ``nn.Linear`` that is
            called as a module; Linears whose parent reads their weight directly stay float).
        block_size: columns rounded per block before the lazy update of the rest (speed only).
        damp: fraction of the mean diagonal of ``H`` added to it (numerical stability).
        act_order: round the columns with the largest ``H`` diagonal first.
        max_samples: calibration samples to use.

    Returns:
        The quantized copy (eval mode); :func:`get_gptq_report` gives its :class:`GPTQReport`.

    Raises:
        ConfigError: a named layer is missing or not an ``nn.Linear``, or bad ``damp`` /
            ``block_size``.
        EmptyDataError: the calibration data holds no batch.

    Example:
        >>> net = nn.Sequential(nn.Linear(8, 8))
        >>> q = gptq_quantize(net, QuantSpec.preset("int4"), torch.randn(32, 8))
        >>> get_gptq_report(q).layers[0].error_gptq <= get_gptq_report(q).layers[0].error_rtn
        True
    """
    if not 0 <= damp < 1 or block_size < 1:
        raise ConfigError(f"gptq: need 0 <= damp < 1 and block_size >= 1, got {damp}, {block_size}")
    out = copy.deepcopy(model).eval()
    chosen, skipped = _select(out, layers)
    hessians, n_samples = collect_hessians(out, chosen, calibration, max_samples=max_samples)
    done: list[GPTQLayer] = []
    for name in chosen:
        lin = cast(nn.Linear, out.get_submodule(name))
        if name not in hessians:
            skipped.append((name, "not reached by the calibration data"))
            continue
        layer_spec, _ = fit_group_size(spec, tuple(lin.weight.shape), name=name)
        h = hessians[name]  # (in, in)
        w = lin.weight.detach().float()  # (out, in)
        codes, scale, zp = gptq_weight(
            w, h, layer_spec, block_size=block_size, damp=damp, act_order=act_order
        )
        qlayer = QuantLinear(lin, layer_spec, None, mode="weight_only", name=name)
        rtn = qlayer.dequantized_weight()
        qlayer.weight_q, qlayer.weight_scale, qlayer.weight_zero_point = codes, scale, zp
        gq = qlayer.dequantized_weight()
        done.append(
            GPTQLayer(
                name,
                layer_spec.bits,
                layer_spec.granularity,
                _proxy_error(w, gq, h),
                _proxy_error(w, rtn, h),
            )
        )
        _set_submodule(out, name, qlayer)
    report = GPTQReport(tuple(done), tuple(skipped), n_samples)
    object.__setattr__(out, _REPORT_ATTR, report)  # plain metadata, survives deepcopy
    return out


def get_gptq_report(model: nn.Module) -> GPTQReport | None:
    """The :class:`GPTQReport` recorded by :func:`gptq_quantize`, or ``None``."""
    return getattr(model, _REPORT_ATTR, None)


@torch.no_grad()
def collect_hessians(
    model: nn.Module, names: list[str], calibration: Any, *, max_samples: int = 512
) -> tuple[dict[str, torch.Tensor], int]:
    """``H = 2 X X^T / n`` of each named layer's input over the calibration data.

    Every row of a layer input ``(*, in)`` (each token, each sample) is one column of ``X``.
    Returns ``{name: H (in, in)}`` for the layers that ran, and the number of samples used.

    Raises:
        EmptyDataError: the calibration data holds no batch.
    """
    sums: dict[str, torch.Tensor] = {}
    rows: dict[str, int] = {}

    def hook(name: str) -> Any:
        def fn(_m: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()  # (N, in)
            sums[name] = sums.get(name, 0) + x.T @ x  # (in, in)
            rows[name] = rows.get(name, 0) + x.shape[0]

        return fn

    handles = [model.get_submodule(n).register_forward_pre_hook(hook(n)) for n in names]
    cfg = QuantConfig(scheme="w8", calibration_size=max_samples)
    seen = 0
    try:
        for batch in _batches(calibration, cfg):
            if isinstance(batch, dict):
                model(**batch)
                seen += len(next(iter(batch.values())))
            else:
                model(batch)
                seen += len(batch)
            if seen >= max_samples:
                break
    finally:
        for h in handles:
            h.remove()
    if seen == 0:
        raise EmptyDataError("gptq: the calibration data holds no batch")
    return {n: (2.0 * s / rows[n]).float() for n, s in sums.items()}, seen


@torch.no_grad()
def gptq_weight(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    spec: QuantSpec,
    *,
    block_size: int = 128,
    damp: float = 0.01,
    act_order: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GPTQ codes, scale and zero point of a ``(out, in)`` weight given ``H (in, in)``.

    Per-tensor and per-channel scales come from the whole weight (min-max, as RTN); per-group
    scales from each group's columns *after* the error updates of the columns before it (with
    ``act_order`` the groups are fixed from the original weight, since columns then arrive out
    of group order).

    Example:
        >>> w, x = torch.randn(4, 8), torch.randn(8, 64)
        >>> codes, s, z = gptq_weight(w, 2 * x @ x.T / 64, QuantSpec.preset("int4"))
        >>> codes.shape, s.shape
        (torch.Size([4, 8]), torch.Size([4]))
    """
    w = weight.detach().double().clone()  # (R, C)
    h = hessian.detach().double().clone()  # (C, C)
    n_rows, n_cols = w.shape
    dead = torch.diag(h) == 0  # inputs that are always 0: their weights do not matter
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    group = spec.group_size if spec.granularity == "per_group" else None
    row_spec = spec.model_copy(update={"granularity": "per_channel", "group_size": None})
    scale, zp = qparams_from_tensor(w.float(), spec)  # compact shape: (), (R,) or (R, G)
    perm = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(n_cols)
    w, h = w[:, perm], h[perm][:, perm]
    h += damp * torch.diag(h).mean() * torch.eye(n_cols, dtype=h.dtype)
    # Upper Cholesky factor of H^-1: row i holds the update coefficients for column i.
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    codes = torch.zeros(n_rows, n_cols, dtype=torch.float64)
    scale, zp = scale.double().clone(), zp.double().clone()
    for i1 in range(0, n_cols, block_size):
        i2 = min(i1 + block_size, n_cols)
        w1 = w[:, i1:i2].clone()  # (R, b)
        err1 = torch.zeros_like(w1)  # (R, b)
        h1 = hinv[i1:i2, i1:i2]  # (b, b)
        for i in range(i2 - i1):
            col = int(perm[i1 + i])  # the column's index in the original order
            if group is not None and not act_order and col % group == 0:
                # this group's scale from its columns as the updates left them
                part = torch.cat([w1[:, i:], w[:, i2:]], dim=1)[:, :group]  # (R, group)
                s, z = qparams_from_tensor(part.float(), row_spec)  # (R,), (R,)
                scale[:, col // group], zp[:, col // group] = s.double(), z.double()
            s_col, z_col = _column_qparams(scale, zp, col, group, n_rows)  # (R,), (R,)
            q = torch.clamp(torch.round(w1[:, i] / s_col) + z_col, spec.qmin, spec.qmax)  # (R,)
            codes[:, i1 + i] = q
            e = (w1[:, i] - (q - z_col) * s_col) / h1[i, i]  # (R,)
            w1[:, i:] -= e[:, None] * h1[i, i:][None, :]
            err1[:, i] = e
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]  # the block's error onto the later columns
    codes = codes[:, torch.argsort(perm)]  # back to the original column order
    return codes.to(spec.storage_dtype), scale.float(), zp.to(torch.int32)


def _column_qparams(
    scale: torch.Tensor, zp: torch.Tensor, col: int, group: int | None, n_rows: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if scale.dim() == 0:
        return scale.expand(n_rows), zp.expand(n_rows)
    if group is None:
        return scale, zp  # (R,)
    return scale[:, col // group], zp[:, col // group]


def _proxy_error(w: torch.Tensor, wq: torch.Tensor, h: torch.Tensor) -> float:
    # ||(W - Q) X|| / ||W X|| with ||A X||^2 = tr(A H A^T) / 2 * n: from H alone.
    d = (w - wq).double()
    num = float(((d @ h.double()) * d).sum())
    den = float(((w.double() @ h.double()) * w.double()).sum())
    return (num / max(den, 1e-30)) ** 0.5


def _select(model: nn.Module, layers: list[str] | None) -> tuple[list[str], list[tuple[str, str]]]:
    modules = dict(model.named_modules())
    parents = {f"{p}.{c}" if p else c: m for p, m in modules.items() for c, _ in m.named_children()}
    if layers is not None:
        for n in layers:
            if not isinstance(modules.get(n), nn.Linear):
                got = type(modules[n]).__name__ if n in modules else "no such module"
                raise ConfigError(f"gptq: layers entry '{n}' is not an nn.Linear ({got})")
    every = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
    names = every if layers is None else layers
    chosen, skipped = [], []
    for n in names:
        parent = parents.get(n)
        if isinstance(parent, _DIRECT_READERS):
            skipped.append((n, f"its parent {type(parent).__name__} reads the weight directly"))
        else:
            chosen.append(n)
    return chosen, skipped


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
