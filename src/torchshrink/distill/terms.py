"""Distillation as loss terms of the one training loop: soft targets, hints, attention transfer.

Each term follows :class:`~torchshrink.train.hooks.LossTerm` (``term(model, x, y, logits)``),
so distillation works wherever the loop runs: plain training, pruning fine-tuning, QAT. The
terms of one :func:`~torchshrink.distill.distiller.distill_loss_terms` call share one teacher
pass per batch and one set of forward hooks on the student that capture its intermediate
features during the loop's own forward pass (no second student forward). Call :meth:`close`
on every term when done to remove those hooks.

FitNets adapters (1x1 convolutions or Linears, see :func:`~torchshrink.distill.losses.make_adapter`)
are created on the first batch, when the feature shapes are known, and are trained by their own
Adam optimizer: it steps at the start of each call with the gradients that the loop's previous
``backward()`` left on them, so no hook is needed. The adapters belong to the term, never to the
student, so the saved student has exactly its own layers.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from torchshrink.distill.teacher import Teacher
    >>> teacher = Teacher(nn.Linear(4, 3))
    >>> term = SoftTargetTerm(TeacherPass(teacher, ()), temperature=2.0, weight=1.0)
    >>> x = torch.randn(5, 4)
    >>> float(term(nn.Identity(), x, torch.zeros(5), teacher.logits(x)))
    0.0
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from torchshrink.core.errors import ConfigError
from torchshrink.distill.losses import attention_transfer_loss, hint_loss, make_adapter
from torchshrink.distill.teacher import Teacher


class TeacherPass:
    """Runs the teacher at most once per batch and shares the result between terms.

    Args:
        teacher: the teacher.
        layers: teacher layers whose (averaged) outputs the feature terms need.
    """

    def __init__(self, teacher: Teacher, layers: Sequence[str]) -> None:
        self.teacher = teacher
        self.layers = tuple(dict.fromkeys(layers))
        self._batch: weakref.ref[torch.Tensor] | None = None
        self._logits: torch.Tensor | None = None
        self._features: dict[str, torch.Tensor] = {}

    def _refresh(self, x: torch.Tensor) -> None:
        # A weak reference (not id()) so that a new batch at a recycled address never matches.
        if self._batch is not None and self._batch() is x:
            return
        if self.layers:
            out = self.teacher(x, layers=self.layers)
            self._logits, self._features = out.logits, out.features
        else:
            self._logits, self._features = self.teacher.logits(x), {}
        self._batch = weakref.ref(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, K)`` teacher logits for the batch ``x``."""
        self._refresh(x)
        assert self._logits is not None
        return self._logits

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Teacher features by layer name for the batch ``x``."""
        self._refresh(x)
        return self._features


class StudentTaps:
    """Forward hooks that keep the latest output of named student layers.

    Args:
        student: the model being trained.
        layers: names from ``student.named_modules()``.

    Raises:
        ConfigError: a name is not a layer of ``student``.
    """

    def __init__(self, student: nn.Module, layers: Sequence[str]) -> None:
        modules = dict(student.named_modules())
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = []
        for name in dict.fromkeys(layers):
            if name not in modules:
                some = ", ".join(list(modules)[1:8])
                raise ConfigError(
                    f"distill: the student has no layer named '{name}' (layers include: {some}, ...)"
                )
            self._handles.append(modules[name].register_forward_hook(self._hook(name)))

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self.outputs[name] = output[0] if isinstance(output, tuple) else output

        return hook

    def get(self, name: str) -> torch.Tensor:
        """The latest output of layer ``name``."""
        if name not in self.outputs:
            raise ConfigError(f"distill: student layer '{name}' did not run in the forward pass")
        return self.outputs[name]

    def close(self) -> None:
        """Remove the hooks (idempotent)."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self.outputs = {}


class SoftTargetTerm:
    """``weight * T^2 * KL(teacher || student)`` on temperature-softened outputs (name ``kd``)."""

    name = "kd"

    def __init__(self, teacher: TeacherPass, *, temperature: float, weight: float) -> None:
        self.teacher, self.temperature, self.weight = teacher, temperature, weight

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor
    ) -> torch.Tensor:
        from torchshrink.distill.losses import soft_target_loss

        return self.weight * soft_target_loss(logits, self.teacher.logits(x), self.temperature)

    def close(self) -> None:
        """Nothing to release (symmetry with the feature terms)."""


class HintTerm:
    """FitNets hints: ``weight * sum_pairs MSE(adapter(student_f), teacher_f)`` (name ``hint``).

    Args:
        teacher: the shared teacher pass.
        taps: the shared student feature hooks.
        pairs: ``{student_layer: teacher_layer}``.
        weight: multiplies the summed hint losses.
        adapter_lr: Adam learning rate of the adapters.
    """

    name = "hint"

    def __init__(
        self,
        teacher: TeacherPass,
        taps: StudentTaps,
        *,
        pairs: dict[str, str],
        weight: float,
        adapter_lr: float = 1e-3,
    ) -> None:
        self.teacher, self.taps, self.pairs, self.weight = teacher, taps, dict(pairs), weight
        self.adapter_lr = adapter_lr
        self.adapters = nn.ModuleDict()  # student layer name (dots escaped) -> adapter
        self._optimizer: torch.optim.Optimizer | None = None

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor
    ) -> torch.Tensor:
        self._step_adapters()
        feats = self.teacher.features(x)
        total = logits.new_zeros(())
        for s_name, t_name in self.pairs.items():
            s_feat, t_feat = self.taps.get(s_name), feats[t_name]
            key = s_name.replace(".", "__")
            if key not in self.adapters:
                self.adapters[key] = make_adapter(s_feat.shape, t_feat.shape).to(s_feat.device)
                self._optimizer = None  # rebuilt below with the new parameters
            total = total + hint_loss(s_feat, t_feat, self.adapters[key])
        params = list(self.adapters.parameters())
        if self._optimizer is None and params:
            self._optimizer = torch.optim.Adam(params, lr=self.adapter_lr)
        return self.weight * total

    def _step_adapters(self) -> None:
        # Gradients left by the loop's last backward(); stepping here keeps the term hook-free.
        if self._optimizer is None or not torch.is_grad_enabled():
            return
        if any(p.grad is not None for p in self.adapters.parameters()):
            self._optimizer.step()
            self._optimizer.zero_grad(set_to_none=True)

    def close(self) -> None:
        """Apply the last pending adapter step and remove the student hooks."""
        self._step_adapters()
        self.taps.close()


class AttentionTerm:
    """Attention transfer: ``weight * sum_pairs AT(student_f, teacher_f)`` (name ``at``)."""

    name = "at"

    def __init__(
        self,
        teacher: TeacherPass,
        taps: StudentTaps,
        *,
        pairs: dict[str, str],
        weight: float,
        p: float = 2.0,
    ) -> None:
        self.teacher, self.taps, self.pairs = teacher, taps, dict(pairs)
        self.weight, self.p = weight, p

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor
    ) -> torch.Tensor:
        feats = self.teacher.features(x)
        total = logits.new_zeros(())
        for s_name, t_name in self.pairs.items():
            total = total + attention_transfer_loss(self.taps.get(s_name), feats[t_name], self.p)
        return self.weight * total

    def close(self) -> None:
        """Remove the student hooks."""
        self.taps.close()
