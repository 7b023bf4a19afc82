"""MACs and FLOPs per layer and in total, counted by ``torch.utils.flop_counter.FlopCounterMode``.

Nothing is hand-counted: torch's own per-operator formulas count the matrix multiplications and
convolutions (``mm``, ``addmm``, ``bmm``, ``convolution``, attention, ...) of one forward pass.
``FlopCounterMode`` counts **2 FLOPs per multiply-accumulate**, so ``macs = flops // 2``.
Element-wise work (bias adds, activations, pooling, normalisation) is not counted, which is the
usual convention (LeNet-5 on 1x28x28: 2,293,000 MACs).

Two gaps of the stock counter are closed without hand-counting: the fused CPU fast paths of
``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer`` (invisible to the counter) are
switched off while counting via ``torch.backends.mha.set_fastpath_enabled``, and
``scaled_dot_product_attention`` on CPU gets torch's own ``sdpa_flop_count`` formula (the stock
registry covers only the CUDA flash / efficient kernels).

Per layer: FlopCounterMode attributes each operator to every module on the call stack; the
MACs of a module's *own* operators are its total minus its children's totals (looking through
containers that are never called, like ``ModuleList``), so the per-layer MACs add up to the
model total. Layers listed are the leaf modules plus any module
that has its own parameters or its own operators (a functional ``x @ w`` in a parent's forward).

``nonzero_macs`` estimates the MACs left if zero weights were skipped: per layer,
``macs * density`` of the layer's ``weight`` (or of all its own parameters). Dense kernels do
**not** skip zeros, so unstructured sparsity leaves ``macs`` unchanged.

Example:
    >>> import torch
    >>> from torch import nn
    >>> r = count_macs(nn.Linear(800, 500), torch.zeros(1, 800))
    >>> r.macs
    400000
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from torchshrink.core.forward import Inputs, call_model, eval_mode
from torchshrink.measure.params import count_nonzero, dtype_name, module_param_stats


@dataclass(frozen=True)
class LayerMacs:
    """MACs and facts of one layer.

    Attributes:
        name: qualified module name (``""`` is the model itself).
        type: module class name, e.g. ``"Conv2d"``.
        macs: MACs of the layer's own operators for the whole example batch.
        nonzero_macs: ``macs * density`` of the layer's weight (see the module docstring).
        output_shape: shape of the (first tensor of the) layer's output at its last call.
        activation_bytes: bytes of input plus output tensors of a leaf layer (0 otherwise).
        weight_dtype: dtype of the layer's largest own tensor, or ``None`` if it has none.
    """

    name: str
    type: str
    macs: int
    nonzero_macs: int
    output_shape: tuple[int, ...] | None = None
    activation_bytes: int = 0
    weight_dtype: str | None = None


@dataclass(frozen=True)
class MacsResult:
    """MACs of one forward pass over the example batch.

    Attributes:
        macs: total MACs (``flops // 2``).
        flops: total FLOPs as counted by ``FlopCounterMode``.
        nonzero_macs: sum of the per-layer ``nonzero_macs``.
        layers: per-layer rows, in module order; their ``macs`` add up to ``macs``.
        by_op: FLOPs per aten operator, e.g. ``{"aten.convolution": 3776000}``.
        activation_bytes: sum of the leaf layers' input and output bytes.
    """

    macs: int
    flops: int
    nonzero_macs: int
    layers: tuple[LayerMacs, ...]
    by_op: dict[str, int] = field(default_factory=dict)
    activation_bytes: int = 0


def _tensors(x: Any) -> Iterator[torch.Tensor]:
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _tensors(v)
    elif isinstance(x, (tuple, list)):
        for v in x:
            yield from _tensors(v)
    elif hasattr(x, "to_tuple"):  # HF ModelOutput
        yield from _tensors(x.to_tuple())


def _nbytes(x: Any) -> int:
    return sum(t.numel() * t.element_size() for t in _tensors(x))


def _density(module: nn.Module) -> float:
    weight = getattr(module, "weight", None)
    if isinstance(weight, torch.Tensor) and weight.numel():
        return count_nonzero([weight]) / weight.numel()
    n, nz = module_param_stats(module)
    return nz / n if n else 1.0


def _weight_dtype(module: nn.Module) -> str | None:
    own = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
    if not own:
        return None
    return dtype_name(max(own, key=lambda t: t.numel()).dtype)


def _attention_formulas() -> dict[Any, Any]:
    try:
        from torch.utils.flop_counter import sdpa_flop_count
    except ImportError:  # older torch: leave attention uncounted rather than guess
        return {}

    def sdpa(q: Any, k: Any, v: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return int(sdpa_flop_count(q, k, v))  # (B, H, S, D) shapes -> 2 bmm's worth of flops

    aten = torch.ops.aten
    ops = ["scaled_dot_product_attention", "_scaled_dot_product_flash_attention_for_cpu"]
    return {getattr(aten, name): sdpa for name in ops if hasattr(aten, name)}


@contextmanager
def _no_mha_fastpath() -> Iterator[None]:
    mha = getattr(torch.backends, "mha", None)
    if mha is None:
        yield
        return
    previous = mha.get_fastpath_enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(previous)


def count_macs(model: nn.Module, inputs: Inputs) -> MacsResult:
    """Count MACs of one forward pass of ``model`` on ``inputs``, per layer and in total.

    The model runs once in eval mode under ``torch.no_grad()``; its modes are restored.

    Args:
        model: any ``nn.Module``.
        inputs: a tensor, a tuple of positional tensors or a dict of keyword tensors.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Conv2d(1, 20, 5), nn.Flatten())
        >>> [layer.macs for layer in count_macs(m, torch.zeros(1, 1, 28, 28)).layers]
        [288000, 0]
    """
    from torch.utils.flop_counter import FlopCounterMode

    root = type(model).__name__
    aliases: dict[int, list[str]] = {}  # id(module) -> every qualified name it is reachable by
    for name, m in model.named_modules(remove_duplicate=False):
        aliases.setdefault(id(m), []).append(name)
    modules = list(model.named_modules())
    leaves = {id(m) for _, m in modules if next(m.children(), None) is None}

    shapes: dict[int, tuple[int, ...]] = {}
    act_bytes: dict[int, int] = {}
    called: set[int] = set()

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        called.add(id(module))
        first = next(_tensors(output), None)
        if first is not None:
            shapes[id(module)] = tuple(first.shape)
        if id(module) in leaves:
            act_bytes[id(module)] = act_bytes.get(id(module), 0) + _nbytes(args) + _nbytes(output)

    handles = [m.register_forward_hook(hook) for _, m in modules]
    try:
        counter = FlopCounterMode(display=False, custom_mapping=_attention_formulas())
        with eval_mode(model), torch.no_grad(), _no_mha_fastpath(), counter:
            call_model(model, inputs)
    finally:
        for h in handles:
            h.remove()

    counts = counter.get_flop_counts()

    def total(m: nn.Module) -> int:
        # The tracker knows a shared module by one of its names; the others have no entry.
        keys = [f"{root}.{n}" if n else root for n in aliases[id(m)]]
        return max(sum(counts.get(k, {}).values()) for k in keys)

    def called_children(m: nn.Module) -> dict[int, nn.Module]:
        # Containers that are never called themselves (ModuleList, ModuleDict) are not on the
        # tracker's stack: their children's work is counted directly in the calling parent.
        out: dict[int, nn.Module] = {}
        for c in m.children():
            out.update({id(c): c} if id(c) in called else called_children(c))
        return out

    flops = int(counter.get_total_flops())
    layers = []
    for name, m in modules:
        own_flops = 0
        if id(m) in called:
            own_flops = total(m) - sum(total(c) for c in called_children(m).values())
        own_params, _ = module_param_stats(m)
        if id(m) not in leaves and own_flops == 0 and own_params == 0:
            continue
        macs = own_flops // 2
        layers.append(
            LayerMacs(
                name=name,
                type=type(m).__name__,
                macs=macs,
                nonzero_macs=round(macs * _density(m)),
                output_shape=shapes.get(id(m)),
                activation_bytes=act_bytes.get(id(m), 0),
                weight_dtype=_weight_dtype(m),
            )
        )
    by_op = {str(op): int(v) for op, v in counts.get("Global", {}).items()}
    return MacsResult(
        macs=flops // 2,
        flops=flops,
        nonzero_macs=sum(la.nonzero_macs for la in layers),
        layers=tuple(layers),
        by_op=by_op,
        activation_bytes=sum(act_bytes.values()),
    )
