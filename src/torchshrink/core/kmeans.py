"""1-D k-means codebooks: the shared primitive of non-uniform quantization and weight sharing.

Two solvers over the distinct values (weighted by how often each occurs):

- Lloyd's algorithm with linear initialisation between min and max (deterministic, as in Deep
  Compression, where linear init beat random and density-based init);
- the exact optimum by dynamic programming over the sorted values (``O(k * n^2)`` for ``n``
  distinct values, so only for small inputs).

Example:
    >>> import torch
    >>> res = kmeans_1d(torch.tensor([0.0, 0.1, 0.9, 1.0]), 2)
    >>> [round(v, 2) for v in res.codebook.tolist()], res.labels.tolist()
    ([0.05, 0.95], [0, 0, 1, 1])
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from torchshrink.core.errors import ConfigError, EmptyDataError


@dataclass(frozen=True)
class KMeansResult:
    """A 1-D codebook and the assignment of every input value.

    Attributes:
        codebook: ``(k,)`` float32 centroids in ascending order (padded by repeating the
            largest when there are fewer distinct values than ``k``).
        labels: int64 index into ``codebook`` per input value, shaped like the input.
        mse: mean squared reconstruction error over the input.
        iterations: Lloyd iterations run (0 for the exact solver or the trivial case).
    """

    codebook: torch.Tensor
    labels: torch.Tensor
    mse: float
    iterations: int

    def reconstruct(self) -> torch.Tensor:
        """The input with every value replaced by its centroid."""
        return self.codebook[self.labels]


def kmeans_1d(
    values: torch.Tensor,
    k: int,
    *,
    max_iter: int = 100,
    exact: bool = False,
    max_exact: int = 1024,
) -> KMeansResult:
    """Cluster the scalars of ``values`` into ``k`` centroids.

    Args:
        values: any-shaped float tensor (all elements are clustered together).
        k: number of centroids, ``>= 1``.
        max_iter: Lloyd iteration limit (stops earlier once assignments settle).
        exact: use the exact dynamic-programming solver instead of Lloyd's.
        max_exact: largest number of distinct values the exact solver accepts.

    Raises:
        ConfigError: ``k < 1``, NaN / Inf in ``values``, or too many values for ``exact``.
        EmptyDataError: ``values`` is empty.

    Example:
        >>> kmeans_1d(torch.tensor([3.0, 1.0, 3.0]), 4).mse
        0.0
    """
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    if values.numel() == 0:
        raise EmptyDataError("kmeans_1d got an empty tensor")
    flat = values.detach().reshape(-1).double()
    if not bool(torch.isfinite(flat).all()):
        raise ConfigError("kmeans_1d input contains NaN or Inf")
    uniq, inverse, counts = torch.unique(flat, return_inverse=True, return_counts=True)
    w = counts.double()  # (n,) weight of each distinct value
    iters = 0
    if uniq.numel() <= k:
        centres = torch.cat([uniq, uniq[-1:].expand(k - uniq.numel())])
        ulabels = torch.arange(uniq.numel())
    elif exact:
        if uniq.numel() > max_exact:
            raise ConfigError(
                f"exact k-means accepts at most max_exact={max_exact} distinct values, "
                f"got {uniq.numel()}; use exact=False"
            )
        centres, ulabels = _exact(uniq, w, k)
    else:
        centres, ulabels, iters = _lloyd(uniq, w, k, max_iter)
    err = float((w * (uniq - centres[ulabels]) ** 2).sum() / w.sum())
    labels = ulabels[inverse].reshape(values.shape)
    return KMeansResult(centres.float(), labels, err, iters)


def _lloyd(
    x: torch.Tensor, w: torch.Tensor, k: int, max_iter: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Weighted Lloyd's on sorted distinct ``x`` ``(n,)``; empty clusters keep their centroid."""
    centres = torch.linspace(float(x[0]), float(x[-1]), k, dtype=torch.float64)  # (k,)
    labels = torch.full_like(x, -1, dtype=torch.int64)
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 - `it` is reported
        centres = centres.sort().values
        # In 1-D the nearest centroid is found by bisecting the midpoints.
        new_labels = torch.searchsorted((centres[1:] + centres[:-1]) / 2, x)  # (n,)
        if torch.equal(new_labels, labels):
            break
        labels = new_labels
        sums = torch.zeros(k, dtype=torch.float64).index_add_(0, labels, w * x)
        mass = torch.zeros(k, dtype=torch.float64).index_add_(0, labels, w)
        centres = torch.where(mass > 0, sums / mass.clamp(min=1e-300), centres)
    return centres, labels, it


def _exact(x: torch.Tensor, w: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Optimal 1-D k-means: clusters are contiguous runs of sorted ``x``; DP over run ends."""
    n = x.numel()
    zero = x.new_zeros(1)
    cw = torch.cat([zero, w.cumsum(0)])  # (n + 1,) prefix sums
    cwx = torch.cat([zero, (w * x).cumsum(0)])
    cwx2 = torch.cat([zero, (w * x * x).cumsum(0)])
    # cost[m, i] = weighted SSE of the run x[m:i]  (n + 1, n + 1); inf where m >= i
    mass = cw[None, :] - cw[:, None]
    s1 = cwx[None, :] - cwx[:, None]
    s2 = cwx2[None, :] - cwx2[:, None]
    cost = (s2 - s1 * s1 / mass.clamp(min=1e-300)).clamp(min=0)
    cost = torch.where(mass > 0, cost, torch.full_like(cost, float("inf")))
    best = cost[0].clone()  # (n + 1,) best SSE of x[:i] with 1 cluster
    back = []
    for _ in range(1, k):
        total = best[:, None] + cost  # (m, i)
        best, arg = total.min(dim=0)
        back.append(arg)
    ends, i = [n], n
    for arg in reversed(back):
        i = int(arg[i])
        ends.append(i)
    bounds = [0, *sorted(ends)]  # run starts and the final end; runs are never empty
    labels = torch.empty(n, dtype=torch.int64)
    centres = torch.empty(k, dtype=torch.float64)
    for j, (a, b) in enumerate(itertools.pairwise(bounds)):
        labels[a:b] = j
        centres[j] = (cwx[b] - cwx[a]) / (cw[b] - cw[a])
    return centres, labels
