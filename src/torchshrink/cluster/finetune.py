"""Fine-tuning of shared centroids through the one training loop (Deep Compression, stage 2b).

After :func:`~torchshrink.cluster.cluster_weights` every weight of a layer equals one of a few
centroids. Training the centroids instead of the weights (Han et al. 2016, section 3.3) keeps
that structure: the gradients of all weights in a cluster are added up, the centroid moves by
``lr * sum``, and every weight of the cluster moves with it. Pruned zeros have no cluster and
stay exactly zero.

This is a :class:`~torchshrink.train.TrainHook`, not a second training loop: in
:meth:`CentroidHook.before_step` each clustered weight's gradient is replaced by its cluster's
summed (or mean) gradient, so the optimizer moves all members of a cluster identically (same
gradient, same value, hence the same momentum and weight decay); :meth:`CentroidHook.after_step`
then snaps every weight back onto its cluster's centroid, which removes float rounding and any
drift, so the number of distinct values of a layer never grows.

The assignment is stored compactly: one int label per weight (``-1`` for a pruned zero) plus a
``(k,)`` codebook per layer (:class:`Assignment`).

Example:
    >>> import torch
    >>> from torch import nn
    >>> from torchshrink.cluster import cluster_weights
    >>> m = nn.Linear(32, 4)
    >>> report = cluster_weights(m, bits=2)
    >>> a = assignments_from_model(m, report)
    >>> a["weight"].codebook.shape, a["weight"].labels.dtype
    (torch.Size([4]), torch.int16)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from torchshrink.cluster.kmeans_share import LAYER_TYPES, MAX_BITS, ClusterReport
from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import ConfigError
from torchshrink.train.config import TrainConfig
from torchshrink.train.distributed import sync_from_main
from torchshrink.train.hooks import LossTerm, TrainHook, TrainState
from torchshrink.train.loop import TrainResult, train

Reduce = Literal["sum", "mean"]
MAX_CLUSTERS = 1 << MAX_BITS  # the largest codebook cluster_weights makes
# Without a ClusterReport, a layer of more than _MIN_SHARED non-zero weights in which (nearly)
# no two share a value was not clustered: cluster_weights at 16 bits leaves a 19,200-weight
# layer unchanged, so a distinct-value limit alone cannot tell. Trained float32 layers small
# enough to pass MAX_CLUSTERS repeat under 0.1% of their values by chance; a layer shared by
# k < nnz / 2 centroids has under half. Small layers are exempt: at 8 bits (Deep Compression's
# conv width) k-means gives each of up to 256 weights its own centroid.
_UNSHARED_FRACTION = 0.9
_MIN_SHARED = 1 << 8


@dataclass(frozen=True)
class Assignment:
    """The cluster of every weight of one tensor, and the shared values.

    The codebook tensor is updated in place by :class:`CentroidHook` during fine-tuning.

    Attributes:
        labels: index into ``codebook`` per weight, shaped like the weight; ``-1`` marks a
            pruned zero. int16 when the codebook fits, else int32.
        codebook: ``(k,)`` float32 centroids.

    Example:
        >>> a = Assignment(torch.tensor([[0, -1], [1, 0]], dtype=torch.int16),
        ...                torch.tensor([0.5, -2.0]))
        >>> a.weight().tolist(), a.clusters
        ([[0.5, 0.0], [-2.0, 0.5]], 2)
    """

    labels: torch.Tensor
    codebook: torch.Tensor

    @property
    def clusters(self) -> int:
        """Codebook size ``k``."""
        return int(self.codebook.numel())

    def weight(self) -> torch.Tensor:
        """The weight this assignment describes (float32, zeros where ``labels == -1``)."""
        labels = self.labels.long()
        out = torch.zeros(labels.shape, dtype=self.codebook.dtype)
        keep = labels >= 0
        out[keep] = self.codebook[labels[keep]]
        return out


def _layer_names(model: nn.Module, layers: ClusterReport | Iterable[str] | None) -> list[str]:
    if layers is None:
        return [n for n, m in model.named_modules() if isinstance(m, LAYER_TYPES)]
    if isinstance(layers, ClusterReport):
        return [layer.name for layer in layers.layers]
    return list(layers)


def assignments_from_model(
    model: nn.Module,
    layers: ClusterReport | Iterable[str] | None = None,
    *,
    max_clusters: int | None = None,
) -> dict[str, Assignment]:
    """Read the cluster assignment of already-shared weights off the model.

    Each distinct non-zero value of a layer's weight is one cluster (what
    :func:`~torchshrink.cluster.cluster_weights` leaves behind); zeros get label ``-1``.

    Args:
        model: the clustered model (not changed).
        layers: which layers: a :class:`ClusterReport`, module names, or ``None`` for every
            Linear / Conv layer.
        max_clusters: most distinct non-zero values a layer may have. ``None``: ``2**bits``
            of each layer of a :class:`ClusterReport`, else :data:`MAX_CLUSTERS` (the
            largest codebook of ``cluster_weights``, 16 bits).

    Returns:
        ``{"<module>.weight": Assignment}`` in module order, with ``"<module>.bias"`` after
        its weight for the layers whose bias the report says was shared (``bias_bits``).

    Raises:
        ConfigError: a named module does not exist or has no weight, or a layer was not
            clustered: it has more than the limit of distinct values, or (without a
            :class:`ClusterReport`) more than 256 non-zero weights of which over 90% hold
            a value no other weight holds. Pass the report for layers clustered with
            ``2**bits`` close to their weight count.

    Example:
        >>> m = nn.Linear(3, 1)
        >>> _ = m.weight.data.copy_(torch.tensor([[0.5, 0.0, 0.5]]))
        >>> assignments_from_model(m)["weight"].labels.tolist()
        [[0, -1, 0]]
    """
    modules = dict(model.named_modules())
    report = layers if isinstance(layers, ClusterReport) else None
    bits = {c.name: c.bits for c in report.layers} if report is not None else None
    bias_bits = {c.name: c.bias_bits for c in report.layers} if report is not None else {}
    out: dict[str, Assignment] = {}
    for name in _layer_names(model, layers):
        module = modules.get(name)
        weight = getattr(module, "weight", None) if module is not None else None
        if not isinstance(weight, torch.Tensor):
            raise ConfigError(f"layer '{name}' is not a module with a weight in this model")
        key = f"{name}.weight" if name else "weight"
        out[key] = _assignment(name, weight, max_clusters, bits)
        bias = getattr(module, "bias", None)
        b = bias_bits.get(name)
        if b is not None and isinstance(bias, torch.Tensor):  # shared by cluster_weights too
            limit = 1 << b
            # bits={}: a bias is checked against its own limit only (its values are few)
            out[key.removesuffix("weight") + "bias"] = _assignment(
                f"{name} (bias)", bias, max_clusters or limit, {}
            )
    return out


def _assignment(
    name: str, tensor: torch.Tensor, max_clusters: int | None, bits: dict[str, int] | None
) -> Assignment:
    w = tensor.detach().cpu().float()
    nonzeros = w[w != 0]  # (nnz,)
    codebook = torch.unique(nonzeros)  # (k,) ascending
    _check_clustered(name, codebook.numel(), nonzeros.numel(), max_clusters, bits)
    dtype = torch.int16 if codebook.numel() <= 1 << 15 else torch.int32
    labels = torch.full(w.shape, -1, dtype=dtype)
    nz = w != 0
    labels[nz] = torch.searchsorted(codebook, w[nz]).to(dtype)
    return Assignment(labels, codebook)


def _check_clustered(
    name: str, distinct: int, nonzeros: int, max_clusters: int | None, bits: dict[str, int] | None
) -> None:
    hint = "cluster it first with cluster_weights()"
    limit = max_clusters
    if limit is None:
        limit = 1 << bits[name] if bits is not None and name in bits else MAX_CLUSTERS
    if distinct > limit:
        raise ConfigError(
            f"layer '{name}' has {distinct} distinct non-zero weights (more than {limit}): {hint}"
        )
    if bits is None and nonzeros > _MIN_SHARED and distinct > _UNSHARED_FRACTION * nonzeros:
        raise ConfigError(
            f"layer '{name}' has {distinct} distinct non-zero weights among {nonzeros} (almost "
            f"none share a value): {hint}, or pass its ClusterReport as the assignments"
        )


class CentroidHook(TrainHook):
    """Train shared centroids: per-cluster gradients before the step, snap back after it.

    Args:
        assignments: ``{parameter key: Assignment}`` (see :func:`assignments_from_model`).
        reduce: ``"sum"`` (the gradient of the loss with respect to the centroid, as in Deep
            Compression) or ``"mean"`` (a step the size of one weight's, for large clusters).

    Raises:
        ConfigError: an unknown ``reduce``, or a key that is not a parameter of the model
            or whose shape differs from its labels (at train start).

    Example:
        >>> m = nn.Linear(8, 2)
        >>> _ = m.weight.data.copy_(torch.tensor([-0.5, 0.0, 0.5, 0.25] * 4).view(2, 8))
        >>> hook = CentroidHook(assignments_from_model(m))
        >>> hook.reduce
        'sum'
    """

    def __init__(self, assignments: Mapping[str, Assignment], *, reduce: Reduce = "sum") -> None:
        if reduce not in ("sum", "mean"):
            raise ConfigError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
        self.assignments = dict(assignments)
        self.reduce = reduce
        # key -> (parameter, flat positions of survivors, their labels, cluster sizes)
        self._plan: dict[str, tuple[nn.Parameter, torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def on_train_start(self, state: TrainState) -> None:
        # Under torchrun the weights are now rank 0's; so must the clusters read off them be.
        self.assignments = sync_from_main(self.assignments)
        params = dict(state.model.named_parameters())
        self._plan.clear()
        for key, a in self.assignments.items():
            p = params.get(key)
            if p is None:
                raise ConfigError(f"assignment '{key}' names no parameter of the model")
            if tuple(p.shape) != tuple(a.labels.shape):
                raise ConfigError(
                    f"assignment '{key}': labels have shape {tuple(a.labels.shape)}, the "
                    f"parameter has {tuple(p.shape)}"
                )
            flat = a.labels.reshape(-1).long().to(p.device)  # (numel,)
            pos = torch.nonzero(flat >= 0).squeeze(1)  # (nnz,)
            lab = flat[pos]  # (nnz,)
            counts = torch.bincount(lab, minlength=a.clusters)  # (k,)
            self._plan[key] = (p, pos, lab, counts)
        self._snap()

    @torch.no_grad()
    def before_step(self, state: TrainState) -> None:
        for p, pos, lab, counts in self._plan.values():
            if p.grad is None:
                continue
            g = p.grad.reshape(-1)  # (numel,)
            per = torch.zeros(counts.numel(), dtype=g.dtype, device=g.device)
            per.index_add_(0, lab, g[pos])  # (k,) summed gradient per cluster
            if self.reduce == "mean":
                per /= counts.clamp(min=1)
            new = torch.zeros_like(g)
            new[pos] = per[lab]  # pruned positions get no gradient
            p.grad.copy_(new.view_as(p.grad))

    def after_step(self, state: TrainState) -> None:
        self._snap()

    @torch.no_grad()
    def _snap(self) -> None:
        for key, (p, pos, lab, counts) in self._plan.items():
            flat = p.data.reshape(-1)  # (numel,)
            sums = torch.zeros(counts.numel(), dtype=torch.float64, device=flat.device)
            sums.index_add_(0, lab, flat[pos].double())
            cb = self.assignments[key].codebook
            # Members of a cluster moved identically; their mean removes float rounding. An
            # empty cluster keeps its old centroid.
            means = torch.where(counts > 0, sums / counts.clamp(min=1), cb.to(sums)).to(cb.dtype)
            cb.copy_(means.cpu())
            new = torch.zeros_like(flat)
            new[pos] = means.to(flat)[lab]
            flat.copy_(new)


@dataclass(frozen=True)
class CentroidResult:
    """What :func:`finetune_centroids` did.

    Attributes:
        train: the training run (accuracy, history).
        assignments: the assignment with the fine-tuned codebooks.
        clusters: distinct non-zero values per parameter after fine-tuning.
    """

    train: TrainResult
    assignments: dict[str, Assignment]
    clusters: dict[str, int]


def finetune_centroids(
    model: nn.Module,
    data: DataBundle,
    config: TrainConfig | None = None,
    *,
    assignments: Mapping[str, Assignment] | ClusterReport | None = None,
    reduce: Reduce = "sum",
    hooks: Sequence[TrainHook] = (),
    loss_terms: Sequence[LossTerm] = (),
) -> CentroidResult:
    """Fine-tune the shared centroids of a clustered model **in place**.

    Args:
        model: a model whose layers were shared by :func:`cluster_weights`.
        data: training data.
        config: training settings; ``TrainConfig.preset("finetune")`` when ``None``.
        assignments: which weights share which centroid: a mapping from
            :func:`assignments_from_model`, a :class:`ClusterReport` (the assignment is read
            off its layers) or ``None`` (every Linear / Conv layer).
        reduce: per-cluster gradient, ``"sum"`` or ``"mean"`` (see :class:`CentroidHook`).
        hooks: more training hooks (run after the centroid hook).
        loss_terms: extra losses added to the cross-entropy (e.g. distillation terms).

    Raises:
        ConfigError: see :func:`assignments_from_model` and :class:`CentroidHook`.

    Example:
        >>> import torchshrink
        >>> from torchshrink.cluster import cluster_weights
        >>> data = torchshrink.load_data("digits", limit=200)
        >>> m = torchshrink.load_model("zoo:lenet300", model_args={"input_size": 8})
        >>> report = cluster_weights(m, 3)
        >>> cfg = TrainConfig(epochs=1, lr=0.01, show_progress=False)
        >>> r = finetune_centroids(m, data, cfg, assignments=report)
        >>> max(r.clusters.values()) <= 8
        True
    """
    if assignments is None or isinstance(assignments, ClusterReport):
        assignments = assignments_from_model(model, assignments)
    config = config or TrainConfig.preset("finetune")
    hook = CentroidHook(assignments, reduce=reduce)
    result = train(model, data, config, hooks=[hook, *hooks], loss_terms=loss_terms)
    params = dict(model.named_parameters())
    clusters = {
        k: int(torch.unique(params[k].detach()[params[k].detach() != 0]).numel())
        for k in hook.assignments
    }
    return CentroidResult(result, hook.assignments, clusters)
