"""A small Vision Transformer (Dosovitskiy et al. 2021) for 32x32 / 28x28 images.

Example:
    >>> from torchshrink.core.zoo import create_zoo_model
    >>> sum(p.numel() for p in create_zoo_model("vit").parameters())
    2693578
"""

from __future__ import annotations

import torch
from torch import nn

from torchshrink.core.errors import ConfigError, ShapeError
from torchshrink.core.zoo import register_zoo_model
from torchshrink.core.zoo._common import ImageClassifier, check_positive


class SelfAttention(nn.Module):
    """Multi-head self-attention from four plain ``nn.Linear`` layers (``q``, ``k``, ``v``, ``proj``).

    Separate q / k / v projections (rather than one fused ``qkv`` or ``nn.MultiheadAttention``)
    keep every weight in an ordinary Linear, so that pruning and quantization code can treat
    heads and channels like any other layer. The attention itself is written as two explicit
    matmuls and a softmax rather than ``F.scaled_dot_product_attention``: those are visible to
    graph capture, quantization and ONNX export, and ``torch.utils.flop_counter`` counts them
    (it counts nothing for the fused CPU SDPA kernel in torch 2.13).

    Example:
        >>> SelfAttention(64, heads=4)(torch.zeros(2, 5, 64)).shape
        torch.Size([2, 5, 64])
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        # (B, N, D) -> (B, heads, N, Dh); reshape with -1 so that pruned widths still work.
        q = self.q(x).reshape(b, n, self.heads, -1).transpose(1, 2)
        k = self.k(x).reshape(b, n, self.heads, -1).transpose(1, 2)
        v = self.v(x).reshape(b, n, self.heads, -1).transpose(1, 2)
        scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5  # (B, heads, N, N)
        out = scores.softmax(dim=-1) @ v  # (B, heads, N, Dh)
        out = out.transpose(1, 2).reshape(b, n, -1)  # (B, N, D)
        return self.proj(out)


class Mlp(nn.Module):
    """``fc1`` -> GELU -> ``fc2``, the transformer feed-forward block."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))  # (B, N, D)


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))  # (B, N, D)
        return x + self.mlp(self.norm2(x))  # (B, N, D)


class ViT(ImageClassifier):
    """Vision Transformer: Conv2d patch embedding, class token, learned positions, pre-norm blocks.

    Module names: ``patch_embed`` (Conv2d, kernel = stride = ``patch_size``), parameters
    ``cls_token`` (1, 1, D) and ``pos_embed`` (1, 1 + N, D), ``blocks.{i}.norm1`` /
    ``attn.{q,k,v,proj}`` / ``norm2`` / ``mlp.{fc1,fc2}``, ``norm``, ``head``. Classification
    reads the class token after the final LayerNorm.

    Parameters: ``C p^2 D + D`` (patches) ``+ D`` (class token) ``+ (N + 1) D`` (positions)
    ``+ depth (4 D^2 + 4 D + 4 D + 2 D H + H + D)`` (blocks, ``H = mlp_ratio D``) ``+ 2 D``
    ``+ D K + K`` (norm, head), with ``N = (input_size / patch_size)^2``.

    Example:
        >>> m = ViT(num_classes=10, in_channels=1, input_size=28, dim=32, depth=1, heads=2)
        >>> m(m.example_inputs(2)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        patch_size: int = 4,
        dim: int = 192,
        depth: int = 6,
        heads: int = 3,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, input_size=input_size)
        self.patch_size = patch_size
        self.num_patches = (input_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches + 1, dim))
        hidden = int(dim * mlp_ratio)
        self.blocks = nn.Sequential(*(EncoderBlock(dim, heads, hidden) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        # Truncated-normal init of the ViT / DeiT reference code.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # (B, D, S/p, S/p)
        x = x.flatten(2).transpose(1, 2)  # (B, N, D)
        if x.shape[1] != self.num_patches:
            raise ShapeError(
                f"ViT.patch_embed: input gives {x.shape[1]} patches, the model was built for "
                f"{self.num_patches} (input_size={self.input_size}, patch_size={self.patch_size})"
            )
        cls = self.cls_token.expand(x.shape[0], -1, -1)  # (B, 1, D)
        x = torch.cat([cls, x], dim=1) + self.pos_embed  # (B, 1 + N, D)
        x = self.norm(self.blocks(x))  # (B, 1 + N, D)
        return self.head(x[:, 0])  # (B, num_classes)


@register_zoo_model("vit")
def vit(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    patch_size: int = 4,
    dim: int = 192,
    depth: int = 6,
    heads: int = 3,
    mlp_ratio: float = 4.0,
) -> ViT:
    """A ViT-Tiny-width Vision Transformer for small images (patch 4, dim 192, depth 6, 3 heads).

    2,693,578 parameters with the defaults (3x32x32, 64 patches, 10 classes); 2,684,554 for
    1x28x28 (49 patches). See :class:`ViT` for the formula.

    Raises:
        ConfigError: an option is not a positive integer, ``patch_size`` does not divide
            ``input_size``, ``heads`` does not divide ``dim``, or ``mlp_ratio`` is not positive.

    Example:
        >>> vit(input_size=28, in_channels=1).num_patches
        49
    """
    check_positive(
        "vit",
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        patch_size=patch_size,
        dim=dim,
        depth=depth,
        heads=heads,
    )
    if input_size % patch_size:
        raise ConfigError(
            f"zoo:vit: option 'patch_size' ({patch_size}) must divide 'input_size' ({input_size})"
        )
    if dim % heads:
        raise ConfigError(f"zoo:vit: option 'heads' ({heads}) must divide 'dim' ({dim})")
    if (
        isinstance(mlp_ratio, bool)
        or not isinstance(mlp_ratio, int | float)
        or int(dim * mlp_ratio) < 1
    ):
        raise ConfigError(
            f"zoo:vit: option 'mlp_ratio' must be a positive number, got {mlp_ratio!r}"
        )
    return ViT(
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        patch_size=patch_size,
        dim=dim,
        depth=depth,
        heads=heads,
        mlp_ratio=float(mlp_ratio),
    )
