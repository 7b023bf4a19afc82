"""Imports every zoo architecture module so that its factories register themselves.

``torchshrink.core.zoo`` imports this module lazily (on the first ``create_zoo_model`` or
``zoo_names`` call), which keeps ``import torchshrink`` light.

Example:
    >>> from torchshrink.core.zoo import zoo_names
    >>> "resnet20" in zoo_names()
    True
"""

from __future__ import annotations

from torchshrink.core.zoo import (  # noqa: F401  (imported for registration)
    lenet,
    mixer,
    mobilenetv2,
    resnet_cifar,
    transformer,
    vgg,
    vit,
)
