"""SmoothQuant-style activation smoothing: move activation outliers into the weights.

Dynamic int8 activations are quantized per tensor, so a few input channels with large values
(common in transformers, e.g. after GELU or in the residual stream) waste most of the 8-bit
range. For a Linear ``y = X W^T + b`` and a per-input-channel scale ``s > 0``,
``X W^T = (X / s) (W s)^T`` exactly; with ``s_j = max|X_j|^alpha / max|W_j|^(1-alpha)``
(Xiao et al. 2023, SmoothQuant) both ``X / s`` and ``W s`` have flatter ranges.

:func:`smooth` finds the Linears that read the same tensor (e.g. Q, K and V) by running the
model once with hooks, calibrates ``max|X_j|`` on a few batches, then per group:

* folds ``1 / s`` into the LayerNorm that produced the tensor (its weight and bias), when the
  fp32 output stays the same: a pre-norm block's LayerNorm only feeds its Linears; a
  post-norm block's (BERT) also feeds the residual sum, where the fold is not exact;
* or into the output rows of a Linear called just before, when only per-channel-linear ops
  lie between (attention's value projection -> attention -> output projection);
* otherwise puts the ``1 / s`` in front of the Linears (:class:`ScaledInputLinear`, one shared
  buffer per group: one ``Mul`` in an ONNX export).

Every change is checked against the original model's fp32 output on the first calibration
batch and undone if it moved it, so the smoothed model computes the same function.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.LayerNorm(8), nn.Linear(8, 4)).eval()
    >>> x = torch.randn(16, 8) * torch.tensor([1.0] * 7 + [50.0])
    >>> smoothed, rep = smooth(net, [x])
    >>> rep.groups[0].folded_into, bool(torch.allclose(smoothed(x), net(x), atol=1e-5))
    ('0', True)
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from torchshrink.core.errors import EmptyDataError
from torchshrink.core.forward import Inputs, call_model

_CHECK_SAMPLES = 1  # samples of the first batch that every fp32-equality check runs
_PRODUCERS = 2  # Linears called just before a group that are tried as fold targets


class SmoothConfig(BaseModel):
    """How :func:`smooth` picks its scales.

    Attributes:
        alpha: migration strength: 0 leaves activations as they are, 1 moves all of their
            range into the weights (SmoothQuant uses 0.5; search 0.3-0.8 by measured accuracy).
        min_scale: lower clamp of every scale (guards channels that are always zero).
        tolerance: largest allowed change of the fp32 output, relative to its largest value.
        fold: fold into a preceding LayerNorm where that is exact (else always a ``Mul``).

    Example:
        >>> SmoothConfig(alpha=0.6).min_scale
        1e-05
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    alpha: float = Field(default=0.5, ge=0.0, le=1.0)
    min_scale: float = Field(default=1e-5, gt=0)
    tolerance: float = Field(default=1e-3, gt=0)
    fold: bool = True


@dataclass(frozen=True)
class SmoothedGroup:
    """One set of Linears that read the same tensor, and what was done to it.

    Attributes:
        layers: qualified names of the Linears (in the original model).
        folded_into: the LayerNorm or Linear that absorbed ``1 / s`` (its weight and bias,
            or its output rows), or ``None`` (a ``Mul`` in front instead).
        ratio_before: largest / median channel max of the input, before smoothing.
        ratio_after: the same of the smoothed input.
    """

    layers: tuple[str, ...]
    folded_into: str | None
    ratio_before: float
    ratio_after: float


@dataclass(frozen=True)
class SmoothReport:
    """What :func:`smooth` changed.

    Attributes:
        alpha: the migration strength used.
        groups: every smoothed group.
        skipped: Linears left alone (their smoothing changed the fp32 output, e.g. layers a
            fused kernel reads directly), with the reason.
    """

    alpha: float
    groups: tuple[SmoothedGroup, ...]
    skipped: tuple[str, ...] = ()


