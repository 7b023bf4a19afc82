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

from torchshrink.core.lazy import lazy_exports, make_callable

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


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)
make_callable(__name__, "torchshrink.train.loop:train")
