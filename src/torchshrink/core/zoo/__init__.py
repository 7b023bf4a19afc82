"""The model zoo: reference architectures shipped with torchshrink, addressed as ``zoo:NAME``.

Each entry is a factory registered with :func:`register_zoo_model`; factories take keyword
arguments only (``num_classes``, ``in_channels``, ``input_size`` and model-specific options) and
return a freshly initialised ``nn.Module``.

Example:
    >>> from torchshrink.core.zoo import create_zoo_model, zoo_names
    >>> m = create_zoo_model("lenet300")
    >>> sum(p.numel() for p in m.parameters())
    266610
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from torchshrink.core.registry import Registry

ZOO: Registry[Callable[..., nn.Module]] = Registry("zoo model")


def register_zoo_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a zoo factory under ``name`` (used as ``zoo:NAME``)."""
    return ZOO.register(name)


def create_zoo_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the zoo model ``name`` with keyword options; unknown names list the valid ones."""
    _load_all()
    return ZOO.get(name)(**kwargs)


def zoo_names() -> list[str]:
    """Names of every registered zoo model."""
    _load_all()
    return ZOO.names()


def _load_all() -> None:
    # The architecture modules register themselves on import; importing them lazily keeps
    # `import torchshrink` fast.
    from torchshrink.core.zoo import models  # noqa: F401
