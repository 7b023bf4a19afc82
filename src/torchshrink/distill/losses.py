"""Distillation losses: soft targets with temperature, FitNets hints, attention transfer.

* :func:`soft_target_loss` is Hinton et al. (2015): ``T^2 * KL(softmax(t/T) || softmax(s/T))``.
  The ``T^2`` keeps the gradient magnitude of the soft targets independent of ``T`` (the
  gradients of the softened KL scale as ``1/T^2``), so ``alpha`` means the same at every ``T``.
* :func:`hint_loss` is FitNets (Romero et al. 2015): mean squared error between a student
  feature (through a learned adapter when widths differ, see :func:`make_adapter`) and a
  teacher feature.
* :func:`attention_transfer_loss` is Zagoruyko & Komodakis (2017): the distance between the
  L2-normalised spatial attention maps ``sum_c |A_c|^p`` of two feature maps.

Example:
    >>> import torch
    >>> t = torch.randn(4, 10)
    >>> float(soft_target_loss(t, t, temperature=4.0))
    0.0
    >>> f = torch.randn(2, 8, 5, 5)
    >>> float(attention_transfer_loss(f, f))
    0.0
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from torchshrink.core.errors import ConfigError, ShapeError


def soft_target_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0
) -> torch.Tensor:
    """``T^2 * KL(p_teacher || p_student)`` with both distributions softened by ``T``.

    Averaged over the batch (``batchmean``). Zero exactly when the logits agree up to a
    per-sample constant.

    Args:
        student_logits: ``(B, K)`` logits of the student (gradients flow into them).
        teacher_logits: ``(B, K)`` logits of the teacher (treated as constants).
        temperature: softmax temperature ``T > 0``.

    Raises:
        ShapeError: the two logit tensors differ in shape.

    Example:
        >>> s, t = torch.zeros(1, 2), torch.tensor([[0.0, 1.0]])
        >>> round(float(soft_target_loss(s, t, temperature=1.0)), 4)
        0.1109
    """
    if student_logits.shape != teacher_logits.shape:
        raise ShapeError(
            f"soft_target_loss: student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape"
        )
    if temperature <= 0:
        raise ConfigError(f"soft_target_loss: temperature must be > 0, got {temperature}")
    log_p_s = F.log_softmax(student_logits / temperature, dim=1)  # (B, K)
    log_p_t = F.log_softmax(teacher_logits.detach() / temperature, dim=1)  # (B, K)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * temperature**2


def make_adapter(student_shape: torch.Size, teacher_shape: torch.Size) -> nn.Module:
    """The FitNets regressor that maps a student feature to the teacher feature's width.

    ``(B, C, H, W)`` features get a bias-free 1x1 convolution, ``(B, ..., D)`` features a
    bias-free Linear on the last dimension; equal widths get ``nn.Identity`` (no parameters).

    Args:
        student_shape: shape of one batch of the student feature.
        teacher_shape: shape of the matching teacher feature.

    Raises:
        ShapeError: the ranks differ, or spatial / leading sizes differ.

    Example:
        >>> make_adapter(torch.Size([2, 8, 4, 4]), torch.Size([2, 16, 4, 4]))
        Conv2d(8, 16, kernel_size=(1, 1), stride=(1, 1), bias=False)
    """
    if len(student_shape) != len(teacher_shape) or len(student_shape) < 2:
        raise ShapeError(
            f"hint: student feature {tuple(student_shape)} and teacher feature "
            f"{tuple(teacher_shape)} must have the same rank (at least 2)"
        )
    if len(student_shape) == 4:
        if student_shape[2:] != teacher_shape[2:]:
            raise ShapeError(
                f"hint: spatial sizes differ: student {tuple(student_shape)}, teacher "
                f"{tuple(teacher_shape)}; pair layers of the same resolution"
            )
        c_s, c_t = student_shape[1], teacher_shape[1]
        return nn.Identity() if c_s == c_t else nn.Conv2d(c_s, c_t, kernel_size=1, bias=False)
    if student_shape[:-1] != teacher_shape[:-1]:
        raise ShapeError(
            f"hint: student feature {tuple(student_shape)} and teacher feature "
            f"{tuple(teacher_shape)} differ before the last dimension"
        )
    d_s, d_t = student_shape[-1], teacher_shape[-1]
    return nn.Identity() if d_s == d_t else nn.Linear(d_s, d_t, bias=False)


def hint_loss(
    student_feature: torch.Tensor,
    teacher_feature: torch.Tensor,
    adapter: nn.Module | None = None,
) -> torch.Tensor:
    """Mean squared error between ``adapter(student_feature)`` and the teacher feature.

    Args:
        student_feature: e.g. ``(B, C_s, H, W)`` or ``(B, D_s)``.
        teacher_feature: e.g. ``(B, C_t, H, W)`` or ``(B, D_t)``; treated as a constant.
        adapter: maps the student width to the teacher width; ``None`` means identity.

    Raises:
        ShapeError: the (adapted) shapes differ.

    Example:
        >>> f = torch.ones(2, 3)
        >>> float(hint_loss(f, 2 * f))
        1.0
    """
    mapped = adapter(student_feature) if adapter is not None else student_feature
    if mapped.shape != teacher_feature.shape:
        raise ShapeError(
            f"hint: adapted student feature {tuple(mapped.shape)} does not match teacher "
            f"feature {tuple(teacher_feature.shape)}"
        )
    return F.mse_loss(mapped, teacher_feature.detach())


def attention_map(feature: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Spatial attention ``sum_c |A_c|^p`` flattened and L2-normalised per sample.

    Args:
        feature: ``(B, C, H, W)`` activations.
        p: exponent (the paper uses 2).

    Raises:
        ShapeError: ``feature`` is not 4-D.

    Example:
        >>> attention_map(torch.ones(1, 3, 2, 2)).tolist()
        [[0.5, 0.5, 0.5, 0.5]]
    """
    if feature.dim() != 4:
        raise ShapeError(
            f"attention transfer needs (B, C, H, W) feature maps, got shape {tuple(feature.shape)}"
        )
    return F.normalize(_raw_map(feature, p).flatten(1), p=2.0, dim=1)  # (B, H*W)


