"""Helpers shared by the zoo architectures: option checks and the image-model base class.

Example:
    >>> check_positive("lenet300", num_classes=10, input_size=28)
    >>> check_positive("lenet300", num_classes=0)
    Traceback (most recent call last):
    ...
    torchshrink.core.errors.ConfigError: zoo:lenet300: option 'num_classes' must be a positive integer, got 0
"""

from __future__ import annotations

import math

import torch
from torch import nn

from torchshrink.core.errors import ConfigError

# Example inputs use their own generator so that asking for one never moves the global RNG,
# which callers seed to control weight initialisation.
_EXAMPLE_SEED = 0


def check_positive(model: str, **options: object) -> None:
    """Raise :class:`ConfigError` unless every option is a positive ``int`` (``bool`` refused).

    Args:
        model: zoo name, used in the message.
        **options: option name -> value received.

    Example:
        >>> check_positive("vgg11_bn", in_channels=3)
    """
    for name, value in options.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(
                f"zoo:{model}: option '{name}' must be a positive integer, got {value!r}"
            )


def example_generator() -> torch.Generator:
    """A CPU generator with a fixed seed, for reproducible example inputs."""
    return torch.Generator().manual_seed(_EXAMPLE_SEED)


def param_dtype_device(module: nn.Module) -> tuple[torch.dtype, torch.device]:
    """The dtype and device of the first floating-point parameter (fp32 / CPU if none)."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype, p.device
    return torch.float32, torch.device("cpu")


class ImageClassifier(nn.Module):
    """Base class of the zoo's image models: records the input geometry, builds example inputs.

    Subclasses call ``super().__init__(num_classes=..., in_channels=..., input_size=...)``
    first and define ``forward``.

    Example:
        >>> from torchshrink.core.zoo import create_zoo_model
        >>> create_zoo_model("lenet5").example_inputs(2).shape
        torch.Size([2, 1, 28, 28])
    """

    def __init__(self, *, num_classes: int, in_channels: int, input_size: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.input_size = input_size

    def example_inputs(self, batch_size: int = 1) -> torch.Tensor:
        """A seeded standard-normal batch ``(batch_size, in_channels, input_size, input_size)``.

        The tensor has the dtype and device of the model's parameters.
        """
        dtype, device = param_dtype_device(self)
        shape = (batch_size, self.in_channels, self.input_size, self.input_size)
        x = torch.randn(shape, generator=example_generator())  # (B, C, H, W)
        return x.to(dtype=dtype, device=device)


def check_multiplier(model: str, **options: object) -> None:
    """Raise :class:`ConfigError` unless every option is a finite number above 0 (``bool`` refused).

    Example:
        >>> check_multiplier("lenet5", width=0.5)
        >>> check_multiplier("lenet5", width=0)
        Traceback (most recent call last):
        ...
        torchshrink.core.errors.ConfigError: zoo:lenet5: option 'width' must be a positive number (a multiplier such as 0.5), got 0
    """
    for name, value in options.items():
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (number and math.isfinite(value) and value > 0):  # type: ignore[arg-type,operator]
            raise ConfigError(
                f"zoo:{model}: option '{name}' must be a positive number (a multiplier such as "
                f"0.5), got {value!r}"
            )


def scaled(n: int, multiplier: float) -> int:
    """``n * multiplier`` rounded half up, at least 1 (``round`` would round 2.5 down to 2).

    Example:
        >>> scaled(20, 0.125), scaled(50, 0.01), scaled(300, 1.0)
        (3, 1, 300)
    """
    return max(1, math.floor(n * multiplier + 0.5))
