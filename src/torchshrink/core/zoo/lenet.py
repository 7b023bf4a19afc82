"""LeNet-300-100 and LeNet-5, the MNIST reference networks of Deep Compression (Han et al. 2016).

Example:
    >>> from torchshrink.core.zoo import create_zoo_model
    >>> sum(p.numel() for p in create_zoo_model("lenet5").parameters())
    431080
"""

from __future__ import annotations

import torch
from torch import nn

from torchshrink.core.errors import ConfigError
from torchshrink.core.zoo import register_zoo_model
from torchshrink.core.zoo._common import ImageClassifier, check_positive


class LeNet300(ImageClassifier):
    """LeNet-300-100: a fully connected ``in -> 300 -> 100 -> num_classes`` net with ReLUs.

    ``in = in_channels * input_size**2``. 266,610 parameters for 1x28x28 inputs and 10 classes.

    Example:
        >>> m = LeNet300(num_classes=10, in_channels=1, input_size=28)
        >>> m(m.example_inputs(4)).shape
        torch.Size([4, 10])
    """

    def __init__(
        self, *, num_classes: int = 10, in_channels: int = 1, input_size: int = 28
    ) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, input_size=input_size)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(in_channels * input_size * input_size, 300)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(300, 100)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)  # (B, C*H*W)
        x = self.relu1(self.fc1(x))  # (B, 300)
        x = self.relu2(self.fc2(x))  # (B, 100)
        return self.fc3(x)  # (B, num_classes)


def _lenet5_feature_side(input_size: int) -> int:
    # conv 5x5 (valid) -> pool 2 -> conv 5x5 (valid) -> pool 2, floor division as in Caffe/PyTorch.
    return ((input_size - 4) // 2 - 4) // 2


class LeNet5(ImageClassifier):
    """The Caffe LeNet-5 variant used by Deep Compression (Han et al. 2016).

    ``conv1`` 5x5x20 -> max-pool 2 -> ``conv2`` 5x5x50 -> max-pool 2 -> ``fc1`` 500 -> ReLU ->
    ``fc2`` num_classes. As in the Caffe model there is no ReLU after the convolutions (the
    max-pools are the only non-linearity there). For 1x28x28 inputs and 10 classes: 431,080
    parameters and 2,293,000 MACs per image (conv1 288,000; conv2 1,600,000; fc1 400,000;
    fc2 5,000). The smallest accepted ``input_size`` is 16.

    Example:
        >>> m = LeNet5(num_classes=10, in_channels=1, input_size=28)
        >>> m(m.example_inputs(2)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self, *, num_classes: int = 10, in_channels: int = 1, input_size: int = 28
    ) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, input_size=input_size)
        side = _lenet5_feature_side(input_size)
        if side < 1:
            raise ConfigError(
                f"zoo:lenet5: option 'input_size' must be at least 16 (two 5x5 valid convolutions "
                f"and two 2x2 pools), got {input_size}"
            )
        self.conv1 = nn.Conv2d(in_channels, 20, kernel_size=5)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)
        self.pool2 = nn.MaxPool2d(2, 2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(50 * side * side, 500)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.conv1(x))  # (B, 20, (S-4)/2, (S-4)/2); 12x12 for S=28
        x = self.pool2(self.conv2(x))  # (B, 50, side, side); 4x4 for S=28
        x = self.flatten(x)  # (B, 50*side*side)
        x = self.relu1(self.fc1(x))  # (B, 500)
        return self.fc2(x)  # (B, num_classes)


@register_zoo_model("lenet300")
def lenet300(*, num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> LeNet300:
    """LeNet-300-100 (MNIST MLP): 266,610 parameters at 1x28x28, 10 classes.

    Example:
        >>> sum(p.numel() for p in lenet300(input_size=8).parameters())  # 8x8 digits
        50610
    """
    check_positive(
        "lenet300", num_classes=num_classes, in_channels=in_channels, input_size=input_size
    )
    return LeNet300(num_classes=num_classes, in_channels=in_channels, input_size=input_size)


@register_zoo_model("lenet5")
def lenet5(*, num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> LeNet5:
    """LeNet-5 (Caffe / Deep Compression variant): 431,080 parameters at 1x28x28, 10 classes.

    Raises:
        ConfigError: an option is not a positive integer, or ``input_size`` is below 16.

    Example:
        >>> lenet5(num_classes=10).fc1.in_features
        800
    """
    check_positive(
        "lenet5", num_classes=num_classes, in_channels=in_channels, input_size=input_size
    )
    return LeNet5(num_classes=num_classes, in_channels=in_channels, input_size=input_size)
