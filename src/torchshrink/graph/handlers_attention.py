"""Op handlers for multi-head attention: heads are the units that shrink.

Three forms are handled, each as one node of the graph:

* attention built from separate q / k / v / output ``nn.Linear`` layers (the zoo ViT's
  :class:`~torchshrink.core.zoo.vit.SelfAttention`): :class:`QKVAttentionHandler`, which users
  can subclass for their own attention modules by naming the four layers and the heads
  attribute;
* ``nn.MultiheadAttention`` (packed ``in_proj_weight``), see :mod:`torchshrink.graph.mha`;
* Hugging Face BERT attention (``BertAttention``: self-attention, output dense, residual add and
  LayerNorm), registered by class name so that ``transformers`` is never imported here.

A head is one channel of a *heads* space; its ``head_dim`` rows of Q, K and V (and columns of
the output projection) are removed together. The input width and the output width are their
own spaces (usually tied to the residual stream by the surrounding add).

Example:
    >>> from torchshrink.core.zoo.vit import SelfAttention
    >>> from torchshrink.graph.handlers import get_op_handler
    >>> type(get_op_handler(SelfAttention(8, heads=2))).__name__
    'QKVAttentionHandler'
"""

from __future__ import annotations

from typing import Any

import numpy as np
from torch import nn

from torchshrink.core.zoo.vit import SelfAttention
from torchshrink.graph.handlers import OpContext, OpHandler, register_op_handler
from torchshrink.graph.handlers_nn import fix_linear
from torchshrink.graph.mha import to_pruned


