"""The teacher of distillation: one model or an ensemble, always in eval mode, never trained.

An ensemble averages its members' logits (and, for feature hints, their features at the same
layer names). Every call puts the members in eval mode and runs them under ``torch.no_grad()``,
so no teacher parameter ever gets a gradient and dropout / BatchNorm statistics stay fixed.

**Caching.** For a fixed training set the teacher's logits never change, so
:meth:`Teacher.precompute` runs the teacher once over a dataset and keeps an ``(N, K)`` table
indexed by sample index. The training loop hands loss terms only the batch ``x`` (not the
sample indices), so each sample is found by a fingerprint of its exact bytes (BLAKE2b of the
float32 tensor) that maps to its index. A batch whose samples are all known is served from the
table; any other batch (augmented, shifted, or from another dataset) runs the teacher live, so
a stale or partial cache never gives a wrong target. Features are not cached (too large).

Example:
    >>> import torch
    >>> from torch import nn
    >>> a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    >>> x = torch.randn(5, 4)
    >>> t = Teacher([a, b])
    >>> torch.allclose(t.logits(x), (a(x) + b(x)) / 2)
    True
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from torchshrink.core.errors import ConfigError, ShapeError
from torchshrink.measure.accuracy import _logits


@dataclass(frozen=True)
class TeacherOutput:
    """What one teacher pass produced, averaged over the ensemble.

    Attributes:
        logits: ``(B, K)`` mean logits of the members.
        features: mean output of each requested layer, by layer name.
    """

    logits: torch.Tensor
    features: dict[str, torch.Tensor] = field(default_factory=dict)


class Teacher:
    """One model or an ensemble whose averaged logits / features are the distillation target.

    Args:
        models: a model or a non-empty sequence of models (same number of classes; for feature
            hints, each must have the named layers with the same output shape).
        cache: allow :meth:`precompute` to keep a table of logits (see the module docstring).

    Raises:
        ConfigError: no model was given, or a member is not an ``nn.Module``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> t = Teacher(nn.Sequential(nn.Linear(4, 3)))
        >>> t(torch.zeros(2, 4), layers=["0"]).features["0"].shape
        torch.Size([2, 3])
    """

    def __init__(self, models: nn.Module | Sequence[nn.Module], *, cache: bool = False) -> None:
        members = [models] if isinstance(models, nn.Module) else list(models)
        if not members:
            raise ConfigError("teacher: give at least one teacher model")
        for i, m in enumerate(members):
            if not isinstance(m, nn.Module):
                raise ConfigError(f"teacher {i}: expected an nn.Module, got {type(m).__name__}")
            m.eval()
        self.members: tuple[nn.Module, ...] = tuple(members)
        self.cache_enabled = cache
        self.cache_hits = 0
        self.cache_misses = 0
        self._table: torch.Tensor | None = None  # (N, K) logits by sample index
        self._index: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self.members)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, *, layers: Sequence[str] = ()) -> TeacherOutput:
        """Run every member on ``x`` and average logits and the outputs of ``layers``.

        Raises:
            ConfigError: a layer name is not a module of a member.
            ShapeError: members disagree on the shape of logits or of a feature.
        """
        logits_sum: torch.Tensor | None = None
        feat_sum: dict[str, torch.Tensor] = {}
        for i, model in enumerate(self.members):
            model.eval()  # every call: a caller may have switched a member back to train mode
            captured: dict[str, torch.Tensor] = {}
            handles = [
                _module(model, name, where=f"teacher {i}").register_forward_hook(
                    _capture(captured, name)
                )
                for name in layers
            ]
            try:
                out = _logits(model(x))  # (B, K)
            finally:
                for h in handles:
                    h.remove()
            logits_sum = out if logits_sum is None else _add(logits_sum, out, "logits", i)
            for name in layers:
                f = captured[name]
                feat_sum[name] = f if name not in feat_sum else _add(feat_sum[name], f, name, i)
        assert logits_sum is not None
        n = len(self.members)
        return TeacherOutput(logits_sum / n, {k: v / n for k, v in feat_sum.items()})

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` mean logits, from the precomputed table when every sample of ``x`` is in it.

        Example:
            >>> import torch
            >>> Teacher(torch.nn.Linear(4, 3)).logits(torch.zeros(2, 4)).shape
            torch.Size([2, 3])
        """
        if self._table is not None:
            idx = [self._index.get(k) for k in _fingerprints(x)]
            if all(i is not None for i in idx):
                self.cache_hits += 1
                return self._table[torch.tensor(idx)].to(x.device)
            self.cache_misses += 1
        return self(x).logits

    @property
    def cached_samples(self) -> int:
        """Number of samples in the logits table (0 before :meth:`precompute`)."""
        return 0 if self._table is None else int(self._table.shape[0])

    def precompute(self, dataset: Dataset[Any], *, batch_size: int = 256) -> None:
        """Run the teacher once over ``dataset`` and keep its logits by sample index.

        Args:
            dataset: ``(x, y)`` samples, in the order that defines the sample indices.
            batch_size: teacher batch size for the pass.

        Raises:
            ConfigError: caching was not enabled for this teacher.

        Example:
            >>> import torch
            >>> from torch.utils.data import TensorDataset
            >>> t = Teacher(torch.nn.Linear(4, 3), cache=True)
            >>> ds = TensorDataset(torch.randn(10, 4), torch.zeros(10, dtype=torch.long))
            >>> t.precompute(ds); t.cached_samples
            10
        """
        if not self.cache_enabled:
            raise ConfigError("teacher: precompute() needs Teacher(..., cache=True)")
        rows: list[torch.Tensor] = []
        index: dict[bytes, int] = {}
        seen = 0
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            x = batch[0] if isinstance(batch, list | tuple) else batch
            for i, key in enumerate(_fingerprints(x)):
                index.setdefault(key, seen + i)  # a duplicated sample keeps its first index
            seen += int(x.shape[0])
            rows.append(self(x).logits.cpu())  # (b, K)
        table = torch.cat(rows)  # (N, K)
        self._table, self._index = table, index

    def clear_cache(self) -> None:
        """Forget the precomputed table."""
        self._table, self._index = None, {}


