"""Channel rules for torch functions and tensor methods recorded by the trace.

Each rule reads the layouts of a function node's tensor arguments and sets the layouts of its
outputs, merging or blocking spaces where the op ties dimensions together. Rules are keyed by
the function's name (``"add"``, ``"cat"``, ``"view"``, ``"__getitem__"``...). A function with no
rule is fine as long as none of its tensor arguments carries channels; otherwise the analysis
raises :class:`~torchshrink.core.errors.UnsupportedLayerError` naming the enclosing module.

Example:
    >>> "cat" in FUNCTION_RULES and "flatten" in FUNCTION_RULES
    True
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from torchshrink.graph.handlers import LayoutList, OpContext
from torchshrink.graph.nodes import ValueRef
from torchshrink.graph.reshape import reshape_layouts
from torchshrink.graph.spaces import Layout, untracked

Rule = Callable[[OpContext], None]
FUNCTION_RULES: dict[str, Rule] = {}


def _rule(*names: str) -> Callable[[Rule], Rule]:
    def deco(fn: Rule) -> Rule:
        for n in names:
            FUNCTION_RULES[n] = fn
        return fn

    return deco


def _outs(ctx: OpContext, layouts: LayoutList) -> None:
    for i in range(len(ctx.node.outputs)):
        ctx.set_output(i, layouts)


def _dim(d: int, ndim: int) -> int:
    return d + ndim if d < 0 else d


_UNARY_BINARY = """
add sub mul div true_divide floor_divide remainder fmod pow where maximum minimum masked_fill
__add__ __radd__ __iadd__ __sub__ __rsub__ __isub__ __mul__ __rmul__ __imul__ __truediv__
__rtruediv__ __itruediv__ __pow__ __rpow__ add_ sub_ mul_ div_ masked_fill_ lerp addcmul addcdiv
relu relu_ relu6 gelu silu silu_ sigmoid sigmoid_ tanh tanh_ hardtanh hardtanh_ hardswish
hardsigmoid leaky_relu elu selu celu mish softplus softsign logsigmoid threshold neg exp log
sqrt rsqrt abs clamp clamp_ clip square reciprocal sin cos erf dropout dropout_ alpha_dropout
softmax log_softmax contiguous clone detach to float double half bfloat16 type type_as data
requires_grad_ cpu cuda zeros_like ones_like full_like empty_like rand_like randn_like
__neg__ __abs__ sign round floor ceil isnan nan_to_num eq ne gt ge lt le __eq__ __gt__ __lt__
__ge__ __le__ __ne__ logical_not __and__ __or__ __invert__ bool long int
"""


@_rule(*_UNARY_BINARY.split())
def elementwise(ctx: OpContext) -> None:
    """Broadcasting elementwise op: aligned dimensions of full size shrink together."""
    out_shape = ctx.shape(ctx.node.outputs[0])
    ins = [(ctx.shape(v), ctx.layouts(v)) for v in ctx.node.inputs]
    out: LayoutList = []
    for k in range(len(out_shape)):
        rep: Layout | None = None
        cands = []
        for shape, lays in ins:
            j = k - (len(out_shape) - len(shape))
            if j >= 0 and shape[j] == out_shape[k] and shape[j] > 1:
                cands.append(lays[j])
        rep = next((c for c in cands if c is not None), None)
        for c in cands:
            if c is not rep:
                ctx.unify(rep, c)
        out.append(rep)
    _outs(ctx, out)


@_rule("sum", "mean", "amax", "amin", "max", "min", "std", "var", "norm", "logsumexp", "prod")
def reduction(ctx: OpContext) -> None:
    """Reduction over some dims: reduced dims vanish (or become size 1 with ``keepdim``)."""
    other = ctx.arg(1, "dim")
    if isinstance(other, ValueRef):  # torch.max(a, b) is elementwise
        return elementwise(ctx)
    src = ctx.node.inputs[0]
    lays, nd = ctx.layouts(src), len(ctx.shape(src))
    dim = ctx.arg(1, "dim")
    if ctx.node.target == "norm":
        dim = ctx.arg(2, "dim")
    keep = bool(ctx.arg(3 if ctx.node.target == "norm" else 2, "keepdim", False))
    if dim is None or isinstance(dim, (str, float)):
        dims = set(range(nd))
    else:
        dims = {_dim(d, nd) for d in (dim if isinstance(dim, (list, tuple)) else [dim])}
    out = [None if d in dims else lays[d] for d in range(nd) if keep or d not in dims]
    if len(out) != len(ctx.shape(ctx.node.outputs[0])):
        out = [None] * len(ctx.shape(ctx.node.outputs[0]))
    _outs(ctx, out)


_SPATIAL = """
max_pool1d max_pool2d max_pool3d avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d
adaptive_avg_pool2d adaptive_avg_pool3d adaptive_max_pool1d adaptive_max_pool2d
adaptive_max_pool3d interpolate upsample lp_pool2d fractional_max_pool2d
"""


@_rule(*_SPATIAL.split())
def spatial(ctx: OpContext) -> None:
    """Pooling / resizing: batch and channel dims (0, 1) kept, spatial dims carry no channels."""
    lays = ctx.input_layouts(0)
    for i, vid in enumerate(ctx.node.outputs):
        n = len(ctx.shape(vid))
        ctx.set_output(i, [*lays[:2], *([None] * (n - 2))])


@_rule("view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as", "reshape_as")
def reshape(ctx: OpContext) -> None:
    """Any reshape: dims merged / split exactly (e.g. channels -> channel x H x W features)."""
    src = ctx.node.inputs[0]
    out, failed = reshape_layouts(ctx.shape(src), ctx.layouts(src), ctx.shape(ctx.node.outputs[0]))
    for lay in failed:
        ctx.block(lay, "a reshape mixes these channels with another dimension")
    ctx.set_output(0, out)


@_rule("permute", "transpose", "swapaxes", "swapdims", "movedim", "t", "T", "mT", "moveaxis")
def permute(ctx: OpContext) -> None:
    """Reorder dims."""
    lays = ctx.input_layouts(0)
    nd = len(lays)
    order = list(range(nd))
    name = ctx.node.target
    if name == "permute":
        dims = ctx.node.args[1:] if len(ctx.node.args) > 2 else ctx.arg(1, "dims")
        order = [_dim(d, nd) for d in (dims if isinstance(dims, (list, tuple)) else [dims])]
    elif name in ("movedim", "moveaxis"):
        src, dst = _dim(ctx.arg(1, "source"), nd), _dim(ctx.arg(2, "destination"), nd)
        order.remove(src)
        order.insert(dst, src)
    elif name == "T":
        order = order[::-1]
    elif nd >= 2:
        a, b = (nd - 2, nd - 1) if name in ("t", "mT") else (ctx.arg(1, "dim0"), ctx.arg(2, "dim1"))
        a, b = _dim(a, nd), _dim(b, nd)
        order[a], order[b] = order[b], order[a]
    ctx.set_output(0, [lays[d] for d in order])


@_rule("expand", "expand_as", "broadcast_to", "repeat")
def expand(ctx: OpContext) -> None:
    """Broadcast / repeat: size-1 dims become non-channel dims, repeated dims tile channels."""
    src = ctx.node.inputs[0]
    lays, shape = ctx.layouts(src), ctx.shape(src)
    out_shape = ctx.shape(ctx.node.outputs[0])
    lead = len(out_shape) - len(shape)
    out: LayoutList = [None] * lead
    for d, lay in enumerate(lays):
        n = out_shape[lead + d]
        if lay is None or n == shape[d]:
            out.append(lay)
        elif shape[d] == 1:
            ctx.block(lay, "a single channel is broadcast")
            out.append(None)
        else:  # repeat: channel c appears once per copy
            out.append(np.tile(lay, n // shape[d]))
    ctx.set_output(0, out)


@_rule("cat", "concat", "concatenate", "stack", "hstack", "vstack")
def cat(ctx: OpContext) -> None:
    """Concatenation: channel positions follow each input at its offset; other dims unify."""
    tensors = [r.id for r in ctx.arg(0, "tensors") if isinstance(r, ValueRef)]
    out_shape = ctx.shape(ctx.node.outputs[0])
    stack = ctx.node.target == "stack"
    nd = len(ctx.shape(tensors[0]))
    dim = _dim(ctx.arg(1, "dim", 0) or 0, nd + 1 if stack else nd)
    lays = [ctx.layouts(t) for t in tensors]
    out: LayoutList = []
    for d in range(nd):
        if d == dim and not stack:
            parts = [lay[d] for lay in lays]
            if all(p is None for p in parts):
                out.append(None)
            else:
                sizes = [ctx.shape(t)[d] for t in tensors]
                full = [untracked(n) if p is None else p for p, n in zip(parts, sizes, strict=True)]
                out.append(np.concatenate(full, axis=1))
            continue
        rep = next((lay[d] for lay in lays if lay[d] is not None), None)
        for lay in lays:
            if lay[d] is not rep:
                ctx.unify(rep, lay[d])
        out.append(rep)
    if stack:
        out.insert(dim, None)
    assert len(out) == len(out_shape)
    ctx.set_output(0, out)


@_rule("chunk", "split", "tensor_split", "unbind", "split_with_sizes")
def split(ctx: OpContext) -> None:
    """Split along a dim. ``chunk`` keeps equal parts equal: its parts shrink together;
    fixed split sizes are positional, so channels split that way are kept."""
    src = ctx.node.inputs[0]
    lays, shape = ctx.layouts(src), ctx.shape(src)
    name = ctx.node.target
    dim = _dim(ctx.arg(1 if name == "unbind" else 2, "dim", 0) or 0, len(shape))
    outs = [ctx.shape(v) for v in ctx.node.outputs]
    lay = lays[dim]
    if lay is not None and name == "unbind":
        ctx.block(lay, "unbind selects single channels")
    equal = name == "chunk" and len({s[dim] for s in outs}) == 1
    if lay is not None and name not in ("chunk", "unbind"):
        ctx.block(lay, f"{name} uses fixed sizes along this dimension")
    if lay is not None and name == "chunk" and not equal:
        ctx.block(lay, "chunk gives parts of unequal size")
    start = 0
    first: Layout | None = None
    for i, s in enumerate(outs):
        if name == "unbind":
            ctx.set_output(i, [x for d, x in enumerate(lays) if d != dim])
            continue
        part = None if lay is None else lay[:, start : start + s[dim]]
        if equal and part is not None:
            if first is None:
                first = part
            else:
                ctx.unify(first, part, "chunk parts must keep equal sizes")
        ctx.set_output(i, [part if d == dim else x for d, x in enumerate(lays)])
        start += s[dim]


@_rule("__getitem__", "narrow", "select")
def getitem(ctx: OpContext) -> None:
    """Indexing: full slices keep channels; anything positional on a channel dim keeps them."""
    src = ctx.node.inputs[0]
    lays, shape = ctx.layouts(src), ctx.shape(src)
    out_nd = len(ctx.shape(ctx.node.outputs[0]))
    name = ctx.node.target
    if name == "narrow" or name == "select":
        d = _dim(ctx.arg(1, "dim"), len(shape))
        ctx.block(lays[d], f"{name} picks channels by position")
        out = list(lays)
        out[d] = None
        if name == "select":
            del out[d]
        ctx.set_output(0, out)
        return
    idx = ctx.arg(1)
    items = list(idx) if isinstance(idx, tuple) else [idx]
    if any(not (it is None or it is Ellipsis or isinstance(it, (int, slice))) for it in items):
        for lay in lays:
            ctx.block(lay, "advanced indexing")
        ctx.set_output(0, [None] * out_nd)
        return
    used = sum(1 for it in items if it is not None and it is not Ellipsis)
    if Ellipsis in items:
        k = items.index(Ellipsis)
        items[k : k + 1] = [slice(None)] * (len(shape) - used)
    else:
        items += [slice(None)] * (len(shape) - used)
    out = []
    d = 0
    for it in items:
        if it is None:
            out.append(None)
            continue
        if isinstance(it, slice) and range(*it.indices(shape[d])) == range(shape[d]):
            out.append(lays[d])
        else:
            ctx.block(lays[d], "indexing picks channels by position")
            if isinstance(it, slice):
                out.append(None)
        d += 1
    ctx.set_output(0, out if len(out) == out_nd else [None] * out_nd)


@_rule("pad")
def pad(ctx: OpContext) -> None:
    """Constant padding of a channel dim adds positions with no channel (zeros)."""
    src = ctx.node.inputs[0]
    lays, shape = ctx.layouts(src), ctx.shape(src)
    widths = list(ctx.arg(1, "pad"))
    mode = ctx.arg(2, "mode", "constant")
    out = list(lays)
    for k in range(len(widths) // 2):
        d = len(shape) - 1 - k
        lo, hi = widths[2 * k], widths[2 * k + 1]
        if out[d] is None or (lo == 0 and hi == 0):
            continue
        if mode != "constant" or lo < 0 or hi < 0:
            ctx.block(out[d], f"{mode} padding / cropping of channels")
            out[d] = None
            continue
        out[d] = np.concatenate([untracked(lo), out[d], untracked(hi)], axis=1)
    ctx.set_output(0, out)


@_rule("matmul", "__matmul__", "bmm", "mm")
def matmul(ctx: OpContext) -> None:
    """``a @ b``: the contracted dims shrink together; batch dims broadcast."""
    a, b = ctx.node.inputs[0], ctx.node.inputs[1]
    la, lb = ctx.layouts(a), ctx.layouts(b)
    if len(la) == 1 or len(lb) == 1:
        ctx.unify(la[-1], lb[-2] if len(lb) > 1 else lb[-1])
        out = la[:-1] if len(lb) == 1 else [*lb[:-2], lb[-1]]
        ctx.set_output(0, out)
        return
    ctx.unify(la[-1], lb[-2])
    batch = _broadcast(ctx, ctx.shape(a)[:-2], la[:-2], ctx.shape(b)[:-2], lb[:-2])
    ctx.set_output(0, [*batch, la[-2], lb[-1]])


def _broadcast(
    ctx: OpContext, sa: tuple[int, ...], la: LayoutList, sb: tuple[int, ...], lb: LayoutList
) -> LayoutList:
    n = max(len(sa), len(sb))
    out: LayoutList = []
    for k in range(n):
        i, j = k - (n - len(sa)), k - (n - len(sb))
        x = la[i] if i >= 0 and sa[i] > 1 else None
        y = lb[j] if j >= 0 and sb[j] > 1 else None
        if x is not None and y is not None:
            ctx.unify(x, y)
        elif (x is None) != (y is None) and i >= 0 and j >= 0 and sa[i] == sb[j]:
            ctx.unify(x, y)
        out.append(x if x is not None else y)
    return out


@_rule("linear")
def linear(ctx: OpContext) -> None:
    """``F.linear(x, W, b)`` called directly: W's columns read x's last dim."""
    x, w = ctx.layouts(ctx.node.inputs[0]), ctx.layouts(ctx.node.inputs[1])
    ctx.unify(x[-1], w[1])
    if len(ctx.node.inputs) > 2:
        ctx.unify(w[0], ctx.layouts(ctx.node.inputs[2])[0])
    ctx.set_output(0, [*x[:-1], w[0]])


@_rule("embedding")
def embedding(ctx: OpContext) -> None:
    """``F.embedding(ids, W)`` called directly: output features are W's columns."""
    ids, w = ctx.layouts(ctx.node.inputs[0]), ctx.layouts(ctx.node.inputs[1])
    ctx.block(w[0], "embedding rows are addressed by token id")
    ctx.set_output(0, [*ids, w[1]])


