"""Built-in op handlers for ``torch.nn`` layers: Linear, convolutions, norms, Embedding.

Each handler declares which weight dimensions produce channels (``out``: a Linear's rows, a
conv's filters), read them (``in``: a Linear's columns, a conv's input channels) or act per
channel (``through``: BatchNorm / LayerNorm / GroupNorm scales, depthwise filters), and fixes
the layer's attributes after removal.

Example:
    >>> from torch import nn
    >>> from torchshrink.graph.handlers import get_op_handler
    >>> type(get_op_handler(nn.Conv2d(3, 8, 3))).__name__
    'ConvHandler'
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd
from torch.nn.modules.instancenorm import _InstanceNorm

from torchshrink.graph.handlers import OpContext, OpHandler, Role, register_op_handler
from torchshrink.graph.spaces import Layout


def fix_linear(m: nn.Linear) -> None:
    """Set ``in_features`` / ``out_features`` from the (sliced) weight."""
    m.out_features, m.in_features = m.weight.shape


@register_op_handler(nn.Linear)
class LinearHandler(OpHandler):
    """``y = x W^T + b``: W's rows make a new space, its columns read x's last dim."""

    def propagate(self, ctx: OpContext) -> None:
        m = ctx.module
        assert isinstance(m, nn.Linear)
        x = ctx.input_layouts(0)
        out = ctx.new_space(m.out_features, "out")
        ctx.param("weight", 0, out, role="out")
        ctx.param("weight", 1, x[-1], role="in")
        if m.bias is not None:
            ctx.param("bias", 0, out, role="out")
        ctx.set_output(0, [*x[:-1], out])

    def update(self, module: nn.Module) -> None:
        assert isinstance(module, nn.Linear)
        fix_linear(module)


def _group_rows(ctx: OpContext, lay: Layout | None, groups: int) -> Layout | None:
    """Tie channel ``j`` of every group to channel ``j`` of group 0; return group 0's layout."""
    if lay is None:
        return None
    rows = np.split(lay, groups, axis=1)
    for row in rows[1:]:
        ctx.unify(rows[0], row, f"grouped layer '{ctx.name}' keeps its groups equal")
    return rows[0]