def _raw_map(feature: torch.Tensor, p: float) -> torch.Tensor:
    return feature.abs().pow(p).sum(dim=1)  # (B, H, W)


def attention_transfer_loss(
    student_feature: torch.Tensor, teacher_feature: torch.Tensor, p: float = 2.0
) -> torch.Tensor:
    """Attention transfer: mean over the batch of ``||Q_s - Q_t||_2`` of normalised maps.

    Channel counts may differ (the maps sum over channels). When spatial sizes differ, the
    larger (unnormalised) map is average-pooled to the smaller size before normalisation.

    Args:
        student_feature: ``(B, C_s, H_s, W_s)``.
        teacher_feature: ``(B, C_t, H_t, W_t)``; treated as a constant.
        p: exponent of the attention map.

    Example:
        >>> a = torch.zeros(1, 1, 2, 2); a[0, 0, 0, 0] = 1
        >>> b = torch.zeros(1, 4, 2, 2); b[0, :, 1, 1] = 1
        >>> round(float(attention_transfer_loss(a, b)), 4)
        1.4142
    """
    s, t = student_feature, teacher_feature.detach()
    if s.dim() != 4 or t.dim() != 4:
        raise ShapeError(
            "attention transfer needs (B, C, H, W) feature maps, got student "
            f"{tuple(s.shape)} and teacher {tuple(t.shape)}"
        )
    q_s, q_t = _raw_map(s, p), _raw_map(t, p)  # (B, H_s, W_s), (B, H_t, W_t)
    size = (min(q_s.shape[1], q_t.shape[1]), min(q_s.shape[2], q_t.shape[2]))
    if q_s.shape[1:] != size:
        q_s = F.adaptive_avg_pool2d(q_s.unsqueeze(1), size).squeeze(1)
    if q_t.shape[1:] != size:
        q_t = F.adaptive_avg_pool2d(q_t.unsqueeze(1), size).squeeze(1)
    diff = F.normalize(q_s.flatten(1), dim=1) - F.normalize(q_t.flatten(1), dim=1)  # (B, H*W)
    return diff.norm(p=2, dim=1).mean()
