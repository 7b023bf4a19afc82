"""torchshrink.distill: knowledge distillation as loss terms of the one training loop.

Soft targets with temperature (Hinton et al. 2015), FitNets hints with learned adapters,
attention transfer (Zagoruyko & Komodakis 2017), and a teacher that is one model or an
ensemble (averaged logits / features), optionally with cached logits.

Example:
    >>> from torchshrink.distill import DistillConfig
    >>> DistillConfig(temperature=20.0, alpha=0.9).temperature
    20.0
"""

from __future__ import annotations

from torchshrink.distill.check import check_teacher
from torchshrink.distill.distiller import DistillConfig, distill, distill_loss_terms
from torchshrink.distill.losses import (
    attention_map,
    attention_transfer_loss,
    hint_loss,
    make_adapter,
    soft_target_loss,
)
from torchshrink.distill.teacher import Teacher, TeacherOutput, agreement, as_teacher

__all__ = [
    "DistillConfig",
    "Teacher",
    "TeacherOutput",
    "agreement",
    "as_teacher",
    "attention_map",
    "attention_transfer_loss",
    "check_teacher",
    "distill",
    "distill_loss_terms",
    "hint_loss",
    "make_adapter",
    "soft_target_loss",
]