def as_teacher(
    teacher: Teacher | nn.Module | Sequence[nn.Module], *, cache: bool = False
) -> Teacher:
    """``teacher`` itself if it is a :class:`Teacher`, else a new one around the model(s).

    Example:
        >>> len(as_teacher([torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)]))
        2
    """
    if isinstance(teacher, Teacher):
        if cache and not teacher.cache_enabled:
            teacher.cache_enabled = True
        return teacher
    return Teacher(teacher, cache=cache)


@torch.no_grad()
def agreement(
    student: nn.Module,
    teacher: Teacher | nn.Module,
    dataset: Dataset[Any],
    *,
    batch_size: int = 256,
) -> float:
    """Fraction of samples on which ``student`` and ``teacher`` predict the same class.

    Both run in eval mode (the student's mode is restored afterwards).

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> m = torch.nn.Linear(4, 3)
        >>> agreement(m, m, TensorDataset(torch.randn(8, 4), torch.zeros(8)))
        1.0
    """
    t = as_teacher(teacher)
    was_training = student.training
    student.eval()
    same, total = 0, 0
    try:
        for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            x = batch[0] if isinstance(batch, list | tuple) else batch
            s_pred = _logits(student(x)).argmax(dim=1)  # (B,)
            same += int((s_pred == t(x).logits.argmax(dim=1)).sum())
            total += int(x.shape[0])
    finally:
        student.train(was_training)
    return same / max(total, 1)


def _fingerprints(x: torch.Tensor) -> list[bytes]:
    rows = x.detach().to("cpu", torch.float32).contiguous().flatten(1).numpy()  # (B, D)
    return [hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in rows]


def _module(model: nn.Module, name: str, *, where: str) -> nn.Module:
    modules = dict(model.named_modules())
    if name not in modules:
        some = ", ".join(n for n in list(modules)[1:8])
        raise ConfigError(f"{where}: no layer named '{name}' (layers include: {some}, ...)")
    return modules[name]


def _capture(store: dict[str, torch.Tensor], name: str) -> Any:
    def hook(module: nn.Module, args: Any, output: Any) -> None:
        store[name] = output[0] if isinstance(output, tuple) else output

    return hook


def _add(total: torch.Tensor, new: torch.Tensor, what: str, member: int) -> torch.Tensor:
    if total.shape != new.shape:
        raise ShapeError(
            f"teacher ensemble: member {member} gives {what} of shape {tuple(new.shape)}, "
            f"member 0 gives {tuple(total.shape)}; ensemble members must agree"
        )
    return total + new
