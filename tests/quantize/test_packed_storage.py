"""Sub-8-bit weight codes are bit-packed in model files and unpacked, bit-exact, on load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import torchshrink
from torchshrink.measure.profile import profile
from torchshrink.quantize.codebook import quantize_codebook
from torchshrink.quantize.config import QuantConfig
from torchshrink.quantize.ptq import quantize
from torchshrink.quantize.spec import QuantSpec


def _file_bytes(model: nn.Module, path: Path) -> int:
    torchshrink.save(model, path)
    x = torch.zeros(1, 1, 28, 28)
    return profile(model, x, measure_latency=False, measure_memory=False, file_path=path).file_bytes


@pytest.fixture(scope="module")
def lenet300() -> nn.Module:
    torch.manual_seed(0)
    return torchshrink.load_model("zoo:lenet300")  # 266k weights: weights dominate the file


def test_w4_codes_are_packed_two_per_byte_in_state(lenet300: nn.Module) -> None:
    q = quantize(lenet300, QuantConfig.preset("w4"))
    state = q.state_dict()
    assert state["fc1.weight_q"].dtype == torch.uint8
    assert state["fc1.weight_q"].numel() == 300 * 784 // 2
    assert q.fc1.weight_q.shape == (300, 784)  # the live module keeps unpacked codes


@pytest.mark.parametrize(
    ("scheme", "limit"), [("w8", 0.30), ("w4", 0.15), ("binary", 0.06), ("ternary", 0.09)]
)
def test_file_size_ratio_and_bit_exact_reload(
    lenet300: nn.Module, tmp_path: Path, scheme: str, limit: float
) -> None:
    float_bytes = _file_bytes(lenet300, tmp_path / "f.safetensors")
    if scheme in ("binary", "ternary"):
        q = quantize_codebook(lenet300, scheme)
    else:
        q = quantize(lenet300, QuantConfig.preset(scheme))
    path = tmp_path / f"{scheme}.safetensors"
    ratio = _file_bytes(q, path) / float_bytes
    assert ratio < limit
    back = torchshrink.load(path)
    for name in ("fc1", "fc2", "fc3"):
        assert torch.equal(back.get_submodule(name).weight_q, q.get_submodule(name).weight_q)
    x = torch.randn(8, 1, 28, 28)
    assert torch.equal(back(x), q(x))


@pytest.mark.parametrize("bits", [2, 3, 5, 7])
def test_odd_widths_and_odd_counts_round_trip_through_load_state_dict(bits: int) -> None:
    net = nn.Sequential(nn.Linear(7, 3), nn.ReLU(), nn.Linear(3, 5))  # 21 and 15 codes
    cfg = QuantConfig.preset("w8", weight=QuantSpec(bits=bits, granularity="per_channel"))
    q = quantize(net, cfg)
    state = q.state_dict()
    assert state["0.weight_q"].numel() == (21 * bits + 7) // 8
    fresh = quantize(nn.Sequential(nn.Linear(7, 3), nn.ReLU(), nn.Linear(3, 5)), cfg)
    fresh.load_state_dict(state)
    assert torch.equal(fresh[0].weight_q, q[0].weight_q)
    assert torch.equal(fresh[0].module.weight, q[0].dequantized_weight())


def test_tiny_weight_is_left_unpacked_when_packing_saves_nothing() -> None:
    q = quantize(nn.Sequential(nn.Linear(1, 1)), QuantConfig.preset("w4"))
    assert q.state_dict()["0.weight_q"].dtype == torch.int8
