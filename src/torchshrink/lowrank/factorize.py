"""Factorize a whole model in place: SVD for Linear / 1x1 conv, Tucker-2 or separable for kxk.

For every selected layer :func:`factorize` picks a rank (per-layer map, kept energy, or target
compression ratio), builds the replacement, and keeps it only if it has fewer parameters and,
unless ``max_latency_ratio`` is ``None``, is not measured slower: both forms are timed with
:func:`~torchshrink.measure.latency.measure_latency` on the layer's real input, captured by a
forward hook while the model runs ``example_inputs``. Replacements are plain ``nn.Sequential``
stacks of torch.nn layers, which the model file format already records and rebuilds, so
factorized models save and load without any registration.

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
    >>> cfg = FactorizeConfig(ranks={"0": 8}, energy=1.0, max_latency_ratio=None)
    >>> report = factorize(model, cfg, example_inputs=torch.randn(8, 64))
    >>> [(r.name, r.applied, r.reason) for r in report.layers]
    [('0', True, ''), ('2', False, 'more params')]
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from torchshrink.core.forward import Inputs, call_model, eval_mode
from torchshrink.lowrank.separable import separable_factorize, separable_reconstruct
from torchshrink.lowrank.svd import (
    matrix_of,
    rank_for_energy,
    rank_for_ratio,
    singular_values,
    svd_factorize,
)
from torchshrink.lowrank.tucker import (
    tucker2_factorize,
    tucker2_ranks_for_energy,
    tucker2_ranks_for_ratio,
    tucker2_reconstruct,
)
from torchshrink.measure.latency import measure_latency

ConvMethod = Literal["tucker", "separable", "none"]


class FactorizeConfig(BaseModel):
    """Which layers to factorize, how, and at what rank.

    Rank rules, first match wins: ``ranks`` (per layer), then ``energy``, then ``ratio``.

    Attributes:
        energy: keep this fraction of the squared singular values (per mode for Tucker-2).
        ratio: shrink each layer's parameters by at least this factor.
        ranks: ``{name_or_regex: rank}`` (full match on module names): an int for SVD, an int
            or ``(r_in, r_out)`` for Tucker-2, the depth multiplier for separable.
        linear: factorize ``nn.Linear`` (and 1x1 convs) by truncated SVD.
        conv: ``"tucker"`` (1x1 -> kxk -> 1x1), ``"separable"`` (depthwise + pointwise) or
            ``"none"`` for kxk ungrouped ``nn.Conv2d``.
        als_iters: HOOI refinement sweeps after HOSVD for Tucker-2.
        multiplier: depth multiplier of separable replacements without a ``ranks`` entry.
        include: regexes of module names to consider (``None``: every supported layer).
        ignore: regexes of module names never to touch.
        max_latency_ratio: skip a layer whose replacement's median latency exceeds this
            multiple of the original's; ``None`` skips the measurement.
        latency_repeats: timed repeats per measurement.
        latency_threads: threads for the measurement (``None`` keeps torch's setting).

    Example:
        >>> FactorizeConfig(ratio=2.0, ignore=["fc3"]).conv
        'tucker'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    energy: float | None = Field(default=None, gt=0, le=1)
    ratio: float | None = Field(default=None, gt=1)
    ranks: dict[str, int | tuple[int, int]] = Field(default_factory=dict)
    linear: bool = True
    conv: ConvMethod = "tucker"
    als_iters: int = Field(default=0, ge=0)
    multiplier: int = Field(default=1, ge=1)
    include: list[str] | None = None
    ignore: list[str] = Field(default_factory=list)
    max_latency_ratio: float | None = Field(default=1.0, gt=0)
    latency_repeats: int = Field(default=15, ge=1)
    latency_threads: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> FactorizeConfig:
        if self.energy is not None and self.ratio is not None:
            raise ValueError("energy / ratio: give one rank rule, not both")
        needs_rule = self.linear or self.conv == "tucker"
        if needs_rule and self.energy is None and self.ratio is None and not self.ranks:
            raise ValueError("energy / ratio / ranks: give a rank rule (one of them)")
        for pattern in [*self.ranks, *(self.include or []), *self.ignore]:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"'{pattern}' is not a valid regex: {exc}") from None
        return self


@dataclass(frozen=True)
class LayerFactorization:
    """What happened to one layer.

    Attributes:
        name: module name.
        kind: ``"svd"``, ``"tucker2"`` or ``"separable"``.
        rank: ``(r,)`` for SVD, ``(r_in, r_out)`` for Tucker-2, ``(multiplier,)`` for separable.
        params_before: parameters of the original layer.
        params_after: parameters of the replacement.
        weight_error: ``||W - W_hat|| / ||W||`` (Frobenius) of the low-rank kernel.
        output_error: relative L2 error of the layer's output on the captured input.
        latency_before_ms: median latency of the original layer (``None`` if not measured).
        latency_after_ms: median latency of the replacement (``None`` if not measured).
        applied: whether the replacement is now in the model.
        reason: why it was skipped (``"more params"``, ``"slower"``, ...); empty if applied.
    """

    name: str
    kind: str
    rank: tuple[int, ...]
    params_before: int
    params_after: int
    weight_error: float
    output_error: float | None
    latency_before_ms: float | None
    latency_after_ms: float | None
    applied: bool
    reason: str = ""