@register_op_handler(_ConvNd)
class ConvHandler(OpHandler):
    """Conv1d/2d/3d, including depthwise and grouped convolutions.

    * ``groups == 1``: filters make a new space, weight dim 1 reads the input channels.
    * depthwise (``groups == in_channels``): output channel ``c * m + k`` comes from input
      channel ``c`` (``m = out / in``), so outputs stay in the input's space.
    * other grouped convs: channel ``j`` of every input group shrinks together, and so does
      filter ``j`` of every output group, so the group count stays valid.
    """

    def propagate(self, ctx: OpContext) -> None:
        m = ctx.module
        assert isinstance(m, _ConvNd)
        if isinstance(m, _ConvTransposeNd):
            return self._transposed(ctx, m)
        x = ctx.input_layouts(0)
        cdim = len(x) - 1 - len(m.kernel_size)  # 1 when batched, 0 when not
        spatial = [None] * len(m.kernel_size)
        g = m.groups
        out: Layout | None
        if g == 1:
            out = ctx.new_space(m.out_channels, "out")
            ctx.param("weight", 1, x[cdim], role="in")
        elif g == m.in_channels:
            # Outputs stay tied to input channels; with no channel space on the input (a
            # model input) there is nothing to shrink.
            mult = m.out_channels // g
            xc = x[cdim]
            out = None if xc is None else np.repeat(xc, mult, axis=1)
        else:
            ctx.param("weight", 1, _group_rows(ctx, x[cdim], g), role="in")
            per = ctx.new_space(m.out_channels // g, "out per group")
            out = np.tile(per, (1, g))
        role: Role = "through" if g == m.in_channels and g > 1 else "out"
        ctx.param("weight", 0, out, role=role)
        if m.bias is not None:
            ctx.param("bias", 0, out, role=role)
        ctx.set_output(0, [*x[:cdim], out, *spatial])

    def _transposed(self, ctx: OpContext, m: _ConvTransposeNd) -> None:
        x = ctx.input_layouts(0)
        cdim = len(x) - 1 - len(m.kernel_size)
        g = m.groups
        # weight: (C_in, C_out / groups, *k)
        out: Layout | None = None
        if g == 1:
            ctx.param("weight", 0, x[cdim], role="in")
            out = ctx.new_space(m.out_channels, "out")
            ctx.param("weight", 1, out, role="out")
        else:
            ctx.block(x[cdim], "grouped transposed convolution")
        if m.bias is not None:
            ctx.param("bias", 0, out, role="out")
        ctx.set_output(0, [*x[:cdim], out, *([None] * len(m.kernel_size))])

    def update(self, module: nn.Module) -> None:
        assert isinstance(module, _ConvNd)
        w = module.weight
        if isinstance(module, _ConvTransposeNd):
            module.in_channels, module.out_channels = w.shape[0], w.shape[1] * module.groups
            return
        if module.groups == module.in_channels and module.groups > 1:
            mult = module.out_channels // module.groups
            module.out_channels = w.shape[0]
            module.groups = module.in_channels = w.shape[0] // mult
            return
        module.out_channels = w.shape[0]
        module.in_channels = w.shape[1] * module.groups


@register_op_handler(_BatchNorm, _InstanceNorm)
class BatchNormHandler(OpHandler):
    """Per-channel normalization over dim 1: weight, bias and running stats follow it."""

    def propagate(self, ctx: OpContext) -> None:
        x = ctx.input_layouts(0)
        c = x[1] if len(x) > 1 else x[0]
        for name in ("weight", "bias", "running_mean", "running_var"):
            t = getattr(ctx.module, name, None)
            if t is not None:
                ctx.param(name, 0, c, role="through")
        ctx.set_output(0, x)

    def update(self, module: Any) -> None:
        t = module.weight if module.weight is not None else module.running_mean
        if t is not None:
            module.num_features = t.shape[0]


@register_op_handler(nn.LayerNorm, nn.RMSNorm)
class LayerNormHandler(OpHandler):
    """Normalization over the last ``len(normalized_shape)`` dims; its affine params follow."""

    def propagate(self, ctx: OpContext) -> None:
        m = ctx.module
        x = ctx.input_layouts(0)
        k = len(m.normalized_shape)  # type: ignore[union-attr, arg-type]
        if m.weight is None:  # type: ignore[union-attr]
            for lay in x[-k:]:
                ctx.block(lay, "normalized_shape of a LayerNorm without affine parameters")
        for i, lay in enumerate(x[-k:]):
            for name in ("weight", "bias"):
                if getattr(m, name, None) is not None:
                    ctx.param(name, i, lay, role="through")
        ctx.set_output(0, x)

    def update(self, module: Any) -> None:
        if module.weight is not None:
            module.normalized_shape = tuple(module.weight.shape)


@register_op_handler(nn.GroupNorm)
class GroupNormHandler(OpHandler):
    """GroupNorm: channel ``j`` of every group shrinks together, so groups stay equal."""

    def propagate(self, ctx: OpContext) -> None:
        m = ctx.module
        assert isinstance(m, nn.GroupNorm)
        x = ctx.input_layouts(0)
        c = x[1] if len(x) > 1 else x[0]
        _group_rows(ctx, c, m.num_groups)
        if m.affine:
            ctx.param("weight", 0, c, role="through")
            ctx.param("bias", 0, c, role="through")
        ctx.set_output(0, x)

    def update(self, module: nn.Module) -> None:
        assert isinstance(module, nn.GroupNorm)
        if module.affine:
            module.num_channels = module.weight.shape[0]


@register_op_handler(nn.Embedding)
class EmbeddingHandler(OpHandler):
    """Embedding: the feature columns make a new space; token rows are never removed."""

    def propagate(self, ctx: OpContext) -> None:
        m = ctx.module
        assert isinstance(m, nn.Embedding)
        ids = ctx.input_layouts(0)
        out = ctx.new_space(m.embedding_dim, "features")
        ctx.param("weight", 1, out, role="out")
        ctx.set_output(0, [*ids, out])

    def update(self, module: nn.Module) -> None:
        assert isinstance(module, nn.Embedding)
        module.embedding_dim = module.weight.shape[1]
