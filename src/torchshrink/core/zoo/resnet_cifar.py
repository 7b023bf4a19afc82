"""The CIFAR ResNets of He et al. 2016 (section 4.2): ResNet-20 and ResNet-56.

Three stages of 16 / 32 / 64 channels with ``n`` basic blocks each (depth = 6n + 2), a 3x3
stem, global average pooling and one linear layer. Where a block changes shape, the shortcut
is either option A (parameter-free: strided subsampling plus zero-padded channels, the paper's
CIFAR choice, module :class:`ShortcutA`) or option B (1x1 convolution + BatchNorm projection).

Example:
    >>> from torchshrink.core.zoo import create_zoo_model
    >>> sum(p.numel() for p in create_zoo_model("resnet20").parameters())
    269722
"""

from __future__ import annotations

from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from torchshrink.core.errors import ConfigError
from torchshrink.core.zoo import register_zoo_model
from torchshrink.core.zoo._common import ImageClassifier, check_multiplier, check_positive, scaled

Shortcut = Literal["A", "B"]


class ShortcutA(nn.Module):
    """Option-A shortcut: subsample by ``stride`` and zero-pad the channel dimension.

    Built from ordinary ops (slicing and ``F.pad``) so that graph code can trace and recognise
    it; it has no parameters. Padding is split evenly before and after the input channels.

    Example:
        >>> ShortcutA(16, 32, stride=2)(torch.ones(1, 16, 8, 8)).shape
        torch.Size([1, 32, 4, 4])
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        extra = out_channels - in_channels
        self.pad_before = extra // 2
        self.pad_after = extra - extra // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]  # (B, C_in, H/s, W/s)
        # F.pad lists dims from the last one backwards: (W, W, H, H, C, C).
        return F.pad(x, (0, 0, 0, 0, self.pad_before, self.pad_after))  # (B, C_out, H/s, W/s)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection, ReLU after the sum."""

    def __init__(self, in_planes: int, planes: int, stride: int, shortcut: Shortcut) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.shortcut: nn.Module
        if stride == 1 and in_planes == planes:
            self.shortcut = nn.Identity()
        elif shortcut == "A":
            self.shortcut = ShortcutA(in_planes, planes, stride)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))  # (B, planes, H/s, W/s)
        out = self.bn2(self.conv2(out))  # (B, planes, H/s, W/s)
        return self.relu2(out + self.shortcut(x))


class CifarResNet(ImageClassifier):
    """A CIFAR ResNet of depth ``6 * blocks_per_stage + 2``.

    Module names: ``conv1``, ``bn1``, ``layer{1,2,3}.{i}.conv1`` / ``bn1`` / ``conv2`` / ``bn2`` /
    ``shortcut``, ``avgpool``, ``flatten``, ``fc``. Global average pooling makes any
    ``input_size`` work (the stages downsample by 1, 2 and 2).

    Example:
        >>> m = CifarResNet(3, num_classes=10, in_channels=3, input_size=32)
        >>> m(m.example_inputs(2)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        blocks_per_stage: int,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        shortcut: Shortcut = "A",
        widths: tuple[int, int, int] = (16, 32, 64),
    ) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, input_size=input_size)
        self.shortcut_type = shortcut
        w1, w2, w3 = widths
        self.conv1 = nn.Conv2d(in_channels, w1, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w1)
        self.relu = nn.ReLU()
        self.layer1 = self._stage(w1, w1, blocks_per_stage, 1, shortcut)
        self.layer2 = self._stage(w1, w2, blocks_per_stage, 2, shortcut)
        self.layer3 = self._stage(w2, w3, blocks_per_stage, 2, shortcut)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(w3, num_classes)
        for m in self.modules():
            # He et al. initialisation, as in the paper and the common CIFAR reimplementations.
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @staticmethod
    def _stage(
        in_planes: int, planes: int, n: int, stride: int, shortcut: Shortcut
    ) -> nn.Sequential:
        blocks = [BasicBlock(in_planes, planes, stride, shortcut)]
        blocks += [BasicBlock(planes, planes, 1, shortcut) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))  # (B, w1, S, S); widths 16 / 32 / 64 by default
        x = self.layer1(x)  # (B, w1, S, S)
        x = self.layer2(x)  # (B, w2, S/2, S/2)
        x = self.layer3(x)  # (B, w3, S/4, S/4)
        x = self.flatten(self.avgpool(x))  # (B, w3)
        return self.fc(x)  # (B, num_classes)


def _build(
    name: str,
    n: int,
    num_classes: int,
    in_channels: int,
    input_size: int,
    shortcut: str,
    width: float = 1.0,
    depth: float = 1.0,
) -> CifarResNet:
    check_positive(name, num_classes=num_classes, in_channels=in_channels, input_size=input_size)
    check_multiplier(name, width=width, depth=depth)
    kind = shortcut.upper() if isinstance(shortcut, str) else shortcut
    if kind == "A" or kind == "B":
        return CifarResNet(
            scaled(n, depth),
            num_classes=num_classes,
            in_channels=in_channels,
            input_size=input_size,
            shortcut=cast(Shortcut, kind),
            widths=(scaled(16, width), scaled(32, width), scaled(64, width)),
        )
    raise ConfigError(f"zoo:{name}: option 'shortcut' must be 'A' or 'B', got {shortcut!r}")


@register_zoo_model("resnet20")
def resnet20(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    shortcut: str = "A",
    width: float = 1.0,
    depth: float = 1.0,
) -> CifarResNet:
    """ResNet-20 for CIFAR (3 blocks per stage).

    Parameters with 10 classes: 269,722 with shortcut A (the published 0.27 M), 272,474 with
    shortcut B (two 1x1 projections + BN: 576 + 2,176 extra). ``width`` scales the 16 / 32 / 64
    channels and ``depth`` the blocks per stage (rounded half up, at least 1), e.g. for a
    student search (``auto --student zoo:resnet20``).

    Example:
        >>> sum(p.numel() for p in resnet20(shortcut="B").parameters())
        272474
        >>> resnet20(width=0.5, depth=0.34).fc.in_features, len(resnet20(depth=0.34).layer1)
        (32, 1)
    """
    return _build("resnet20", 3, num_classes, in_channels, input_size, shortcut, width, depth)


@register_zoo_model("resnet56")
def resnet56(
    *,
    num_classes: int = 10,
    in_channels: int = 3,
    input_size: int = 32,
    shortcut: str = "A",
    width: float = 1.0,
    depth: float = 1.0,
) -> CifarResNet:
    """ResNet-56 for CIFAR (9 blocks per stage).

    Parameters with 10 classes: 853,018 with shortcut A (the published 0.85 M), 855,770 with
    shortcut B. ``width`` / ``depth`` as for :func:`resnet20`.

    Example:
        >>> sum(p.numel() for p in resnet56().parameters())
        853018
    """
    return _build("resnet56", 9, num_classes, in_channels, input_size, shortcut, width, depth)
