"""MobileNetV2 (Sandler et al. 2018) adapted to CIFAR: inverted residuals with depthwise convs.

Example:
    >>> from torchshrink.core.zoo import create_zoo_model
    >>> sum(p.numel() for p in create_zoo_model("mobilenetv2").parameters())
    2236682
"""

from __future__ import annotations

import torch
from torch import nn

from torchshrink.core.errors import ConfigError
from torchshrink.core.zoo import register_zoo_model
from torchshrink.core.zoo._common import ImageClassifier, check_positive

# (expansion t, output channels c, repeats n, first stride s) from the paper's Table 2, with the
# usual CIFAR change: the second stage keeps stride 1 (and the stem has stride 1, see below), so
# a 32x32 input ends at 4x4 instead of 1x1.
CIFAR_SETTINGS: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to a multiple of ``divisor``, never going down by more than 10%.

    The rounding of the paper's reference code (``_make_divisible``).

    Example:
        >>> make_divisible(32 * 0.35), make_divisible(1280 * 1.4)
        (16, 1792)
    """
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when ``t == 1``) -> 3x3 depthwise -> 1x1 linear projection.

    ReLU6 after the first two convs, none after the projection; a residual sum when the stride
    is 1 and the channel count is unchanged.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_ch * expansion
        self.use_residual = stride == 1 and in_ch == out_ch
        self.expand = expansion != 1
        if self.expand:
            self.conv1 = nn.Conv2d(in_ch, hidden, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(hidden)
            self.relu1 = nn.ReLU6()
        self.conv2 = nn.Conv2d(
            hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False
        )
        self.bn2 = nn.BatchNorm2d(hidden)
        self.relu2 = nn.ReLU6()
        self.conv3 = nn.Conv2d(hidden, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x))) if self.expand else x  # (B, hidden, H, W)
        out = self.relu2(self.bn2(self.conv2(out)))  # (B, hidden, H/s, W/s)
        out = self.bn3(self.conv3(out))  # (B, out_ch, H/s, W/s)
        return out + x if self.use_residual else out


class MobileNetV2(ImageClassifier):
    """CIFAR MobileNetV2: stride-1 stem, inverted residual ``blocks``, 1x1 head conv, pool, fc.

    Module names: ``conv1``/``bn1``/``relu1`` (stem), ``blocks.{i}.conv1`` (expand),
    ``blocks.{i}.conv2`` (depthwise), ``blocks.{i}.conv3`` (project) with their ``bn``s,
    ``conv2``/``bn2``/``relu2`` (1x1 to ``last_channels``), ``avgpool``, ``flatten``, ``fc``.

    Example:
        >>> m = MobileNetV2(num_classes=10, in_channels=3, input_size=32, width_mult=0.5)
        >>> m(m.example_inputs(2)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
        width_mult: float = 1.0,
    ) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, input_size=input_size)
        self.width_mult = width_mult
        stem = make_divisible(32 * width_mult)
        # The paper widens the last conv only for width_mult > 1.
        self.last_channels = make_divisible(1280 * max(1.0, width_mult))
        self.conv1 = nn.Conv2d(in_channels, stem, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu1 = nn.ReLU6()
        blocks: list[nn.Module] = []
        ch = stem
        for t, c, n, s in CIFAR_SETTINGS:
            out = make_divisible(c * width_mult)
            for i in range(n):
                blocks.append(InvertedResidual(ch, out, s if i == 0 else 1, t))
                ch = out
        self.blocks = nn.Sequential(*blocks)
        self.conv2 = nn.Conv2d(ch, self.last_channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(self.last_channels)
        self.relu2 = nn.ReLU6()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(self.last_channels, num_classes)
        for m in self.modules():
            # Initialisation of the reference implementation (torchvision).
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))  # (B, 32w, S, S)
        x = self.blocks(x)  # (B, 320w, S/8, S/8)
        x = self.relu2(self.bn2(self.conv2(x)))  # (B, last_channels, S/8, S/8)
        x = self.flatten(self.avgpool(x))  # (B, last_channels)
        return self.fc(x)  # (B, num_classes)


@register_zoo_model("mobilenetv2")
def mobilenetv2(
    *, num_classes: int = 10, in_channels: int = 3, input_size: int = 32, width_mult: float = 1.0
) -> MobileNetV2:
    """CIFAR MobileNetV2 as in the paper (torchvision block structure, CIFAR strides).

    2,236,682 parameters at width 1.0 with 10 classes (1280 last channels) - the same as
    torchvision's ``mobilenet_v2(num_classes=10)``, since only strides differ. The popular
    CIFAR reimplementation (kuangliu/pytorch-cifar) has 2,296,922 because it also keeps a 1x1
    expansion conv in the ``t = 1`` block and uses 1x1 conv projections on stride-1 shortcuts
    whose channels change; this model follows the paper instead.

    Raises:
        ConfigError: an option is not a positive integer, or ``width_mult`` is not positive.

    Example:
        >>> sum(p.numel() for p in mobilenetv2(width_mult=0.5).parameters())
        700490
    """
    check_positive(
        "mobilenetv2", num_classes=num_classes, in_channels=in_channels, input_size=input_size
    )
    if isinstance(width_mult, bool) or not isinstance(width_mult, int | float) or width_mult <= 0:
        raise ConfigError(
            f"zoo:mobilenetv2: option 'width_mult' must be a positive number, got {width_mult!r}"
        )
    return MobileNetV2(
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        width_mult=float(width_mult),
    )
