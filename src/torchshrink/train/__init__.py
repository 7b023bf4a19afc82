"""torchshrink.train: the training loop, its config, LR schedules, hooks, BN recalibration.

``torchshrink.train`` names both this package and the :func:`~torchshrink.train.loop.train`
function, so the package itself is callable and forwards to the loop. (Importing any submodule,
e.g. ``torchshrink.train.config``, rebinds the attribute ``torchshrink.train`` to this package;
without the forwarding, ``torchshrink.train(model, data)`` would then fail.) Names are loaded
lazily so that importing a submodule stays light.

Example:
    >>> import torchshrink
    >>> import torchshrink.train.config
    >>> callable(torchshrink.train)
    True
    >>> from torchshrink.train import TrainConfig, train
    >>> TrainConfig().schedule
    'cosine'
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

# public name -> submodule of torchshrink.train
_LAZY = {
    "train": "loop",
    "TrainResult": "loop",
    "EpochRecord": "loop",
    "TrainConfig": "config",
    "TrainHook": "hooks",
    "TrainState": "hooks",
    "LossTerm": "hooks",
    "loss_term": "hooks",
    "recalibrate_bn": "bn",
    "build_optimizer": "schedules",
    "build_scheduler": "schedules",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    sub = _LAZY.get(name)
    if sub is None:
        raise AttributeError(f"module 'torchshrink.train' has no attribute '{name}'")
    return getattr(importlib.import_module(f"torchshrink.train.{sub}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)


class _CallablePackage(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from torchshrink.train.loop import train

        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
