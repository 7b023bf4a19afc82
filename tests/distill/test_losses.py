"""Distillation losses: soft-target KL with T^2, FitNets hints with adapters, attention transfer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchshrink.core.errors import ConfigError, ShapeError
from torchshrink.distill.losses import (
    attention_map,
    attention_transfer_loss,
    hint_loss,
    make_adapter,
    soft_target_loss,
)


def test_kl_is_zero_for_identical_and_shifted_logits() -> None:
    t = torch.randn(16, 10)
    assert float(soft_target_loss(t, t, temperature=3.0)) == pytest.approx(0.0, abs=1e-6)
    # Softmax ignores a per-sample constant, so shifted logits are the same distribution.
    assert float(soft_target_loss(t + 5.0, t, temperature=3.0)) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 5.0])
def test_kl_is_t_squared_times_softened_kl(temperature: float) -> None:
    s, t = torch.randn(8, 10), torch.randn(8, 10)
    p_t = F.softmax(t / temperature, dim=1)
    manual = (p_t * (p_t.log() - F.log_softmax(s / temperature, dim=1))).sum(dim=1).mean()
    got = soft_target_loss(s, t, temperature=temperature)
    assert float(got) == pytest.approx(temperature**2 * float(manual), rel=1e-5)


def test_high_temperature_limit_matches_logit_matching() -> None:
    # Hinton et al.: for large T, T^2 * KL -> sum_k (z_k - v_k)^2 / (2K) with zero-mean logits.
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    sc, tc = s - s.mean(dim=1, keepdim=True), t - t.mean(dim=1, keepdim=True)
    limit = ((sc - tc) ** 2).sum(dim=1).mean() / (2 * 10)
    assert float(soft_target_loss(s, t, temperature=200.0)) == pytest.approx(float(limit), rel=2e-2)


def test_kl_gradient_reaches_student_only() -> None:
    s = torch.randn(4, 5, requires_grad=True)
    t = torch.randn(4, 5, requires_grad=True)
    soft_target_loss(s, t, temperature=2.0).backward()
    assert s.grad is not None and float(s.grad.abs().sum()) > 0
    assert t.grad is None


def test_kl_rejects_bad_shapes_and_temperature() -> None:
    with pytest.raises(ShapeError, match="differ in shape"):
        soft_target_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        soft_target_loss(torch.zeros(2, 3), torch.zeros(2, 3), temperature=0.0)


def test_make_adapter_kinds() -> None:
    conv = make_adapter(torch.Size([2, 8, 4, 4]), torch.Size([2, 16, 4, 4]))
    assert isinstance(conv, nn.Conv2d) and conv.weight.shape == (16, 8, 1, 1)
    lin = make_adapter(torch.Size([2, 8]), torch.Size([2, 32]))
    assert isinstance(lin, nn.Linear) and lin.weight.shape == (32, 8)
    assert isinstance(make_adapter(torch.Size([2, 8]), torch.Size([2, 8])), nn.Identity)
    with pytest.raises(ShapeError, match="spatial sizes differ"):
        make_adapter(torch.Size([2, 8, 4, 4]), torch.Size([2, 8, 2, 2]))
    with pytest.raises(ShapeError, match="same rank"):
        make_adapter(torch.Size([2, 8]), torch.Size([2, 8, 2, 2]))


def test_hint_loss_with_adapter_trains() -> None:
    torch.manual_seed(0)
    student_feat = torch.randn(64, 8, 3, 3)
    target_map = torch.randn(16, 8, 1, 1)
    teacher_feat = F.conv2d(student_feat, target_map)  # (64, 16, 3, 3): reachable by a 1x1 conv
    adapter = make_adapter(student_feat.shape, teacher_feat.shape)
    opt = torch.optim.Adam(adapter.parameters(), lr=0.05)
    first = hint_loss(student_feat, teacher_feat, adapter).item()
    for _ in range(150):
        opt.zero_grad()
        loss = hint_loss(student_feat, teacher_feat, adapter)
        loss.backward()
        opt.step()
    assert loss.item() < 0.01 * first


def test_hint_loss_value_and_shape_error() -> None:
    assert float(hint_loss(torch.zeros(2, 3), torch.full((2, 3), 3.0))) == pytest.approx(9.0)
    with pytest.raises(ShapeError, match="does not match"):
        hint_loss(torch.zeros(2, 3), torch.zeros(2, 4))


def test_attention_transfer_zero_for_identical_maps_and_scale_invariant() -> None:
    f = torch.randn(3, 6, 5, 5)
    assert float(attention_transfer_loss(f, f)) == pytest.approx(0.0, abs=1e-6)
    # Normalisation makes the map independent of scale and of the channel count.
    assert float(attention_transfer_loss(2.0 * f, f)) == pytest.approx(0.0, abs=1e-6)
    assert float(attention_transfer_loss(f, torch.cat([f, f], dim=1))) == pytest.approx(
        0.0, abs=1e-6
    )
    assert float(attention_transfer_loss(f, torch.randn(3, 6, 5, 5))) > 0.05


def test_attention_map_is_unit_norm_and_pools_mismatched_sizes() -> None:
    am = attention_map(torch.randn(4, 3, 6, 6))
    assert am.shape == (4, 36)
    assert torch.allclose(am.norm(dim=1), torch.ones(4), atol=1e-6)
    loss = attention_transfer_loss(torch.randn(2, 4, 8, 8), torch.randn(2, 9, 4, 4))
    assert loss.shape == () and float(loss) > 0
    with pytest.raises(ShapeError, match=r"\(B, C, H, W\)"):
        attention_transfer_loss(torch.randn(2, 4), torch.randn(2, 4))
