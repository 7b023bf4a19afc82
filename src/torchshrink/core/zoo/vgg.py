"""VGG-11 with BatchNorm at CIFAR width (Simonyan & Zisserman 2015; BN as in Ioffe & Szegedy).

Example:
    >>> from torchshrink.core.zoo import create_zoo_model
    >>> sum(p.numel() for p in create_zoo_model("vgg11_bn").parameters())
    9231114
"""

from __future__ import annotations

import torch
from torch import nn

from torchshrink.core.zoo import register_zoo_model
from torchshrink.core.zoo._common import ImageClassifier, check_positive

# Output channels of each 3x3 conv-BN-ReLU; "M" is a 2x2 max-pool.
VGG11_CFG: tuple[int | str, ...] = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class VGG(ImageClassifier):
    """A plain conv-BN-ReLU stack (``features``) followed by a single linear classifier.

    Module names follow the common CIFAR implementations: ``features.{i}`` is a ``Conv2d``,
    ``BatchNorm2d``, ``ReLU`` or ``MaxPool2d``; then ``avgpool`` (adaptive, to 1x1),
    ``flatten`` and ``classifier`` (Linear 512 -> num_classes).

    The max-pools use ``ceil_mode=True``: identical to floor mode for 32x32 inputs, but it keeps
    every stage at least 1x1 for smaller or odd sizes (28x28 gives 14, 7, 4, 2, 1), so any
    ``input_size`` works.

    Example:
        >>> m = VGG(VGG11_CFG, num_classes=10, in_channels=3, input_size=32)
        >>> m(m.example_inputs(2)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        cfg: tuple[int | str, ...],
        *,
        num_classes: int = 10,
        in_channels: int = 3,
        input_size: int = 32,
    ) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, input_size=input_size)
        layers: list[nn.Module] = []
        channels = in_channels
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
            else:
                assert isinstance(item, int)
                layers += [
                    nn.Conv2d(channels, item, kernel_size=3, padding=1),
                    nn.BatchNorm2d(item),
                    nn.ReLU(),
                ]
                channels = item
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)  # (B, 512, 1, 1) for 32x32
        x = self.flatten(self.avgpool(x))  # (B, 512)
        return self.classifier(x)  # (B, num_classes)


@register_zoo_model("vgg11_bn")
def vgg11_bn(*, num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> VGG:
    """VGG-11 with BatchNorm, CIFAR variant with a single linear classifier.

    9,231,114 parameters for 3x32x32 inputs and 10 classes (9,220,480 conv + 5,504 BN +
    5,130 classifier), matching the widely used CIFAR ``vgg11_bn`` with one Linear layer.

    Example:
        >>> vgg11_bn(num_classes=100).classifier.out_features
        100
    """
    check_positive(
        "vgg11_bn", num_classes=num_classes, in_channels=in_channels, input_size=input_size
    )
    return VGG(VGG11_CFG, num_classes=num_classes, in_channels=in_channels, input_size=input_size)
