"""Codebook weights: binary, ternary, power-of-two and k-means layers, and the driver for them.

Non-uniform levels are not ``(q - z) * s``, so these layers store, per weight, a small index
into a codebook of float levels: per output channel for ``binary`` (``{-a, a}``), ``ternary``
(``{-a, 0, a}``) and ``pot<b>`` (``{0, +-2^e}``, ``2^b - 1`` levels), one per tensor for
``kmeans:<k>``. They are :class:`QuantLayer` subclasses (weight-only), so reports, model files
(indices bit-packed: binary takes 1 bit per weight) and ONNX export (dequantized float weights,
as for any weight that is not int8) work as for the uniform layers.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
    >>> q = quantize_codebook(net, "ternary")
    >>> type(q[0]).__name__, q[0].storage_bits, q[0].weight_codebook.shape
    ('CodebookLinear', 2, torch.Size([8, 3]))
"""

from __future__ import annotations

import copy
import math
import re
from typing import Any, cast

import torch
from torch import nn

from torchshrink.core.errors import ConfigError
from torchshrink.core.modulestate import register_module_state
from torchshrink.quantize.config import QuantConfig
from torchshrink.quantize.fold import fold_bn
from torchshrink.quantize.nonuniform import binarize, kmeans_quantize, pot_quantize, ternarize
from torchshrink.quantize.primitives import check_finite
from torchshrink.quantize.ptq import _REPORT_ATTR, LayerQuant, QuantReport, _select_layers
from torchshrink.quantize.qmodules import QuantConv2d, QuantLayer, QuantLinear
from torchshrink.quantize.spec import QuantSpec

_SCHEME = re.compile(r"^(binary|ternary|pot(\d+)|kmeans:(\d+))$")


def parse_codebook_scheme(scheme: str) -> tuple[str, int]:
    """``"pot4"`` -> ``("pot", 15)``: the kind and the number of codebook levels.

    Raises:
        ConfigError: not a codebook scheme, or its bits / levels are out of range.

    Example:
        >>> parse_codebook_scheme("binary"), parse_codebook_scheme("kmeans:16")
        (('binary', 2), ('kmeans', 16))
    """
    m = _SCHEME.match(scheme.lower())
    if m is None:
        raise ConfigError(
            f"unknown codebook scheme '{scheme}'; expected binary, ternary, pot<bits> or "
            "kmeans:<levels>"
        )
    if m.group(2):
        bits = int(m.group(2))
        if not 2 <= bits <= 4:
            raise ConfigError(f"scheme '{scheme}': pot bits must be 2..4, got {bits}")
        return "pot", 2**bits - 1
    if m.group(3):
        levels = int(m.group(3))
        # indices stay at most 4 bits: wider codebooks belong to torchshrink.cluster
        if not 2 <= levels <= 16:
            raise ConfigError(f"scheme '{scheme}': kmeans levels must be 2..16, got {levels}")
        return "kmeans", levels
    return scheme.lower(), 2 if scheme.lower() == "binary" else 3


