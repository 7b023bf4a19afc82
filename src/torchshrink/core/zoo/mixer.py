"""A small MLP-Mixer (Tolstikhin et al. 2021) for 32x32 / 28x28 images.

Example:
    >>> from torchshrink.core.zoo import create_zoo_model
    >>> sum(p.numel() for p in create_zoo_model("mlp_mixer").parameters())
    569994
"""

from __future__ import annotations

import torch
from torch import nn

from torchshrink.core.errors import ConfigError
from torchshrink.core.zoo import register_zoo_model
from torchshrink.core.zoo._common import ImageClassifier, check_positive
from torchshrink.core.zoo.vit import Mlp


class MixerBlock(nn.Module):
    """Token mixing (an MLP across patches, per channel), then channel mixing (per patch).

    The token MLP is an ordinary ``nn.Linear`` applied to the transposed activations, so its
    weights act on the patch dimension: a layer pattern the graph and pruning code must handle.
    """

    def __init__(self, dim: int, num_patches: int, token_hidden: int, channel_hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.token_mlp = Mlp(num_patches, token_hidden)
        self.norm2 = nn.LayerNorm(dim)
        self.channel_mlp = Mlp(dim, channel_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x).transpose(1, 2)  # (B, D, N)
        x = x + self.token_mlp(y).transpose(1, 2)  # (B, N, D)
        return x + self.channel_mlp(self.norm2(x))  # (B, N, D)


class MlpMixer(ImageClassifier):
    """MLP-Mixer: Conv2d patch embedding, Mixer blocks, LayerNorm, mean over patches, head.

    Module names: ``patch_embed``, ``blocks.{i}.norm1`` / ``token_mlp.{fc1,fc2}`` / ``norm2`` /
    ``channel_mlp.{fc1,fc2}``, ``norm``, ``head``. Parameters: ``C p^2 D + D + depth (4 D +
    2 N T + T + N + 2 D F + F + D) + 2 D + D K + K`` with ``N`` patches, token width ``T``,
    channel width ``F``.

    Example:
        >>> m = MlpMixer(num_classes=10, in_channels=1, input_size=28, patch_size=7, dim=16,
        ...              depth=1, token_hidden=8, channel_hidden=32)
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
        dim: int = 128,
        depth: int = 4,
        token_hidden: int = 64,
        channel_hidden: int = 512,
    ) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, input_size=input_size)
        self.patch_size = patch_size
        self.num_patches = (input_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.blocks = nn.Sequential(
            *(MixerBlock(dim, self.num_patches, token_hidden, channel_hidden) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (B, N, D)
        x = self.norm(self.blocks(x))  # (B, N, D)
        return self.head(x.mean(dim=1))  # (B, num_classes)


@register_zoo_model("mlp_mixer")
def mlp_mixer(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    patch_size: int = 4,
    dim: int = 128,
    depth: int = 4,
    token_hidden: int = 64,
    channel_hidden: int = 512,
) -> MlpMixer:
    """A small MLP-Mixer (patch 4, dim 128, depth 4, token MLP 64, channel MLP 512).

    569,994 parameters with the defaults (3x32x32, 64 patches, 10 classes). See
    :class:`MlpMixer` for the formula.

    Raises:
        ConfigError: an option is not a positive integer or ``patch_size`` does not divide
            ``input_size``.

    Example:
        >>> mlp_mixer(input_size=28, in_channels=1, patch_size=7).num_patches
        16
    """
    check_positive(
        "mlp_mixer",
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        patch_size=patch_size,
        dim=dim,
        depth=depth,
        token_hidden=token_hidden,
        channel_hidden=channel_hidden,
    )
    if input_size % patch_size:
        raise ConfigError(
            f"zoo:mlp_mixer: option 'patch_size' ({patch_size}) must divide 'input_size' ({input_size})"
        )
    return MlpMixer(
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        patch_size=patch_size,
        dim=dim,
        depth=depth,
        token_hidden=token_hidden,
        channel_hidden=channel_hidden,
    )
