"""recalibrate_bn re-estimates running statistics that match the data's true batch statistics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import EmptyDataError
from torchshrink.train.bn import recalibrate_bn


def all_inputs(data: DataBundle) -> torch.Tensor:
    return torch.stack([data.train[i][0] for i in range(len(data.train))])  # (N, 1, 8, 8)


def stale(bn: nn.modules.batchnorm._BatchNorm) -> None:
    bn.running_mean.fill_(5.0)  # type: ignore[union-attr]
    bn.running_var.fill_(7.0)  # type: ignore[union-attr]


def test_one_full_batch_gives_exact_statistics(digits: DataBundle) -> None:
    model = nn.Sequential(nn.BatchNorm2d(1), nn.Flatten(), nn.Linear(64, 10)).eval()
    stale(model[0])
    n = len(digits.train)  # type: ignore[arg-type]
    seen = recalibrate_bn(model, digits, num_batches=1, batch_size=n)
    x = all_inputs(digits)
    assert seen == n
    torch.testing.assert_close(model[0].running_mean, x.mean().reshape(1), rtol=0, atol=1e-5)
    torch.testing.assert_close(
        model[0].running_var, x.var(unbiased=True).reshape(1), rtol=1e-4, atol=0
    )


def test_many_batches_after_a_conv_match_true_statistics(digits: DataBundle) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(1, 4, 3, padding=1)
    bn = nn.BatchNorm2d(4, momentum=0.3)
    model = nn.Sequential(conv, bn, nn.ReLU(), nn.Flatten(), nn.Linear(256, 10)).eval()
    stale(bn)
    seen = recalibrate_bn(model, digits, num_batches=100, batch_size=200)
    assert seen == 1400  # 7 full batches
    with torch.no_grad():
        feats = conv(all_inputs(digits))  # (N, 4, 8, 8)
    true_mean = feats.mean(dim=(0, 2, 3))  # (4,)
    true_var = feats.var(dim=(0, 2, 3))  # (4,)
    torch.testing.assert_close(bn.running_mean, true_mean, rtol=0, atol=1e-4)
    # The average of within-batch variances misses only the small spread of the batch means.
    torch.testing.assert_close(bn.running_var, true_var, rtol=0.02, atol=0)
    assert bn.momentum == 0.3 and not model.training and not bn.training
    assert all(p.grad is None for p in model.parameters())


def test_dropout_stays_off_and_modes_are_restored(digits: DataBundle) -> None:
    bn = nn.BatchNorm1d(64)
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), bn).train()
    recalibrate_bn(model, digits, num_batches=1, batch_size=1400)
    flat = all_inputs(digits).flatten(1)  # (N, 64)
    # With dropout active the variance would be roughly doubled.
    torch.testing.assert_close(bn.running_var, flat.var(dim=0), rtol=1e-3, atol=1e-5)
    assert model.training and model[1].training and bn.training


def test_iterable_of_bare_inputs_and_limits() -> None:
    bn = nn.BatchNorm1d(3)
    batches = [torch.full((10, 3), float(i)) for i in range(4)]  # batch i has mean i, var 0
    assert recalibrate_bn(nn.Sequential(bn), batches, num_batches=2) == 20
    torch.testing.assert_close(bn.running_mean, torch.full((3,), 0.5))
    assert int(bn.num_batches_tracked) == 2  # type: ignore[arg-type]


def test_no_batchnorm_and_empty_data() -> None:
    assert recalibrate_bn(nn.Linear(3, 3), [torch.zeros(2, 3)]) == 0
    bn = nn.BatchNorm1d(3)
    stale(bn)
    with pytest.raises(EmptyDataError, match="recalibrate_bn"):
        recalibrate_bn(bn, [])
    assert float(bn.running_mean[0]) == 5.0  # type: ignore[index]