@register_op_handler(SelfAttention)
class QKVAttentionHandler(OpHandler):
    """Self-attention from four Linear layers; override the class attributes for other names.

    The module's ``forward`` must split heads with ``reshape(..., heads, -1)`` (or use the
    ``heads`` attribute) so that it keeps working when ``heads`` shrinks.

    Example:
        >>> class MyAttentionHandler(QKVAttentionHandler):
        ...     q, k, v, out, heads_attr = "to_q", "to_k", "to_v", "to_out", "n_heads"
    """

    q, k, v, out, heads_attr = "q", "k", "v", "proj", "heads"

    def propagate(self, ctx: OpContext) -> None:
        m: Any = ctx.module
        x = ctx.input_layouts(0)
        heads = int(getattr(m, self.heads_attr))
        lq, lv, lo = (m.get_submodule(n) for n in (self.q, self.v, self.out))
        qk_dim, v_dim = lq.out_features // heads, lv.out_features // heads
        hs_qk = ctx.heads(heads, qk_dim)
        sid = int(hs_qk[0, 0])
        hs_v = hs_qk[:, ::qk_dim].repeat(v_dim, axis=1)  # same heads space, v's head size
        assert int(hs_v[0, 0]) == sid
        out = ctx.new_space(lo.out_features, "out")
        for name, hs in ((self.q, hs_qk), (self.k, hs_qk), (self.v, hs_v)):
            ctx.param(f"{name}.weight", 1, x[-1], role="in")
            ctx.param(f"{name}.weight", 0, hs, role="out")
            if m.get_submodule(name).bias is not None:
                ctx.param(f"{name}.bias", 0, hs, role="out")
        ctx.param(f"{self.out}.weight", 1, hs_v, role="in")
        ctx.param(f"{self.out}.weight", 0, out, role="out")
        if lo.bias is not None:
            ctx.param(f"{self.out}.bias", 0, out, role="out")
        ctx.set_output(0, [*x[:-1], out])

    def update(self, module: Any) -> None:
        lq = module.get_submodule(self.q)
        head_dim = lq.out_features // int(getattr(module, self.heads_attr))
        setattr(module, self.heads_attr, lq.weight.shape[0] // head_dim)
        for name in (self.q, self.k, self.v, self.out):
            fix_linear(module.get_submodule(name))


@register_op_handler(nn.MultiheadAttention)
class MultiheadAttentionHandler(OpHandler):
    """``nn.MultiheadAttention`` with a packed ``in_proj_weight`` (q, k, v of one width).

    Query, key and value widths shrink together (they share ``in_proj_weight``'s columns).
    Removing heads switches the module to :class:`~torchshrink.graph.mha.PrunedMultiheadAttention`.
    Separate ``q_proj_weight`` / ``k_proj_weight`` / ``v_proj_weight`` and ``bias_k`` / ``bias_v``
    are not supported: their channels are kept.
    """

    def propagate(self, ctx: OpContext) -> None:
        m = ctx.module
        assert isinstance(m, nn.MultiheadAttention)
        ids = [ctx.tensor_arg(i, n) for i, n in enumerate(("query", "key", "value"))]
        q, k, v = (ctx.layouts(i) if i is not None else None for i in ids)
        assert q is not None and k is not None and v is not None
        if m.in_proj_weight is None or m.bias_k is not None:
            for lay in (q[-1], k[-1], v[-1]):
                ctx.block(lay, "MultiheadAttention with separate projections or bias_k/bias_v")
            return
        ctx.unify(q[-1], k[-1], "query, key and value share in_proj_weight's columns")
        ctx.unify(q[-1], v[-1], "query, key and value share in_proj_weight's columns")
        hs = ctx.heads(m.num_heads, m.head_dim)
        rows = np.tile(hs, (1, 3))  # q, k and v rows, head-major within each
        out = ctx.new_space(m.out_proj.out_features, "out")
        ctx.param("in_proj_weight", 0, rows, role="out")
        ctx.param("in_proj_weight", 1, q[-1], role="in")
        if m.in_proj_bias is not None:
            ctx.param("in_proj_bias", 0, rows, role="out")
        ctx.param("out_proj.weight", 1, hs, role="in")
        ctx.param("out_proj.weight", 0, out, role="out")
        if m.out_proj.bias is not None:
            ctx.param("out_proj.bias", 0, out, role="out")
        ctx.set_output(0, [*q[:-1], out])

    def update(self, module: nn.Module) -> nn.Module:
        assert isinstance(module, nn.MultiheadAttention)
        return to_pruned(module)


@register_op_handler("transformers.models.bert.modeling_bert.BertAttention")
class BertAttentionHandler(OpHandler):
    """HF ``BertAttention``: heads of ``self.query/key/value``, ``output.dense`` columns.

    The output is ``LayerNorm(dense(context) + hidden_states)``, so the output width is the
    input width (the residual stream); ``output.dense`` rows and the LayerNorm follow it.
    """

    def propagate(self, ctx: OpContext) -> None:
        m: Any = ctx.module
        hidden = ctx.tensor_arg(0, "hidden_states")
        assert hidden is not None
        x = ctx.layouts(hidden)
        sa = m.get_submodule("self")
        if getattr(m, "is_cross_attention", False):
            ctx.block(x[-1], "BERT cross-attention")
            return
        hs = ctx.heads(sa.num_attention_heads, sa.attention_head_size)
        for name in ("query", "key", "value"):
            ctx.param(f"self.{name}.weight", 1, x[-1], role="in")
            ctx.param(f"self.{name}.weight", 0, hs, role="out")
            ctx.param(f"self.{name}.bias", 0, hs, role="out")
        ctx.param("output.dense.weight", 1, hs, role="in")
        ctx.param("output.dense.weight", 0, x[-1], role="out")
        ctx.param("output.dense.bias", 0, x[-1], role="out")
        ctx.param("output.LayerNorm.weight", 0, x[-1], role="through")
        ctx.param("output.LayerNorm.bias", 0, x[-1], role="through")
        ctx.set_output(0, x)

    def update(self, module: Any) -> None:
        sa = module.get_submodule("self")
        sa.num_attention_heads = sa.query.weight.shape[0] // sa.attention_head_size
        sa.all_head_size = sa.num_attention_heads * sa.attention_head_size
        for lin in (sa.query, sa.key, sa.value, module.get_submodule("output.dense")):
            fix_linear(lin)
        ln = module.get_submodule("output.LayerNorm")
        ln.normalized_shape = tuple(ln.weight.shape)
