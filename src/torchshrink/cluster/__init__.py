"""torchshrink.cluster: weight sharing by per-layer k-means (Deep Compression, stage 2).

Example:
    >>> from torch import nn
    >>> from torchshrink.cluster import cluster_weights
    >>> m = nn.Linear(16, 4)
    >>> cluster_weights(m, bits=2).layers[0].clusters
    4
"""

from __future__ import annotations

from torchshrink.cluster.kmeans_share import ClusterReport, LayerCluster, cluster_weights

__all__ = ["ClusterReport", "LayerCluster", "cluster_weights"]