@_rule("prelu")
def prelu(ctx: OpContext) -> None:
    """``F.prelu(x, w)``: a per-channel slope (dim 1) unless it is a single shared one."""
    x, w = ctx.layouts(ctx.node.inputs[0]), ctx.layouts(ctx.node.inputs[1])
    if ctx.shape(ctx.node.inputs[1])[0] > 1:
        ctx.unify(x[1], w[0])
    ctx.set_output(0, x)


@_rule("scaled_dot_product_attention")
def sdpa(ctx: OpContext) -> None:
    """``F.scaled_dot_product_attention(q, k, v)``: q / k features shrink together."""
    q, k, v = (ctx.layouts(i) for i in ctx.node.inputs[:3])
    ctx.unify(q[-1], k[-1])
    for d in range(len(q) - 2):
        ctx.unify(q[d], k[d])
        ctx.unify(q[d], v[d])
    ctx.set_output(0, [*q[:-1], v[-1]])


# Ops whose result carries no channels whatever their inputs are (sizes, indices, masks).
NO_CHANNEL_OUTPUT = {
    "argmax",
    "argmin",
    "argsort",
    "topk",
    "nonzero",
    "numel",
    "size",
    "all",
    "any",
}
for _name in NO_CHANNEL_OUTPUT:
    FUNCTION_RULES[_name] = lambda ctx: None