def codebook_of(
    w: torch.Tensor, kind: str, levels: int, *, name: str = "weight"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codebook ``(R, levels)`` (R = channels, or 1 for k-means) and uint8 indices of ``w``.

    Example:
        >>> book, idx = codebook_of(torch.tensor([[1.0, -3.0]]), "binary", 2)
        >>> book.tolist(), idx.tolist()
        ([[-2.0, 2.0]], [[1, 0]])
    """
    check_finite(w, name)
    rows = w.detach().reshape(w.shape[0], -1).float()  # (C, K)
    if kind == "binary":
        codes = binarize(rows, axis=0, name=name)
        a = codes.scale[:, None]  # (C, 1)
        return torch.cat([-a, a], dim=1), (codes.codes > 0).to(torch.uint8).reshape(w.shape)
    if kind == "ternary":
        # the TWN threshold decides the zeros, not the nearest level: keep its codes
        codes = ternarize(rows, axis=0, name=name)
        a = codes.scale[:, None]  # (C, 1)
        book = torch.cat([-a, torch.zeros_like(a), a], dim=1)  # (C, 3)
        return book, (codes.codes + 1).to(torch.uint8).reshape(w.shape)
    if kind == "kmeans":
        res = kmeans_quantize(rows, levels, name=name)
        return res.codebook.float()[None, :], res.labels.to(torch.uint8).reshape(w.shape)
    if kind != "pot":
        raise ConfigError(f"unknown codebook kind '{kind}'")
    bits = int(math.log2(levels + 1))
    snapped = pot_quantize(rows, bits, axis=0, name=name)  # (C, K) on the levels
    top = snapped.abs().amax(dim=1)  # (C,) = 2^e_max of each channel
    mags = top[:, None] * 2.0 ** -torch.arange(levels // 2, dtype=torch.float32)  # (C, E)
    book = torch.cat([-mags, torch.zeros_like(top)[:, None], mags], dim=1).sort(dim=1).values
    return book, _nearest(snapped, book).reshape(w.shape)


def _nearest(rows: torch.Tensor, book: torch.Tensor) -> torch.Tensor:
    """Index of the nearest level of each row's codebook: ``(C, K)`` uint8."""
    full = book.expand(rows.shape[0], -1).contiguous()  # (C, L), ascending per row
    hi = torch.searchsorted(full, rows.contiguous()).clamp(max=full.shape[1] - 1)  # (C, K)
    lo = (hi - 1).clamp(min=0)
    closer_lo = (rows - full.gather(1, lo)).abs() <= (full.gather(1, hi) - rows).abs()
    return torch.where(closer_lo, lo, hi).to(torch.uint8)


class CodebookLayer(QuantLayer):
    """A weight-only quant layer whose codes index a codebook of float levels.

    Args:
        module: the float layer (``None`` when rebuilt from a model file).
        kind: ``"binary"``, ``"ternary"``, ``"pot"`` or ``"kmeans"``.
        levels: codebook entries (2, 3, ``2^b - 1`` or ``k``).
        name: the layer's name in the model, for error messages.

    Attributes:
        weight_q: uint8 indices, the weight's shape.
        weight_codebook: ``(C_out, levels)`` or ``(1, levels)`` float32 levels.
    """

    weight_codebook: torch.Tensor

    def __init__(
        self, module: nn.Module | None, kind: str, levels: int, *, name: str = "layer"
    ) -> None:
        index_bits = max(1, math.ceil(math.log2(levels)))
        per_tensor = kind == "kmeans"
        spec = QuantSpec(
            bits=max(2, index_bits),  # QuantSpec has no 1-bit codes; storage_bits says 1
            signed=False,
            symmetric=False,
            granularity="per_tensor" if per_tensor else "per_channel",
        )
        super().__init__(None, spec, None, mode="weight_only", name=name)
        self.kind, self.levels, self.index_bits = kind, int(levels), index_bits
        self.register_buffer("weight_codebook", torch.zeros(0))
        if module is None:
            return
        self.module = module
        book, idx = codebook_of(cast(torch.Tensor, module.weight), kind, self.levels, name=name)
        self.weight_q, self.weight_codebook = idx, book
        self.weight_scale = book.abs().amax(dim=1).reshape(() if per_tensor else (-1,))
        self.weight_zero_point = torch.zeros_like(self.weight_scale, dtype=torch.int32)

    @property
    def storage_bits(self) -> int:
        return self.index_bits

    def dequantized_weight(self) -> torch.Tensor:
        return _lookup(self.weight_q, self.weight_codebook)

    def weight_from_state(self, state: dict[str, Any], prefix: str) -> torch.Tensor:
        return _lookup(state[prefix + "weight_q"], state[prefix + "weight_codebook"])

    def extra_repr(self) -> str:
        return f"weight={self.kind} codebook of {self.levels} levels ({self.index_bits}-bit)"


def _lookup(idx: torch.Tensor, book: torch.Tensor) -> torch.Tensor:
    rows = idx.reshape(idx.shape[0], -1).long()  # (C, K)
    full = book.expand(rows.shape[0], -1)  # (C, L)
    return full.gather(1, rows).reshape(idx.shape)


class CodebookLinear(CodebookLayer, QuantLinear):
    """Codebook-weight ``nn.Linear``: ``(*, in) -> (*, out)``."""


class CodebookConv2d(CodebookLayer, QuantConv2d):
    """Codebook-weight ``nn.Conv2d``: ``(B, C_in, H, W) -> (B, C_out, H', W')``."""


_LAYERS: dict[type[nn.Module], type[CodebookLayer]] = {
    nn.Linear: CodebookLinear,
    nn.Conv2d: CodebookConv2d,
}


def quantize_codebook(
    model: nn.Module,
    scheme: str,
    *,
    ignore: tuple[str, ...] | list[str] = (),
    keep_float: tuple[str, ...] | list[str] = (),
    fold: bool = True,
) -> nn.Module:
    """Return a copy of ``model`` with codebook weights (``model`` itself is not changed).

    Args:
        model: a trained float model.
        scheme: ``binary``, ``ternary``, ``pot<bits>`` (2-4) or ``kmeans:<levels>`` (2-16).
        ignore: names or regexes of modules left alone (also of unsupported types).
        keep_float: names or regexes of Linear / Conv2d layers kept in float (e.g. the first
            and last layers, which binary networks usually keep).
        fold: fold BatchNorm into the preceding layer first.

    Returns:
        The model in eval mode; :func:`~torchshrink.quantize.ptq.get_quant_report` describes
        it (``weight_bits`` = index bits, granularity ``"codebook"``).

    Raises:
        ConfigError: unknown scheme, or NaN / Inf in a parameter (named).
        UnsupportedLayerError: layers that cannot be quantized and are not ignored.

    Example:
        >>> from torchshrink.core.zoo import create_zoo_model
        >>> q = quantize_codebook(create_zoo_model("lenet300"), "binary", keep_float=["fc3"])
        >>> type(q.fc1).__name__, type(q.fc3).__name__
        ('CodebookLinear', 'Linear')
    """
    kind, levels = parse_codebook_scheme(scheme)
    for pname, param in model.named_parameters():
        check_finite(param.detach(), pname)
    out = copy.deepcopy(model).eval()
    if fold:
        fold_bn(out, inplace=True)
    config = QuantConfig(
        scheme="w8", ignore=tuple(ignore), overrides=dict.fromkeys(keep_float, "float")
    )
    selected, records = _select_layers(out, config)
    for name in selected:
        module = out.get_submodule(name)
        layer = _LAYERS[type(module)](module, kind, levels, name=name)
        parent_name, _, child = name.rpartition(".")
        setattr(out.get_submodule(parent_name) if parent_name else out, child, layer)
        records[name] = LayerQuant(
            name, type(module).__name__, "quantized", layer.index_bits, "codebook", "weight_only"
        )
    report = QuantReport(scheme.lower(), "weight_only", 0, 0, tuple(records.values()))
    object.__setattr__(out, _REPORT_ATTR, report)
    return out


def _ctor_values(m: nn.Module) -> dict[str, Any]:
    assert isinstance(m, CodebookLayer)
    return {"module": None, "kind": m.kind, "levels": m.levels, "name": m.layer_name}


for _cls in (CodebookLinear, CodebookConv2d):
    register_module_state(
        _cls, attrs=("mode",), ctor=("module", "kind", "levels", "name"), derived=_ctor_values
    )
