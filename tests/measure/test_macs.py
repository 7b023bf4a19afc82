"""count_macs: LeNet-5 reference number, per-layer sums, residual / shared / functional layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchshrink.measure.macs import count_macs


def lenet5() -> nn.Sequential:
    """Caffe LeNet-5 as in Deep Compression: 431,080 params, 2,293,000 MACs on 1x28x28."""
    return nn.Sequential(
        nn.Conv2d(1, 20, 5),
        nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(800, 500),
        nn.ReLU(),
        nn.Linear(500, 10),
    )


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))  # (B, C, H, W)
        return F.relu(x + self.bn2(self.conv2(y)))  # (B, C, H, W)


class ResNetTiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.blocks = nn.Sequential(Block(8), Block(8))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(8, 10)
        self.proj = nn.Parameter(torch.randn(10, 10))  # used functionally in forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))  # (B, 8, H, W)
        logits = self.head(self.pool(x).flatten(1))  # (B, 10)
        return logits @ self.proj  # (B, 10)


def test_lenet5_macs_match_the_reference() -> None:
    r = count_macs(lenet5(), torch.zeros(1, 1, 28, 28))
    assert r.macs == pytest.approx(2_293_000, rel=0.01)
    assert r.flops == 2 * r.macs
    assert [la.macs for la in r.layers if la.macs] == [288_000, 1_600_000, 400_000, 5_000]
    assert r.layers[0].output_shape == (1, 20, 24, 24)
    assert r.by_op == {"aten.convolution": 2 * 1_888_000, "aten.addmm": 2 * 405_000}


def test_macs_scale_with_batch() -> None:
    assert count_macs(lenet5(), torch.zeros(4, 1, 28, 28)).macs == 4 * 2_293_000


def test_per_layer_macs_sum_to_total_on_residual_net() -> None:
    m = ResNetTiny()
    r = count_macs(m, torch.zeros(2, 3, 8, 8))
    assert sum(la.macs for la in r.layers) == r.macs
    by_name = {la.name: la for la in r.layers}
    assert by_name["stem"].macs == 2 * 8 * 64 * 27
    assert by_name["blocks.0.conv1"].macs == 2 * 8 * 64 * 72
    assert by_name[""].macs == 2 * 10 * 10  # the functional matmul at the top
    assert by_name["blocks.1.bn2"].output_shape == (2, 8, 8, 8)
    assert "blocks.0" not in by_name  # a container without own work is not a row


def test_shared_module_called_twice_counts_twice() -> None:
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(16, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.fc(x))

    r = count_macs(Twice(), torch.zeros(1, 16))
    assert r.macs == 2 * 256
    assert sum(la.macs for la in r.layers) == r.macs


def test_module_list_children_are_attributed_to_themselves() -> None:
    class Stack(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(8, 8) for _ in range(3)])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer in self.layers:
                x = layer(x)  # (B, 8)
            return x

    r = count_macs(Stack(), torch.zeros(2, 8))
    assert [(la.name, la.macs) for la in r.layers] == [(f"layers.{i}", 128) for i in range(3)]


def test_attention_is_counted_in_transformer_layers() -> None:
    enc = nn.TransformerEncoderLayer(32, 4, 64, batch_first=True)
    r = count_macs(enc, torch.zeros(2, 16, 32))
    tokens = 2 * 16
    projections = tokens * 32 * 32 * 4  # q, k, v and output, 32 -> 32 each
    attention = 2 * 16 * 16 * 32 * 2  # (q @ k^T) and (scores @ v) over 4 heads of 8
    ffn = tokens * 32 * 64 * 2
    assert r.macs == projections + attention + ffn
    assert torch.backends.mha.get_fastpath_enabled()  # switched off only while counting


class Attend(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(x, x, x)  # (B, H, S, D)


def test_functional_sdpa_is_counted_once() -> None:
    r = count_macs(Attend(), torch.randn(1, 2, 8, 4))
    assert r.macs == 2 * (2 * 8 * 8 * 4)  # two (8x4)@(4x8)-sized products per head
    assert [(la.name, la.macs) for la in r.layers] == [("", r.macs)]


def test_nonzero_macs_follow_weight_density() -> None:
    m = lenet5()
    with torch.no_grad():
        m[5].weight[:, :400] = 0  # fc1 half zero
    r = count_macs(m, torch.zeros(1, 1, 28, 28))
    assert r.macs == 2_293_000  # dense kernels do not skip zeros
    assert r.nonzero_macs == 2_293_000 - 200_000


def test_model_is_not_changed_and_activation_bytes_counted() -> None:
    m = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    r = count_macs(m, torch.randn(8, 4))
    assert m.training and m[1].training
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    # Linear in 8x4 + out 8x4, BN in 8x4 + out 8x4, fp32
    assert r.activation_bytes == 4 * 32 * 4