class ScaledInputLinear(nn.Module):
    """``linear(x * inv_scale)``: a smoothed Linear with no op before it to fold into.

    Linears that read the same tensor share one ``inv_scale`` tensor, so an ONNX export has
    one initializer and ONNX Runtime's common-subexpression pass keeps a single ``Mul``.

    Example:
        >>> m = ScaledInputLinear(nn.Linear(3, 2), torch.ones(3))
        >>> m(torch.randn(4, 3)).shape
        torch.Size([4, 2])
    """

    def __init__(self, linear: nn.Linear, inv_scale: torch.Tensor) -> None:
        super().__init__()
        self.linear = linear
        self.inv_scale: torch.Tensor
        self.register_buffer("inv_scale", inv_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x * self.inv_scale)  # (..., in) -> (..., out)


def _groups(model: nn.Module, batch: Inputs) -> tuple[list[list[str]], dict[str, str]]:
    """Linears grouped by the tensor they read (in call order); -> LayerNorm that made it."""
    seen: list[torch.Tensor] = []  # keeps every tensor alive so that data pointers are unique
    readers: dict[tuple[int, tuple[int, ...]], list[str]] = {}
    makers: dict[tuple[int, tuple[int, ...]], str] = {}
    handles = []

    def key(t: torch.Tensor) -> tuple[int, tuple[int, ...]]:
        seen.append(t)
        return t.data_ptr(), tuple(t.shape)

    def read(name: str, x: torch.Tensor) -> None:  # a hook returning a value replaces it
        readers.setdefault(key(x), []).append(name)

    def made(name: str, out: torch.Tensor) -> None:
        makers.setdefault(key(out), name)

    for name, m in model.named_modules():
        if type(m) is nn.Linear:
            handles.append(m.register_forward_pre_hook(lambda _m, a, n=name: read(n, a[0])))
        elif isinstance(m, nn.LayerNorm):
            handles.append(m.register_forward_hook(lambda _m, _a, out, n=name: made(n, out)))
    try:
        with torch.no_grad():
            call_model(model, batch)
    finally:
        for h in handles:
            h.remove()
    groups: list[list[str]] = []
    norm_of: dict[str, str] = {}
    for k, names in readers.items():
        group = list(dict.fromkeys(names))
        if any(n in g for g in groups for n in group):
            continue  # a Linear called on several tensors: smoothed with its first input
        groups.append(group)
        if k in makers:
            norm_of[group[0]] = makers[k]
    return groups, norm_of


def activation_absmax(
    model: nn.Module, calibration: Sequence[Inputs], layers: Sequence[str]
) -> dict[str, torch.Tensor]:
    """Per input channel ``max |x|`` of each named Linear over the calibration batches.

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 1))
        >>> activation_absmax(net, [torch.tensor([[1.0, -3.0]])], ["0"])["0"].tolist()
        [1.0, 3.0]
    """
    stats: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())

    def hook(name: str, x: torch.Tensor) -> None:
        amax = x.detach().abs().float().reshape(-1, x.shape[-1]).amax(0)  # (in,)
        stats[name] = torch.maximum(stats[name], amax) if name in stats else amax

    handles = [modules[n].register_forward_pre_hook(lambda _m, a, n=n: hook(n, a[0]))
               for n in layers]  # fmt: skip
    try:
        with torch.no_grad():
            for batch in calibration:
                call_model(model, batch)
    finally:
        for h in handles:
            h.remove()
    return stats


def _ratio(t: torch.Tensor) -> float:
    return float(t.max() / t.median().clamp(min=1e-12))


@dataclass(frozen=True)
class SmoothStats:
    """What smoothing needs from calibration, independent of ``alpha`` (reuse it in a search).

    Attributes:
        groups: Linears that read the same tensor, by qualified name.
        norms: first Linear of a group -> the LayerNorm that produced its input.
        absmax: first Linear of a group -> per input channel ``max |x|``, shape ``(in,)``.
        producers: first Linear of a group -> Linears whose output rows may absorb ``1 / s``.
    """

    groups: tuple[tuple[str, ...], ...]
    norms: dict[str, str]
    absmax: dict[str, torch.Tensor]
    producers: dict[str, tuple[str, ...]]


