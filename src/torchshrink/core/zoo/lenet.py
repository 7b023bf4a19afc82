"""LeNet-300-100 and LeNet-5, the MNIST reference networks of Deep Compression (Han et al. 2016).

Both take a ``width`` multiplier (channels / neurons scaled and rounded half up, at least 1) and
LeNet-300-100 a ``depth`` multiplier (hidden layers), so that a student search
(:mod:`torchshrink.auto.student`) can build smaller members of the family. The defaults (1.0)
give the published networks with unchanged layer names.

Example:
    >>> from torchshrink.core.zoo import create_zoo_model
    >>> sum(p.numel() for p in create_zoo_model("lenet5").parameters())
    431080
    >>> create_zoo_model("lenet5", width=0.5).conv2.out_channels
    25
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

from torchshrink.core.errors import ConfigError
from torchshrink.core.zoo import register_zoo_model
from torchshrink.core.zoo._common import (
    ImageClassifier,
    check_multiplier,
    check_positive,
    scaled,
)

LENET300_HIDDEN = (300, 100)
LENET5_CHANNELS = (20, 50, 500)  # conv1, conv2, fc1


def lenet300_hidden(width: float = 1.0, depth: float = 1.0) -> tuple[int, ...]:
    """The hidden sizes of LeNet-300-100 scaled by ``width`` and ``depth``.

    ``depth`` scales the number of hidden layers (2, rounded half up, at least 1); layers beyond
    the second repeat the last width (100), fewer keep the first ones.

    Example:
        >>> lenet300_hidden(), lenet300_hidden(0.5), lenet300_hidden(1.0, 0.5), lenet300_hidden(1, 2)
        ((300, 100), (150, 50), (300,), (300, 100, 100, 100))
    """
    layers = scaled(len(LENET300_HIDDEN), depth)
    base = [*LENET300_HIDDEN, *[LENET300_HIDDEN[-1]] * max(0, layers - len(LENET300_HIDDEN))]
    return tuple(scaled(h, width) for h in base[:layers])


class LeNet300(ImageClassifier):
    """LeNet-300-100: a fully connected ``in -> 300 -> 100 -> num_classes`` net with ReLUs.

    ``in = in_channels * input_size**2``. 266,610 parameters for 1x28x28 inputs and 10 classes.
    ``width`` / ``depth`` scale the hidden sizes / the number of hidden layers (see
    :func:`lenet300_hidden`); the layers are ``fc1 ... fc{k+1}`` with ``relu1 ... relu{k}``.

    Example:
        >>> m = LeNet300(num_classes=10, in_channels=1, input_size=28)
        >>> m(m.example_inputs(4)).shape
        torch.Size([4, 10])
        >>> LeNet300(num_classes=10, in_channels=1, input_size=8, depth=1.5).fc4.in_features
        100
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 1,
        input_size: int = 28,
        width: float = 1.0,
        depth: float = 1.0,
    ) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, input_size=input_size)
        self.hidden = lenet300_hidden(width, depth)
        self.flatten = nn.Flatten()
        sizes = [in_channels * input_size * input_size, *self.hidden, num_classes]
        # Attributes fc1, relu1, fc2, ... keep the names (and state-dict keys) of the original.
        for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes), start=1):
            setattr(self, f"fc{i}", nn.Linear(n_in, n_out))
            if i < len(sizes) - 1:
                setattr(self, f"relu{i}", nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(x)  # (B, C*H*W)
        k = len(self.hidden)
        for i in range(1, k + 1):
            x = getattr(self, f"relu{i}")(getattr(self, f"fc{i}")(x))  # (B, hidden[i-1])
        return getattr(self, f"fc{k + 1}")(x)  # (B, num_classes)


def _lenet5_feature_side(input_size: int) -> int:
    # conv 5x5 (valid) -> pool 2 -> conv 5x5 (valid) -> pool 2, floor division as in Caffe/PyTorch.
    return ((input_size - 4) // 2 - 4) // 2


class LeNet5(ImageClassifier):
    """The Caffe LeNet-5 variant used by Deep Compression (Han et al. 2016).

    ``conv1`` 5x5x20 -> max-pool 2 -> ``conv2`` 5x5x50 -> max-pool 2 -> ``fc1`` 500 -> ReLU ->
    ``fc2`` num_classes. As in the Caffe model there is no ReLU after the convolutions (the
    max-pools are the only non-linearity there). For 1x28x28 inputs and 10 classes: 431,080
    parameters and 2,293,000 MACs per image (conv1 288,000; conv2 1,600,000; fc1 400,000;
    fc2 5,000). The smallest accepted ``input_size`` is 16. ``width`` scales the 20 / 50 / 500
    channels and neurons (rounded half up, at least 1).

    Example:
        >>> m = LeNet5(num_classes=10, in_channels=1, input_size=28)
        >>> m(m.example_inputs(2)).shape
        torch.Size([2, 10])
        >>> LeNet5(num_classes=10, in_channels=1, input_size=28, width=0.25).fc1.out_features
        125
    """

    def __init__(
        self,
        *,
        num_classes: int = 10,
        in_channels: int = 1,
        input_size: int = 28,
        width: float = 1.0,
    ) -> None:
        super().__init__(num_classes=num_classes, in_channels=in_channels, input_size=input_size)
        side = _lenet5_feature_side(input_size)
        if side < 1:
            raise ConfigError(
                f"zoo:lenet5: option 'input_size' must be at least 16 (two 5x5 valid convolutions "
                f"and two 2x2 pools), got {input_size}"
            )
        c1, c2, f1 = (scaled(n, width) for n in LENET5_CHANNELS)
        self.conv1 = nn.Conv2d(in_channels, c1, kernel_size=5)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=5)
        self.pool2 = nn.MaxPool2d(2, 2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(c2 * side * side, f1)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(f1, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.conv1(x))  # (B, c1, (S-4)/2, (S-4)/2); 20 x 12x12 for S=28
        x = self.pool2(self.conv2(x))  # (B, c2, side, side); 50 x 4x4 for S=28
        x = self.flatten(x)  # (B, c2*side*side)
        x = self.relu1(self.fc1(x))  # (B, f1)
        return self.fc2(x)  # (B, num_classes)


@register_zoo_model("lenet300")
def lenet300(
    *,
    num_classes: int = 10,
    in_channels: int = 1,
    input_size: int = 28,
    width: float = 1.0,
    depth: float = 1.0,
) -> LeNet300:
    """LeNet-300-100 (MNIST MLP): 266,610 parameters at 1x28x28, 10 classes.

    Raises:
        ConfigError: a size option is not a positive integer or a multiplier is not above 0.

    Example:
        >>> sum(p.numel() for p in lenet300(input_size=8).parameters())  # 8x8 digits
        50610
        >>> lenet300(input_size=8, width=0.5, depth=0.5).hidden
        (150,)
    """
    check_positive(
        "lenet300", num_classes=num_classes, in_channels=in_channels, input_size=input_size
    )
    check_multiplier("lenet300", width=width, depth=depth)
    return LeNet300(
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        width=width,
        depth=depth,
    )


@register_zoo_model("lenet5")
def lenet5(
    *, num_classes: int = 10, in_channels: int = 1, input_size: int = 28, width: float = 1.0
) -> LeNet5:
    """LeNet-5 (Caffe / Deep Compression variant): 431,080 parameters at 1x28x28, 10 classes.

    Raises:
        ConfigError: an option is not a positive integer, ``width`` is not above 0, or
            ``input_size`` is below 16.

    Example:
        >>> lenet5(num_classes=10).fc1.in_features
        800
        >>> lenet5(width=0.5).fc1.in_features  # 25 channels x 4 x 4
        400
    """
    check_positive(
        "lenet5", num_classes=num_classes, in_channels=in_channels, input_size=input_size
    )
    check_multiplier("lenet5", width=width)
    return LeNet5(
        num_classes=num_classes, in_channels=in_channels, input_size=input_size, width=width
    )
