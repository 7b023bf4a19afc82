"""Energy cost model: Horowitz 45 nm numbers, precision, width and sparsity effects."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchshrink.core.errors import ConfigError
from torchshrink.measure.energy import (
    EnergyCost,
    estimate_energy,
    model_energy,
    nonzero_weight_bytes,
    precision_of,
)


def mlp(width: int) -> nn.Sequential:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, width), nn.ReLU(), nn.Linear(width, 10))


def test_table_numbers() -> None:
    c = EnergyCost()
    assert (c.fp32_mult_pj, c.fp32_add_pj, c.int8_mult_pj, c.int8_add_pj) == (3.7, 0.9, 0.2, 0.03)
    assert (c.sram_read_pj, c.dram_read_pj) == (5.0, 640.0)
    assert c.mac_pj("fp32") == 4.6
    assert c.mac_pj("int8") == 0.23
    assert c.mac_pj("fp16") == 1.5
    with pytest.raises(ConfigError, match="'int3'"):
        c.mac_pj("int3")


def test_int8_is_cheaper_than_fp32_per_mac() -> None:
    fp32 = estimate_energy({"fp32": 1_000_000}, weight_bytes=4_000_000, activation_bytes=0)
    int8 = estimate_energy({"int8": 1_000_000}, weight_bytes=1_000_000, activation_bytes=0)
    assert fp32.compute_pj == pytest.approx(4.6e6)
    assert int8.compute_pj == pytest.approx(0.23e6)
    # one fp32 weight is one 32-bit DRAM word; an int8 weight a quarter word
    assert fp32.dram_pj == pytest.approx(1_000_000 * 640)
    assert int8.dram_pj == pytest.approx(250_000 * 640)
    assert fp32.total_mj == pytest.approx(fp32.total_pj * 1e-9)


def test_doubled_width_costs_more() -> None:
    x = torch.zeros(1, 1, 28, 28)
    narrow, wide = model_energy(mlp(100), x), model_energy(mlp(200), x)
    assert wide.compute_pj == pytest.approx(2 * narrow.compute_pj, rel=0.01)
    assert wide.total_pj > 1.9 * narrow.total_pj
    # fp32 weights: (784*100 + 100 + 100*10 + 10) words read once from DRAM
    assert narrow.dram_pj == pytest.approx(79_510 * 640)


def test_zero_weights_are_not_read_and_batch_shares_the_read() -> None:
    dense, sparse = mlp(100), mlp(100)
    with torch.no_grad():
        sparse[1].weight[:, 392:] = 0
    assert nonzero_weight_bytes(sparse) == nonzero_weight_bytes(dense) - 4 * 39_200
    x = torch.zeros(4, 1, 28, 28)
    d, s = model_energy(dense, x), model_energy(sparse, x)
    assert s.compute_pj == d.compute_pj  # dense kernels still multiply the zeros
    assert d.dram_pj - s.dram_pj == pytest.approx(39_200 * 640)
    assert d.per_sample_mj == pytest.approx(d.total_mj / 4)


def test_half_precision_and_custom_costs() -> None:
    assert precision_of("float16") == precision_of("bfloat16") == "fp16"
    assert precision_of("int8") == precision_of("quint8") == "int8"
    x = torch.zeros(1, 1, 28, 28)
    half = model_energy(mlp(100).to(torch.bfloat16), x.to(torch.bfloat16))
    full = model_energy(mlp(100), x)
    assert half.compute_pj == pytest.approx(full.compute_pj * 1.5 / 4.6)
    free_dram = model_energy(mlp(100), x, cost=EnergyCost(dram_read_pj=0.0))
    assert free_dram.dram_pj == 0.0 and free_dram.compute_pj == full.compute_pj
