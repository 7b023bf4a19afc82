"""Pruning: unstructured / N:M masks, structured removal of channels, heads and blocks.

``torchshrink.prune`` names both this package and the :func:`~torchshrink.prune.pruner.prune`
function, so the package itself is callable and forwards to it (as ``torchshrink.train`` does).
Names are loaded lazily so that importing a submodule stays light. The sensitivity function
lives at ``torchshrink.prune.sensitivity.sensitivity`` (its module has the same name).

Example:
    >>> import torchshrink
    >>> from torchshrink.prune import PruneConfig, remove_channels
    >>> callable(torchshrink.prune), PruneConfig().granularity
    (True, 'unstructured')
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

# public name -> submodule of torchshrink.prune
_LAZY = {
    "remove_channels": "structured",
    "remove_groups": "structured",
    "PruneConfig": "config",
    "Pruner": "pruner",
    "PruneResult": "pruner",
    "StepRecord": "pruner",
    "prune": "pruner",
    "Importance": "importance",
    "ImportanceContext": "importance",
    "register_importance": "importance",
    "get_importance": "importance",
    "MaskState": "masks",
    "MaskHook": "masks",
    "bake_masks": "masks",
    "get_masks": "masks",
    "residual_blocks": "blocks",
    "SensitivityTable": "sensitivity",
    "SensitivityPoint": "sensitivity",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    sub = _LAZY.get(name)
    if sub is None:
        raise AttributeError(f"module 'torchshrink.prune' has no attribute '{name}'")
    return getattr(importlib.import_module(f"torchshrink.prune.{sub}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from torchshrink.prune.pruner import prune

        return prune(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
