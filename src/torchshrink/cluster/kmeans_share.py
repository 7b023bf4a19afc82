"""Weight sharing: replace each layer's weights by the nearest of ``2**bits`` shared values.

Deep Compression (Han et al. 2016) clusters the surviving weights of each layer with 1-D
k-means (linear initialisation between the smallest and largest weight worked best: it keeps
the rare large weights, which matter most, as their own centroids) and stores only a small
index per weight plus the codebook. Pruned zeros stay zero and are not clustered, so the
zero pattern (and any pruning mask) is kept.

This module does the clustering, in place and without fine-tuning; the Huffman-coded file
(:mod:`torchshrink.codec`) then stores the result in a few bits per weight.

Example:
    >>> import torch
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
    >>> report = cluster_weights(m, bits=3)
    >>> [layer.clusters for layer in report.layers], len(torch.unique(m[0].weight))
    ([8, 8], 8)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

import torch
from torch import nn

from torchshrink.core.errors import ConfigError
from torchshrink.core.kmeans import kmeans_1d

# Layer types whose `weight` is clustered.
LAYER_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.modules.conv._ConvNd)
INITS = ("linear",)
MAX_BITS = 16


@dataclass(frozen=True)
class LayerCluster:
    """What weight sharing did to one layer.

    Attributes:
        name: the module's name.
        bits: requested index bits (``2**bits`` centroids at most).
        clusters: distinct non-zero weight values after sharing.
        nonzeros: weights that were clustered (the non-zeros; zeros stay zero).
        mse: mean squared change of the clustered weights.
        bias_bits: index bits of the layer's bias when it was shared too, else ``None``.
        bias_clusters: distinct non-zero bias values after sharing (0: bias not shared).
    """

    name: str
    bits: int
    clusters: int
    nonzeros: int
    mse: float
    bias_bits: int | None = None
    bias_clusters: int = 0


@dataclass(frozen=True)
class ClusterReport:
    """Per-layer results of :func:`cluster_weights`.

    Attributes:
        layers: one entry per clustered layer, in module order.
    """

    layers: tuple[LayerCluster, ...]

    @property
    def mse(self) -> float:
        """Mean squared change over all clustered weights."""
        n = sum(layer.nonzeros for layer in self.layers)
        return sum(layer.mse * layer.nonzeros for layer in self.layers) / n if n else 0.0

    def layer(self, name: str) -> LayerCluster:
        """The entry of the module called ``name``.

        Raises:
            KeyError: the layer was not clustered.
        """
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"layer '{name}' was not clustered")


def _matches(name: str, pattern: str) -> bool:
    return name == pattern or re.fullmatch(pattern, name) is not None


def _bits_for(name: str, bits: int | Mapping[str, int]) -> int | None:
    if isinstance(bits, int):
        return bits
    for pattern, value in bits.items():
        if _matches(name, pattern):
            return value
    return None


def cluster_weights(
    model: nn.Module,
    bits: int | Mapping[str, int] = 5,
    *,
    ignore: Iterable[str] = (),
    init: str = "linear",
    exact: bool = False,
    max_iter: int = 100,
    bias_bits: int | None = None,
) -> ClusterReport:
    """Share the weights of every Linear / Conv layer of ``model`` via k-means (in place).

    For each layer, k-means with ``2**bits`` centroids runs on the non-zero weights; each is
    replaced by its centroid. Zeros stay zero. Biases are shared only with ``bias_bits``.

    Args:
        model: the model, changed in place.
        bits: index bits per weight, for all layers or as ``{name_or_regex: bits}`` (the first
            matching entry wins; layers that match none are left alone). Deep Compression used
            5 bits for fully connected and 8 bits for convolution layers.
        ignore: module names or regexes to leave alone.
        init: centroid initialisation; only ``"linear"`` (between the min and max weight).
        exact: use the exact 1-D optimum (dynamic programming) instead of Lloyd's
            algorithm; only for layers with at most 1024 distinct weights.
        max_iter: Lloyd iteration limit.
        bias_bits: also share each clustered layer's bias among ``2**bias_bits`` values of
            its own (the same k-means; a small layer's biases are a large part of its
            compressed file). ``None`` leaves biases exact.

    Raises:
        ConfigError: ``bits`` or ``bias_bits`` outside 1..16, an unknown ``init``, or
            ``exact`` on a layer with too many distinct weights.

    Example:
        >>> import torchshrink
        >>> m = torchshrink.load_model("zoo:lenet5")
        >>> report = cluster_weights(m, {"conv.*": 8, "fc.*": 5})
        >>> report.layer("conv2").clusters, report.layer("fc1").clusters
        (256, 32)
    """
    if init not in INITS:
        raise ConfigError(f"init must be one of {INITS}, got {init!r}")
    values = [bits] if isinstance(bits, int) else list(bits.values())
    for b in values if bias_bits is None else [*values, bias_bits]:
        if not isinstance(b, int) or isinstance(b, bool) or not 1 <= b <= MAX_BITS:
            raise ConfigError(f"bits must be an integer in 1..{MAX_BITS}, got {b!r}")
    ignore = tuple(ignore)
    layers: list[LayerCluster] = []
    for name, module in model.named_modules():
        if not isinstance(module, LAYER_TYPES) or any(_matches(name, p) for p in ignore):
            continue
        layer_bits = _bits_for(name, bits)
        if layer_bits is None:
            continue
        weight = module.weight
        assert isinstance(weight, torch.Tensor)  # Linear / Conv always have a weight tensor
        shared = _share(weight, layer_bits, exact=exact, max_iter=max_iter)
        if shared is None:
            continue
        layer = LayerCluster(name, layer_bits, *shared)
        if bias_bits is not None and isinstance(module.bias, torch.Tensor):
            bias_shared = _share(module.bias, bias_bits, exact=exact, max_iter=max_iter)
            if bias_shared is not None:  # an all-zero bias is left as it is
                layer = replace(layer, bias_bits=bias_bits, bias_clusters=bias_shared[0])
        layers.append(layer)
    return ClusterReport(tuple(layers))


@torch.no_grad()
def _share(
    tensor: torch.Tensor, bits: int, *, exact: bool, max_iter: int
) -> tuple[int, int, float] | None:
    # k-means of the non-zeros of `tensor` with 2**bits centroids, in place: (distinct values
    # left, values clustered, mean squared change), or None when all are zero.
    mask = tensor != 0  # same shape as tensor
    survivors = tensor[mask]  # (nnz,)
    if survivors.numel() == 0:
        return None
    res = kmeans_1d(survivors, 1 << bits, exact=exact, max_iter=max_iter)
    shared = res.reconstruct().to(tensor.dtype)  # (nnz,)
    tensor[mask] = shared
    return int(torch.unique(shared[shared != 0]).numel()), survivors.numel(), res.mse
