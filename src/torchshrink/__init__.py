"""torchshrink: make trained PyTorch models smaller and faster, and prove it.

The top-level names are loaded lazily so that ``import torchshrink`` stays fast and imports
none of the optional dependencies.

Example:
    >>> import torchshrink
    >>> torchshrink.__version__
    '0.1.0'
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> "module:attribute"
_LAZY = {
    "load_model": "torchshrink.core.modelref:load_model",
    "load_data": "torchshrink.core.data:load_data",
    "save": "torchshrink.core.modelfile:save",
    "load": "torchshrink.core.modelfile:load",
    "profile": "torchshrink.measure.profile:profile",
    "evaluate": "torchshrink.measure.accuracy:evaluate",
    "train": "torchshrink.train.loop:train",
    "TrainConfig": "torchshrink.train.config:TrainConfig",
    "prune": "torchshrink.prune.pruner:prune",
    "PruneConfig": "torchshrink.prune.config:PruneConfig",
    "quantize": "torchshrink.quantize.ptq:quantize",
    "QuantConfig": "torchshrink.quantize.config:QuantConfig",
    "factorize": "torchshrink.lowrank.factorize:factorize",
    "FactorizeConfig": "torchshrink.lowrank.factorize:FactorizeConfig",
    "DataBundle": "torchshrink.core.databundle:DataBundle",
    "ModelSpec": "torchshrink.core.modelspec:ModelSpec",
    "accelerate": "torchshrink.deploy.accelerate:accelerate",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'torchshrink' has no attribute '{name}'")
    mod, attr = target.split(":")
    value = getattr(importlib.import_module(mod), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
