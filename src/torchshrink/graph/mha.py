"""A ``nn.MultiheadAttention`` whose head count no longer ties to its embedding size.

PyTorch's ``F.multi_head_attention_forward`` derives the head size from the *input* width
(``head_dim = embed_dim // num_heads``) and reads Q, K and V from one ``in_proj_weight`` of
``3 * embed_dim`` rows, so removing heads while keeping the model width (the residual stream)
cannot run through it. After head removal the module's class is switched to this subclass:
same parameters and state-dict keys, a plain forward that works for any
``num_heads * head_dim``. It stays an ``nn.MultiheadAttention`` for ``isinstance`` checks, and
``_qkv_same_embed_dim`` is ``False`` so that ``nn.TransformerEncoderLayer`` never takes its
fused fast path (which assumes the stock layout).

Example:
    >>> import torch
    >>> m = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    >>> to_pruned(m).num_heads, m(torch.zeros(1, 3, 8), torch.zeros(1, 3, 8),
    ...                              torch.zeros(1, 3, 8))[0].shape
    (2, torch.Size([1, 3, 8]))
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from torchshrink.core.modulestate import register_module_state
from torchshrink.core.modulestate_nn import MHA_ATTRS


class PrunedMultiheadAttention(nn.MultiheadAttention):
    """Multi-head attention with ``num_heads * head_dim`` inner width (any input width).

    Usually made by :func:`to_pruned`; the constructor exists so that model files can rebuild
    it (the recorded attributes and tensors then give it its pruned shapes).
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        *,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        batch_first: bool = False,
    ) -> None:
        # Built at its inner width so the parameters carry the stock names (in_proj_weight,
        # in_proj_bias, out_proj); embed_dim / kdim / vdim are restored by the model file.
        super().__init__(
            num_heads * head_dim,
            num_heads,
            dropout=dropout,
            bias=bias,
            add_bias_kv=add_bias_kv,
            add_zero_attn=add_zero_attn,
            batch_first=batch_first,
        )
        self._qkv_same_embed_dim = False

    def forward(  # type: ignore[override]
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        if self.batch_first and batched:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        lq, b, _ = query.shape  # (Lq, B, E_in)
        lk = key.shape[0]
        h, hd = self.num_heads, self.head_dim
        assert self.in_proj_weight is not None
        wq, wk, wv = self.in_proj_weight.chunk(3)
        bq, bk, bv = (
            self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)
        )
        q = F.linear(query, wq, bq).reshape(lq, b * h, hd).transpose(0, 1)  # (B*H, Lq, hd)
        k = F.linear(key, wk, bk).reshape(lk, b * h, hd).transpose(0, 1)  # (B*H, Lk, hd)
        v = F.linear(value, wv, bv).reshape(lk, b * h, hd).transpose(0, 1)  # (B*H, Lk, hd)
        scores = q @ k.transpose(1, 2) * hd**-0.5  # (B*H, Lq, Lk)
        if is_causal and attn_mask is None:
            attn_mask = torch.ones(lq, lk, dtype=torch.bool, device=q.device).triu(1)
        if attn_mask is not None:
            mask = attn_mask if attn_mask.dim() == 3 else attn_mask.unsqueeze(0)
            scores = _apply_mask(scores, mask)
        if key_padding_mask is not None:
            kpm = key_padding_mask.reshape(b, 1, 1, lk).expand(b, h, 1, lk).reshape(b * h, 1, lk)
            scores = _apply_mask(scores, kpm)
        attn = scores.softmax(dim=-1)  # (B*H, Lq, Lk)
        attn = F.dropout(attn, self.dropout, self.training)
        out = (attn @ v).transpose(0, 1).reshape(lq, b, h * hd)  # (Lq, B, H*hd)
        out = self.out_proj(out)  # (Lq, B, E_out)
        if self.batch_first and batched:
            out = out.transpose(0, 1)
        if not batched:
            out = out.squeeze(1)
        weights = None
        if need_weights:
            weights = attn.reshape(b, h, lq, lk)
            weights = weights.mean(dim=1) if average_attn_weights else weights
            if not batched:
                weights = weights.squeeze(0)
        return out, weights


def _apply_mask(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return scores.masked_fill(mask, float("-inf"))
    return scores + mask


def to_pruned(module: nn.MultiheadAttention) -> PrunedMultiheadAttention:
    """Switch ``module`` (in place) to :class:`PrunedMultiheadAttention` and fix its attributes.

    The head size is kept; ``num_heads`` is recomputed from ``in_proj_weight``'s rows and
    ``embed_dim`` becomes the output width.

    Example:
        >>> m = to_pruned(torch.nn.MultiheadAttention(8, 4))
        >>> m.head_dim, m.num_heads
        (2, 4)
    """
    assert module.in_proj_weight is not None
    inner = module.in_proj_weight.shape[0] // 3
    module.__class__ = PrunedMultiheadAttention
    module.num_heads = inner // module.head_dim
    module.embed_dim = module.out_proj.weight.shape[0]
    module.kdim = module.vdim = module.in_proj_weight.shape[1]
    module._qkv_same_embed_dim = False
    module.out_proj.out_features, module.out_proj.in_features = module.out_proj.weight.shape
    return module  # type: ignore[return-value]


def _pruned_mha_ctor_values(m: nn.Module) -> dict[str, Any]:
    return {
        "bias": getattr(m, "in_proj_bias", None) is not None,
        "add_bias_kv": getattr(m, "bias_k", None) is not None,
        "add_zero_attn": bool(getattr(m, "add_zero_attn", False)),
    }


register_module_state(
    PrunedMultiheadAttention,
    attrs=MHA_ATTRS,
    ctor=(
        "num_heads",
        "head_dim",
        "dropout",
        "bias",
        "add_bias_kv",
        "add_zero_attn",
        "batch_first",
    ),
    derived=_pruned_mha_ctor_values,
)
