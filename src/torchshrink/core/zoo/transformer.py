"""A small text transformer encoder classifier over token ids.

Example:
    >>> from torchshrink.core.zoo import create_zoo_model
    >>> sum(p.numel() for p in create_zoo_model("transformer").parameters())
    541442
"""

from __future__ import annotations

import torch
from torch import nn

from torchshrink.core.errors import ConfigError, ShapeError
from torchshrink.core.zoo import register_zoo_model
from torchshrink.core.zoo._common import check_positive, example_generator, param_dtype_device


class TextTransformer(nn.Module):
    """Token + learned position embeddings, ``nn.TransformerEncoderLayer`` blocks, mean pool, head.

    The layers are pre-norm (``norm_first=True``), GELU, ``batch_first=True``, feed-forward width
    ``mlp_ratio * dim``. Unlike the ViT of the zoo (attention from plain Linear layers), this
    model uses PyTorch's own ``nn.MultiheadAttention`` inside the encoder layers, so the zoo
    covers both forms. Module names: ``embed``, parameter ``pos_embed`` (1, max_len, D),
    ``layers.{i}`` (``self_attn``, ``linear1``, ``linear2``, ``norm1``, ``norm2``), ``norm``,
    ``head``.

    Measurement caveat: in eval mode without grad, PyTorch runs these layers through a fused
    fast path (``torch._transformer_encoder_layer_fwd``) that ``torch.utils.flop_counter``
    does not count, and its SDPA CPU kernel is not counted either. Count MACs with
    ``torch.backends.mha.set_fastpath_enabled(False)`` and the ``MATH`` SDPA backend
    (``torch.nn.attention.sdpa_kernel``); forward hooks on a layer also disable its fast path.

    Parameters: ``V D + L D + depth (4 D^2 + 4 D + 2 D F + F + D + 4 D) + 2 D + D K + K`` with
    ``V = vocab_size``, ``L = max_len``, ``F = mlp_ratio D``, ``K = num_classes``.

    Example:
        >>> m = TextTransformer(vocab_size=50, max_len=16, dim=32, depth=1, heads=2, num_classes=3)
        >>> m(m.example_inputs(2)).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        *,
        vocab_size: int = 1000,
        max_len: int = 128,
        dim: int = 128,
        depth: int = 2,
        heads: int = 4,
        num_classes: int = 2,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.max_len = max_len
        self.num_classes = num_classes
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, max_len, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim,
                heads,
                dim_feedforward=mlp_ratio * dim,
                dropout=dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        if length > self.max_len:
            raise ShapeError(
                f"TextTransformer.pos_embed: sequence length {length} exceeds max_len={self.max_len}"
            )
        x = self.embed(tokens) + self.pos_embed[:, :length]  # (B, L, D)
        for layer in self.layers:
            x = layer(x)  # (B, L, D)
        x = self.norm(x).mean(dim=1)  # (B, D)
        return self.head(x)  # (B, num_classes)

    def example_inputs(self, batch_size: int = 1) -> torch.Tensor:
        """Seeded random token ids, LongTensor ``(batch_size, max_len)`` in ``[0, vocab_size)``."""
        _, device = param_dtype_device(self)
        ids = torch.randint(
            0, self.vocab_size, (batch_size, self.max_len), generator=example_generator()
        )  # (B, L)
        return ids.to(device)


@register_zoo_model("transformer")
def transformer(
    *,
    vocab_size: int = 1000,
    max_len: int = 128,
    dim: int = 128,
    depth: int = 2,
    heads: int = 4,
    num_classes: int = 2,
    mlp_ratio: int = 4,
    dropout: float = 0.0,
) -> TextTransformer:
    """A 2-layer, 128-wide text encoder classifier (binary by default).

    541,442 parameters with the defaults (128,000 token embedding, 16,384 positions, 198,272
    per layer, 256 final norm, 258 head). See :class:`TextTransformer` for the formula.

    Raises:
        ConfigError: an option is not a positive integer, ``heads`` does not divide ``dim``,
            or ``dropout`` is outside ``[0, 1)``.

    Example:
        >>> transformer(num_classes=4).head.out_features
        4
    """
    check_positive(
        "transformer",
        vocab_size=vocab_size,
        max_len=max_len,
        dim=dim,
        depth=depth,
        heads=heads,
        num_classes=num_classes,
        mlp_ratio=mlp_ratio,
    )
    if dim % heads:
        raise ConfigError(f"zoo:transformer: option 'heads' ({heads}) must divide 'dim' ({dim})")
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ConfigError(f"zoo:transformer: option 'dropout' must be in [0, 1), got {dropout!r}")
    return TextTransformer(
        vocab_size=vocab_size,
        max_len=max_len,
        dim=dim,
        depth=depth,
        heads=heads,
        num_classes=num_classes,
        mlp_ratio=mlp_ratio,
        dropout=float(dropout),
    )
