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

from torchshrink.core.lazy import lazy_exports, make_callable

# public name -> submodule of torchshrink.prune
_LAZY = {
    "remove_channels": "structured",
    "remove_groups": "structured",
    "fold_dead_channels": "dead",
    "FoldReport": "dead",
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


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
make_callable(__name__, "torchshrink.prune.pruner:prune")
