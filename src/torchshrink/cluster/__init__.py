"""torchshrink.cluster: weight sharing by per-layer k-means (Deep Compression, stage 2).

Example:
    >>> from torch import nn
    >>> from torchshrink.cluster import cluster_weights
    >>> m = nn.Linear(16, 4)
    >>> cluster_weights(m, bits=2).layers[0].clusters
    4
"""

from __future__ import annotations

from torchshrink.cluster.finetune import (
    Assignment,
    CentroidHook,
    CentroidResult,
    assignments_from_model,
    finetune_centroids,
)
from torchshrink.cluster.kmeans_share import ClusterReport, LayerCluster, cluster_weights

__all__ = [
    "Assignment",
    "CentroidHook",
    "CentroidResult",
    "ClusterReport",
    "LayerCluster",
    "assignments_from_model",
    "cluster_weights",
    "finetune_centroids",
]