def collect_stats(model: nn.Module, calibration: Sequence[Inputs]) -> SmoothStats:
    """Group the Linears by input tensor and calibrate their input ranges.

    Raises:
        EmptyDataError: ``calibration`` is empty.

    Example:
        >>> net = nn.Sequential(nn.LayerNorm(2), nn.Linear(2, 1)).eval()
        >>> collect_stats(net, [torch.randn(3, 2)]).norms
        {'1': '0'}
    """
    if len(calibration) == 0:
        raise EmptyDataError("smooth: 'calibration' holds no batch")
    groups, norms = _groups(model, _head(calibration[0], _CHECK_SAMPLES))
    firsts = [g[0] for g in groups]
    absmax = activation_absmax(model, calibration, firsts)
    # The Linears called just before a group, with as many outputs as it has inputs: when
    # only per-channel-linear ops lie between (attention's value -> output projection), 1 / s
    # folds exactly into their output rows.
    modules = dict(model.named_modules())
    order = [n for g in groups for n in g]
    producers = {}
    for g in groups:
        before = order[: order.index(g[0])][::-1]
        width = modules[g[0]].in_features
        producers[g[0]] = tuple(
            n for n in before[:_PRODUCERS] if modules[n].out_features == width and n not in g
        )
    return SmoothStats(tuple(tuple(g) for g in groups), norms, absmax, producers)


def smooth(
    model: nn.Module,
    calibration: Sequence[Inputs],
    *,
    config: SmoothConfig | None = None,
    stats: SmoothStats | None = None,
) -> tuple[nn.Module, SmoothReport]:
    """Return a smoothed copy of ``model`` (same fp32 function, flatter Linear inputs).

    ``model`` is not changed. Only plain ``nn.Linear`` modules called as modules are smoothed
    (``nn.MultiheadAttention``'s packed input projection is not a Linear call).

    Args:
        model: a float model in eval mode.
        calibration: a few input batches; the first also checks that the output is unchanged.
        config: migration strength and tolerances.
        stats: :func:`collect_stats` of this model and calibration, when already computed.

    Returns:
        ``(smoothed, report)``.

    Raises:
        EmptyDataError: ``calibration`` is empty.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 2)).eval()
        >>> out, rep = smooth(net, [torch.randn(5, 4)], config=SmoothConfig(alpha=0.5))
        >>> [g.layers for g in rep.groups], type(out[2]).__name__
        ([('0',), ('2',)], 'ScaledInputLinear')
    """
    cfg = config or SmoothConfig()
    st = stats or collect_stats(model, calibration)
    m = copy.deepcopy(model).eval()
    check = _head(calibration[0], _CHECK_SAMPLES)
    with torch.inference_mode():
        reference = _flat(call_model(m, check))
    tol = cfg.tolerance * float(reference.abs().max().clamp(min=1e-12))
    modules = dict(m.named_modules())
    done: list[SmoothedGroup] = []
    skipped: list[str] = []
    for group in st.groups:
        linears = [modules[n] for n in group]
        assert all(isinstance(lin, nn.Linear) for lin in linears)
        x_max = st.absmax[group[0]].clamp(min=cfg.min_scale)  # (in,)
        w_max = torch.stack([lin.weight.detach().abs().amax(0) for lin in linears]).amax(0)
        s = (x_max.pow(cfg.alpha) / w_max.clamp(min=cfg.min_scale).pow(1 - cfg.alpha)).clamp(
            min=cfg.min_scale
        )  # (in,)
        # Fold targets first (no extra op), then a Mul; each kept only if the output holds.
        targets: list[str | None] = []
        if cfg.fold:
            norm = st.norms.get(group[0])
            targets = [*([norm] if norm else []), *st.producers.get(group[0], ())]
        into = next(
            (t for t in [*targets, None] if _apply(m, list(group), s, t, reference, tol, check)),
            "skip",
        )
        if into == "skip":
            skipped.extend(group)
            continue
        done.append(SmoothedGroup(tuple(group), into, _ratio(x_max), _ratio(x_max / s)))
    return m, SmoothReport(cfg.alpha, tuple(done), tuple(skipped))


