"""Merge a BERT self-attention's query, key and value Linears into one ``Linear(d, 3 d)``.

The three projections read the same tensor. Exported to ONNX as three MatMuls, ONNX Runtime's
dynamic int8 quantizes that tensor three times (one ``DynamicQuantizeLinear`` per MatMul) and
runs three narrow GEMMs; one merged MatMul quantizes it once and runs one GEMM three times as
wide. ``concat(x W_q^T + b_q, x W_k^T + b_k, x W_v^T + b_v) = x [W_q; W_k; W_v]^T + [b_q; b_k;
b_v]``, so the rewrite is exact up to float rounding (the GEMM may sum in another order).
Measured on all-MiniLM-L6-v2 with ONNX Runtime 1.32 (``benchmarks/quant_minilm.py``): no
speed gain; its quantizer already shares one ``DynamicQuantizeLinear`` among Q, K and V, the
wide GEMM costs what the three did, and the ``Split`` of its output adds ~3%.

:func:`fuse_qkv` replaces every Hugging Face BERT-style self-attention (a module with ``query``,
``key`` and ``value`` Linears of the same input width, ``num_attention_heads``,
``attention_head_size``, ``scaling`` and ``config``; not a decoder) by
:class:`FusedQKVSelfAttention`. Weights are copied as they are, so a model smoothed or with
its attention scale folded into the query (:mod:`torchshrink.quantize.smooth`) keeps both; a
smoothing ``ScaledInputLinear`` shared by Q, K and V (one ``inv_scale`` tensor) stays in front
of the merged Linear.

Example:
    >>> import torch
    >>> from transformers import BertConfig, BertModel
    >>> cfg = BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
    ...                  intermediate_size=16, vocab_size=20)
    >>> bert = BertModel(cfg).eval()
    >>> fused = fuse_qkv(bert)
    >>> ids = torch.tensor([[1, 2, 3]])
    >>> type(fused.encoder.layer[0].attention.self).__name__
    'FusedQKVSelfAttention'
    >>> bool(torch.allclose(fused(ids).last_hidden_state, bert(ids).last_hidden_state,
    ...                     atol=1e-5))
    True
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from torchshrink.quantize.smooth import ScaledInputLinear


class FusedQKVSelfAttention(nn.Module):
    """BERT self-attention with one ``qkv`` Linear; same outputs as the module it replaces.

    The forward follows ``transformers``' ``BertSelfAttention`` (encoder use: no key / value
    cache) and calls the attention function the model's config names (``eager``, ``sdpa``).

    Attributes:
        qkv: ``Linear(hidden, 3 * all_head_size)`` (rows: query, key, value), or a
            ``ScaledInputLinear`` around it when the three inputs were smoothed.

    Example:
        >>> from transformers import BertConfig
        >>> from transformers.models.bert.modeling_bert import BertSelfAttention
        >>> cfg = BertConfig(hidden_size=8, num_attention_heads=2)
        >>> m = FusedQKVSelfAttention.from_attention(BertSelfAttention(cfg).eval())
        >>> m(torch.randn(1, 3, 8))[0].shape
        torch.Size([1, 3, 8])
    """

    def __init__(self, qkv: nn.Module, *, source: Any) -> None:
        super().__init__()
        self.qkv = qkv
        self.config: Any = source.config
        self.num_attention_heads: int = source.num_attention_heads
        self.attention_head_size: int = source.attention_head_size
        self.all_head_size: int = source.all_head_size
        self.scaling: float = source.scaling
        self.dropout: nn.Dropout = source.dropout
        self.is_decoder = getattr(source, "is_decoder", False)
        self.is_causal = getattr(source, "is_causal", False)
        self.layer_idx = getattr(source, "layer_idx", None)

    @classmethod
    def from_attention(cls, attn: Any) -> FusedQKVSelfAttention:
        """The merged module of one self-attention (its weights copied, ``attn`` unchanged)."""
        parts = [attn.query, attn.key, attn.value]
        scaled = [p for p in parts if isinstance(p, ScaledInputLinear)]
        inv = scaled[0].inv_scale if scaled else None
        linears: list[nn.Linear] = [p.linear if isinstance(p, ScaledInputLinear) else p
                                    for p in parts]  # fmt: skip
        first = linears[0]
        qkv = nn.Linear(first.in_features, sum(lin.out_features for lin in linears),
                        bias=first.bias is not None, device=first.weight.device,
                        dtype=first.weight.dtype)  # fmt: skip
        with torch.no_grad():
            qkv.weight.copy_(torch.cat([lin.weight for lin in linears]))  # (3 H d, hidden)
            if qkv.bias is not None:
                qkv.bias.copy_(torch.cat([lin.bias for lin in linears]))  # (3 H d,)
        merged: nn.Module = ScaledInputLinear(qkv, inv.clone()) if inv is not None else qkv
        return cls(merged, source=attn)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        cache: Any = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        from transformers.models.bert.modeling_bert import (
            ALL_ATTENTION_FUNCTIONS,
            eager_attention_forward,
        )

        # fuse_qkv never merges a decoder's attention, the only kind that gets a cache.
        assert cache is None and kwargs.pop("past_key_values", None) is None
        input_shape = hidden_states.shape[:-1]  # (B, L)
        hidden_shape = (*input_shape, -1, self.attention_head_size)
        # (B, L, 3 H d) -> three (B, L, H d) -> each (B, H, L, d), as BertSelfAttention does.
        q, k, v = self.qkv(hidden_states).split(self.all_head_size, dim=-1)
        q, k, v = (t.reshape(hidden_shape).transpose(1, 2) for t in (q, k, v))
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        out, weights = attention(
            self, q, k, v, attention_mask,
            dropout=0.0 if not self.training else self.dropout.p, scaling=self.scaling, **kwargs,
        )  # fmt: skip
        return out.reshape(*input_shape, -1).contiguous(), weights  # (B, L, H d)


def _fusable(m: nn.Module) -> bool:
    parts = [getattr(m, n, None) for n in ("query", "key", "value")]
    inner = [p.linear if isinstance(p, ScaledInputLinear) else p for p in parts]
    if not all(isinstance(p, nn.Linear) for p in inner) or getattr(m, "is_decoder", True):
        return False
    widths = {p.in_features for p in inner if isinstance(p, nn.Linear)}
    scales = [p.inv_scale for p in parts if isinstance(p, ScaledInputLinear)]
    # Smoothed inputs merge only when all three share one scale tensor (smooth() makes them so).
    shared = not scales or (len(scales) == 3 and all(s is scales[0] for s in scales))
    needed = ("num_attention_heads", "attention_head_size", "all_head_size", "scaling", "config")
    return len(widths) == 1 and shared and all(hasattr(m, n) for n in needed)


def fuse_qkv(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every BERT-style self-attention's Q, K, V merged into one Linear.

    ``model`` is not changed. Attention modules that do not fit (decoders, other layouts,
    smoothed with different scales) are left as they are.

    Args:
        model: a float model, e.g. a ``transformers`` ``BertModel`` or a module holding one.

    Returns:
        The merged copy (in the same train / eval mode).

    Example:
        >>> from transformers import BertConfig, BertModel
        >>> cfg = BertConfig(hidden_size=8, num_hidden_layers=2, num_attention_heads=2)
        >>> fused = fuse_qkv(BertModel(cfg))
        >>> sum(isinstance(m, FusedQKVSelfAttention) for m in fused.modules())
        2
    """
    out = copy.deepcopy(model)
    targets = [name for name, m in out.named_modules() if name and _fusable(m)]
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = out.get_submodule(parent_name) if parent_name else out
        old = parent.get_submodule(child)
        new = FusedQKVSelfAttention.from_attention(old)
        new.train(old.training)
        setattr(parent, child, new)
    return out
