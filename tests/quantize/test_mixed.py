"""Mixed precision: sensitivity, allocation under an average-bits budget, errors."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import ConfigError, EmptyDataError
from torchshrink.measure.accuracy import evaluate
from torchshrink.quantize.config import QuantConfig
from torchshrink.quantize.mixed import layer_sensitivity, mixed_precision
from torchshrink.quantize.ptq import fit_group_size, get_quant_report, quantize
from torchshrink.quantize.spec import QuantSpec


def test_sensitivity_falls_with_more_bits(digits_cnn: nn.Module, digits: DataBundle) -> None:
    sens = layer_sensitivity(digits_cnn, digits.calibration(64), candidates=(2, 8))
    assert sorted(sens) == ["conv1", "conv2", "fc1", "fc2"]
    assert all(s[2] > s[8] >= 0 for s in sens.values())


@pytest.mark.parametrize("budget", [3.0, 4.5])
def test_plan_meets_the_budget_and_keeps_accuracy(
    digits_cnn: nn.Module, digits: DataBundle, budget: float
) -> None:
    model = copy.deepcopy(digits_cnn)
    plan = mixed_precision(model, digits.calibration(128), avg_bits=budget, keep_float=["conv1"])
    assert plan.bits["conv1"] is None
    assert budget - 1.0 <= plan.avg_bits <= budget
    assert {b for b in plan.bits.values() if b is not None} <= {2, 3, 4, 8}
    q = quantize(model, plan.config)
    report = get_quant_report(q)
    assert report is not None
    assert {r.name: r.weight_bits for r in report.layers} == plan.bits
    float_acc = evaluate(model, digits.test).accuracy
    assert evaluate(q, digits.test).accuracy > float_acc - 0.08


def test_budget_out_of_range_and_empty_data(digits_cnn: nn.Module) -> None:
    with pytest.raises(ConfigError, match=r"average bits 1 is out of range"):
        mixed_precision(digits_cnn, [torch.randn(4, 1, 8, 8)], avg_bits=1)
    with pytest.raises(ConfigError, match=r"candidate bits must be 2\.\.8"):
        mixed_precision(digits_cnn, [torch.randn(4, 1, 8, 8)], avg_bits=4, candidates=(4, 9))
    with pytest.raises(EmptyDataError, match="no samples"):
        mixed_precision(digits_cnn, [], avg_bits=4)


def test_group_size_falls_back_with_a_reason() -> None:
    spec = QuantSpec.preset("int4g128")
    assert fit_group_size(spec, (10, 256)) == (spec, "")
    got, why = fit_group_size(spec, (300, 784), name="fc1")
    assert got.group_size == 112 and "does not divide the input dim 784" in why
    got, why = fit_group_size(spec, (4, 131), name="p")  # 131 is prime
    assert got.granularity == "per_channel" and why.endswith("per channel")
    net = nn.Sequential(nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 3))
    q = quantize(net, QuantConfig.preset("w4g128"))
    report = get_quant_report(q)
    assert report is not None
    assert [r.reason.split("; ")[-1] for r in report.layers] == ["groups of 112", "groups of 16"]
    assert q[0].weight_scale.shape == (16, 7)