@dataclass(frozen=True)
class FactorizeReport:
    """Per-layer outcome of :func:`factorize` and the whole model's parameter counts.

    Attributes:
        layers: one record per considered layer, in module order.
        params_before: model parameters before.
        params_after: model parameters after.
    """

    layers: tuple[LayerFactorization, ...]
    params_before: int
    params_after: int

    @property
    def applied(self) -> tuple[LayerFactorization, ...]:
        """Records of the layers that were replaced."""
        return tuple(r for r in self.layers if r.applied)

    @property
    def ratio(self) -> float:
        """``params_before / params_after`` of the whole model."""
        return self.params_before / max(self.params_after, 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form.

        Example:
            >>> FactorizeReport((), 10, 5).to_dict()["ratio"]
            2.0
        """
        return {
            "params_before": self.params_before,
            "params_after": self.params_after,
            "ratio": self.ratio,
            "layers": [asdict(r) for r in self.layers],
        }


def factorize(
    model: nn.Module,
    config: FactorizeConfig,
    *,
    example_inputs: Inputs,
    filter_fn: Callable[[nn.Module, str], bool] | None = None,
) -> FactorizeReport:
    """Replace Linear / Conv2d layers of ``model`` **in place** by low-rank forms.

    Args:
        model: the model (its layers are swapped; train / eval mode is kept).
        config: rank rules, methods, layer selection and the latency rule.
        example_inputs: a batch the model accepts; each layer's input is captured from it.
        filter_fn: ``filter_fn(module, name)`` must be true for a layer to be considered.

    Returns:
        A :class:`FactorizeReport` with rank, params, errors and latencies per layer.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1))
        >>> r = factorize(m, FactorizeConfig(ratio=2.0, max_latency_ratio=None),
        ...               example_inputs=torch.randn(1, 16, 8, 8))
        >>> r.layers[0].kind, r.layers[0].rank, isinstance(m[0], nn.Sequential)
        ('tucker2', (9, 9), True)
    """
    params_before = sum(p.numel() for p in model.parameters())
    candidates = [
        (name, m)
        for name, m in model.named_modules()
        if name and _supported(m, config) and _selected(name, m, config, filter_fn)
    ]
    inputs = _capture_inputs(model, [m for _, m in candidates], example_inputs)
    records = []
    for name, layer in candidates:
        x = inputs.get(id(layer))
        record, new = _factorize_layer(name, layer, x, config)
        if record.applied:
            assert new is not None
            new.train(layer.training)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, new)
        records.append(record)
    return FactorizeReport(
        tuple(records), params_before, sum(p.numel() for p in model.parameters())
    )


def reconstructed_weight(replacement: nn.Module) -> torch.Tensor:
    """The full weight (``(out, in)`` or ``(O, I, kh, kw)``) a replacement stack computes.

    Raises:
        ValueError: ``replacement`` is not one of the forms built here.

    Example:
        >>> fc = nn.Linear(8, 6)
        >>> torch.allclose(reconstructed_weight(svd_factorize(fc, 6)), fc.weight, atol=1e-5)
        True
    """
    layers = list(replacement.children()) if isinstance(replacement, nn.Sequential) else []
    ws = [_weight(m) for m in layers]
    if len(layers) == 2 and all(isinstance(m, nn.Linear) for m in layers):
        return ws[1] @ ws[0]  # (out, r) @ (r, in)
    if len(layers) == 2 and all(isinstance(m, nn.Conv2d) for m in layers):
        groups = int(getattr(layers[0], "groups", 1))
        if groups > 1:
            return separable_reconstruct(ws[0], ws[1], groups)
        return (ws[1].flatten(1) @ ws[0].flatten(1))[:, :, None, None]
    if len(layers) == 3 and all(isinstance(m, nn.Conv2d) for m in layers):
        u_in = ws[0][:, :, 0, 0].t()  # (I, r_in)
        u_out = ws[2][:, :, 0, 0]  # (O, r_out)
        return tucker2_reconstruct(u_in, ws[1], u_out)
    raise ValueError(f"not a low-rank replacement built by torchshrink.lowrank: {replacement!r}")


def _weight(m: nn.Module) -> torch.Tensor:
    w = getattr(m, "weight", None)
    assert isinstance(w, torch.Tensor)
    return w


def _supported(m: nn.Module, config: FactorizeConfig) -> bool:
    if isinstance(m, nn.Linear):
        return config.linear
    if isinstance(m, nn.Conv2d) and m.groups == 1:
        if m.kernel_size == (1, 1):
            return config.linear
        return config.conv != "none"
    return False


def _selected(
    name: str, m: nn.Module, config: FactorizeConfig, filter_fn: Callable[..., bool] | None
) -> bool:
    if any(re.fullmatch(p, name) for p in config.ignore):
        return False
    if config.include is not None and not any(re.fullmatch(p, name) for p in config.include):
        return False
    return filter_fn is None or bool(filter_fn(m, name))


def _capture_inputs(
    model: nn.Module, layers: list[nn.Module], example_inputs: Inputs
) -> dict[int, torch.Tensor]:
    captured: dict[int, torch.Tensor] = {}

    def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        captured.setdefault(id(module), args[0].detach())

    handles = [m.register_forward_pre_hook(hook) for m in layers]
    try:
        with eval_mode(model), torch.no_grad():
            call_model(model, example_inputs)
    finally:
        for h in handles:
            h.remove()
    return captured


def _rank_rule(name: str, config: FactorizeConfig) -> int | tuple[int, int] | None:
    for pattern, rank in config.ranks.items():
        if re.fullmatch(pattern, name):
            return rank
    return None


def _build(
    name: str, layer: nn.Module, config: FactorizeConfig
) -> tuple[str, tuple[int, ...], nn.Module] | None:
    rule = _rank_rule(name, config)
    if isinstance(layer, nn.Linear) or layer.kernel_size == (1, 1):  # type: ignore[union-attr]
        out_f, in_f = matrix_of(layer).shape
        if isinstance(rule, tuple):
            rule = min(rule)
        if rule is not None:
            r = int(rule)
        elif config.energy is not None:
            r = rank_for_energy(singular_values(layer), config.energy)
        elif config.ratio is not None:
            r = rank_for_ratio(out_f, in_f, config.ratio, bias=layer.bias is not None)
        else:
            return None
        r = max(1, min(r, out_f, in_f))
        return "svd", (r,), svd_factorize(layer, r)
    assert isinstance(layer, nn.Conv2d)
    o, i = layer.out_channels, layer.in_channels
    if config.conv == "separable":
        kh, kw = layer.kernel_size
        m = int(min(rule) if isinstance(rule, tuple) else (rule or config.multiplier))
        m = max(1, min(m, o, kh * kw))
        return "separable", (m,), separable_factorize(layer, multiplier=m)
    if isinstance(rule, tuple):
        ranks = (int(rule[0]), int(rule[1]))
    elif rule is not None:
        ranks = (int(rule), int(rule))
    elif config.energy is not None:
        ranks = tucker2_ranks_for_energy(layer, config.energy)
    elif config.ratio is not None:
        ranks = tucker2_ranks_for_ratio(layer, config.ratio)
    else:
        return None
    ranks = (max(1, min(ranks[0], i)), max(1, min(ranks[1], o)))
    return "tucker2", ranks, tucker2_factorize(layer, ranks, als_iters=config.als_iters)


def _factorize_layer(
    name: str, layer: nn.Module, x: torch.Tensor | None, config: FactorizeConfig
) -> tuple[LayerFactorization, nn.Module | None]:
    built = _build(name, layer, config)
    before = sum(p.numel() for p in layer.parameters())
    if built is None:
        return LayerFactorization(name, "", (), before, before, 0.0, None, None, None, False,
                                  "no rank rule"), None  # fmt: skip
    kind, rank, new = built
    after = sum(p.numel() for p in new.parameters())
    with torch.no_grad():
        w = _weight(layer).detach()
        w_hat = reconstructed_weight(new).reshape(w.shape)
        weight_error = float((w - w_hat).norm() / w.norm().clamp_min(1e-12))
        output_error = None
        if x is not None:
            with eval_mode(layer), eval_mode(new):
                y, y_hat = layer(x), new(x)
            output_error = float((y - y_hat).norm() / y.norm().clamp_min(1e-12))
    record = LayerFactorization(name, kind, rank, before, after, weight_error, output_error,
                                None, None, False)  # fmt: skip
    if after >= before:
        return _replace(record, reason="more params"), None
    if x is None:
        return _replace(record, reason="did not run on example_inputs"), None
    if config.max_latency_ratio is not None:
        t0 = _latency(layer, x, config)
        t1 = _latency(new, x, config)
        record = _replace(record, latency_before_ms=t0, latency_after_ms=t1)
        if t1 > config.max_latency_ratio * t0:
            return _replace(record, reason="slower"), None
    return _replace(record, applied=True), new


def _latency(module: nn.Module, x: torch.Tensor, config: FactorizeConfig) -> float:
    stats = measure_latency(
        module, x, threads=config.latency_threads, warmup=2, repeats=config.latency_repeats,
        max_seconds=2.0,
    )  # fmt: skip
    return stats.p50_ms


def _replace(record: LayerFactorization, **changes: Any) -> LayerFactorization:
    return replace(record, **changes)