def _head(inputs: Inputs, n: int) -> Inputs:
    # The first n samples: each check forward then costs little on a large model.
    if isinstance(inputs, torch.Tensor):
        return inputs[:n]
    if isinstance(inputs, Mapping):
        return {k: v[:n] if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    return type(inputs)(v[:n] if isinstance(v, torch.Tensor) else v for v in inputs)


def _flat(out: object) -> torch.Tensor:
    # The first tensor of the output (tensor, tuple, dict or a transformers ModelOutput).
    while not isinstance(out, torch.Tensor):
        values = list(out.values()) if hasattr(out, "values") else list(out)  # type: ignore[attr-defined,call-overload]
        out = next(v for v in values if isinstance(v, (torch.Tensor, tuple, list, dict)))
    return out.detach().float()


def _apply(
    model: nn.Module,
    group: list[str],
    s: torch.Tensor,
    into: str | None,
    reference: torch.Tensor,
    tol: float,
    batch: Inputs,
) -> bool:
    """Smooth one group in place; undo it and return ``False`` if the output moved."""
    modules = dict(model.named_modules())
    saved = {n: modules[n].state_dict() for n in [*group, *([into] if into else [])]}
    saved = {n: {k: v.clone() for k, v in sd.items()} for n, sd in saved.items()}
    originals = {n: modules[n] for n in group}
    with torch.no_grad():
        for n in group:
            modules[n].weight.mul_(s)  # (out, in) * (in,): column j times s_j
        target = modules[into] if into is not None else None
        if isinstance(target, ScaledInputLinear):
            target = target.linear  # a producer smoothed earlier: its Linear's output rows
        if isinstance(target, nn.LayerNorm):
            assert target.weight is not None
            target.weight.div_(s)
            if target.bias is not None:
                target.bias.div_(s)
        elif isinstance(target, nn.Linear):
            target.weight.div_(s[:, None])  # (out, in) / (out, 1): row j over s_j
            if target.bias is not None:
                target.bias.div_(s)
        else:
            inv = (1.0 / s).to(modules[group[0]].weight.dtype)  # (in,), one tensor per group
            for n in group:
                _set(model, n, ScaledInputLinear(originals[n], inv))
        try:
            with torch.inference_mode():
                out = _flat(call_model(model, batch))
            same = out.shape == reference.shape and float((out - reference).abs().max()) <= tol
        except (AttributeError, TypeError):  # a parent reads ``.weight`` (a fused fast path)
            same = False
    if same:
        return True
    with torch.no_grad():
        for n in group:
            _set(model, n, originals[n])
        for n, sd in saved.items():
            modules[n].load_state_dict(sd)
    return False


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def fold_attention_scale(model: nn.Module) -> nn.Module:
    """A copy with attention's ``1/sqrt(d)`` folded into the query projection.

    ``softmax((Q K^T) * c)`` equals ``softmax((c Q) K^T)``, so scaling the query Linear's weight
    and bias by ``c`` and setting the attention's ``scaling`` to 1 computes the same function
    (up to float rounding). In an int8 ONNX export this removes the elementwise ``Mul`` over
    every (B, heads, L, L) score tensor, which ORT cannot fuse into an integer MatMul. Applies
    to attention modules with a float ``scaling`` attribute and a ``query`` Linear
    (Hugging Face BERT-style); anything else is left as it is.

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> cfg = BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
        ...                  intermediate_size=16, vocab_size=20)
        >>> bert = BertModel(cfg).eval()
        >>> ids = torch.tensor([[1, 2, 3]])
        >>> folded = fold_attention_scale(bert)
        >>> bool(torch.allclose(folded(ids).last_hidden_state, bert(ids).last_hidden_state,
        ...                     atol=1e-5))
        True
    """
    out = copy.deepcopy(model)
    for m in out.modules():
        scale, query = getattr(m, "scaling", None), getattr(m, "query", None)
        if isinstance(scale, float) and scale != 1.0 and isinstance(query, nn.Linear):
            with torch.no_grad():
                query.weight.mul_(scale)  # (out, in): every output row
                if query.bias is not None:
                    query.bias.mul_(scale)
            # setattr: nn.Module's typing takes attributes as tensors or modules. The traced
            # "* 1.0" left in the export is dropped by ORT's graph optimizer.
            setattr(m, "scaling", 1.0)  # noqa: B010
    return out
