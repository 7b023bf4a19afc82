"""torchshrink.lowrank: low-rank factorization of Linear and Conv2d layers.

Truncated SVD of Linear (and 1x1 conv) layers into two thinner layers, Tucker-2 of convolutions
into 1x1 -> kxk -> 1x1, depthwise-separable replacement of standard convolutions, and
:func:`factorize`, which applies them to a whole model in place, skipping layers that would get
bigger or slower. Replacements are plain ``nn.Sequential`` stacks of torch.nn layers, so
``torchshrink.save`` / ``torchshrink.load`` round-trip factorized models without registration.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from torchshrink.lowrank import FactorizeConfig, factorize
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    >>> cfg = FactorizeConfig(ranks={"1": 8}, max_latency_ratio=None)
    >>> report = factorize(model, cfg, example_inputs=torch.randn(2, 1, 8, 8))
    >>> [layer.rank for layer in report.applied]
    [(8,)]
"""

from __future__ import annotations

from torchshrink.lowrank.factorize import (
    FactorizeConfig,
    FactorizeReport,
    LayerFactorization,
    factorize,
)
from torchshrink.lowrank.separable import (
    separable_factorize,
    separable_factors,
    separable_params,
    separable_reconstruct,
)
from torchshrink.lowrank.svd import (
    rank_for_energy,
    rank_for_ratio,
    singular_values,
    svd_factorize,
    svd_params,
)
from torchshrink.lowrank.tucker import (
    tucker2_decompose,
    tucker2_factorize,
    tucker2_params,
    tucker2_ranks_for_energy,
    tucker2_ranks_for_ratio,
    tucker2_reconstruct,
)

__all__ = [
    "FactorizeConfig",
    "FactorizeReport",
    "LayerFactorization",
    "factorize",
    "rank_for_energy",
    "rank_for_ratio",
    "separable_factorize",
    "separable_factors",
    "separable_params",
    "separable_reconstruct",
    "singular_values",
    "svd_factorize",
    "svd_params",
    "tucker2_decompose",
    "tucker2_factorize",
    "tucker2_params",
    "tucker2_ranks_for_energy",
    "tucker2_ranks_for_ratio",
    "tucker2_reconstruct",
]
