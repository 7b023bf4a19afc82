"""A test-only zoo of small architectures, one per dependency pattern of the graph layer.

Each entry of :data:`ARCHS` builds ``(model, example_inputs)``. Together with the torchshrink
zoo they cover: residual add, concatenation with offsets, split / chunk, flatten into a Linear,
grouped and depthwise convolutions, BatchNorm / LayerNorm / GroupNorm, squeeze-and-excite,
transposed convolution, Embedding, multi-head attention, parameters used directly in
``forward``, multiple inputs / outputs and Python control flow.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def _x(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1))


class DenseConcat(nn.Module):
    """DenseNet-style: every conv's output is concatenated to its input (offsets 0, 6, 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.c1 = nn.Conv2d(6, 4, 3, padding=1)
        self.c2 = nn.Conv2d(10, 4, 3, padding=1)
        self.fc = nn.Linear(14 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))  # (B, 6, 8, 8)
        y = torch.cat([x, F.relu(self.c1(x))], dim=1)  # (B, 10, 8, 8)
        z = torch.cat([y, F.relu(self.c2(y))], dim=1)  # (B, 14, 8, 8)
        return self.fc(F.avg_pool2d(z, 2).flatten(1))  # (B, 5)


class SplitChunk(nn.Module):
    """A GLU gate from ``chunk`` (halves shrink together) and a fixed-size ``split`` (kept)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, q = self.conv(x).chunk(2, dim=1)  # 2 x (B, 4, H, W)
        h = p * torch.sigmoid(q)  # (B, 4, H, W)
        s1, s2 = torch.split(self.conv2(h), 3, dim=1)  # 2 x (B, 3, H, W)
        return self.fc(F.adaptive_avg_pool2d(s1 + s2, 1).flatten(1))


class FlattenLinear(nn.Module):
    """Conv output flattened straight into a Linear: channel c -> features c*16 .. c*16+15."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).view(x.shape[0], -1))


class GroupedDepthwise(nn.Module):
    """Grouped conv (groups=2), depthwise conv with channel multiplier 2, pointwise conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.dw = nn.Conv2d(8, 16, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(16, 6, 1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.grouped(F.relu(self.conv(x))))  # (B, 8, H, W)
        x = self.pw(F.relu(self.dw(x)))  # (B, 6, H, W)
        return self.fc(x.mean(dim=(2, 3)))


class Norms(nn.Module):
    """BatchNorm, GroupNorm and LayerNorm (over channels of a token sequence)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.gn = nn.GroupNorm(4, 8)
        self.ln = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = F.relu(self.gn(self.conv2(x)))  # (B, 8, H, W)
        t = self.ln(x.flatten(2).transpose(1, 2))  # (B, HW, 8)
        return self.fc(t.mean(dim=1))


class SqueezeExcite(nn.Module):
    """Squeeze-and-excite: ``x * gate(x)`` with a per-channel gate from two Linears."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc1 = nn.Linear(8, 4)
        self.fc2 = nn.Linear(4, 8)
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1)
        self.head = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv(x))  # (B, 8, H, W)
        s = x.mean(dim=(2, 3))  # (B, 8)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(s))))  # (B, 8)
        x = x * gate.view(x.shape[0], -1, 1, 1)
        return self.head(F.relu(self.conv2(x)).amax(dim=(2, 3)))


class TransposedConv(nn.Module):
    """Encoder / decoder with a ConvTranspose2d (weight is (C_in, C_out, k, k))."""

    def __init__(self) -> None:
        super().__init__()
        self.down = nn.Conv2d(3, 6, 2, stride=2)
        self.up = nn.ConvTranspose2d(6, 4, 2, stride=2)
        self.out = nn.Conv2d(4, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.up(F.relu(self.down(x)))))


class EmbedLN(nn.Module):
    """Embedding + LayerNorm + residual feed-forward block, mean over tokens."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 16)
        self.ln = nn.LayerNorm(16)
        self.fc1 = nn.Linear(16, 32)
        self.fc2 = nn.Linear(32, 16)
        self.head = nn.Linear(16, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)  # (B, L, 16)
        x = x + self.fc2(F.gelu(self.fc1(self.ln(x))))
        return self.head(x.mean(dim=1))


class DirectParams(nn.Module):
    """A class token concatenated to the tokens and a learned per-feature scale."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(6, 8)
        self.cls_token = nn.Parameter(torch.randn(1, 1, 8))
        self.scale = nn.Parameter(torch.rand(8) + 0.5)
        self.fc = nn.Linear(8, 12)
        self.head = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)  # (B, N, 8)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) * self.scale
        return self.head(F.relu(self.fc(x))[:, 0])


class MultiIO(nn.Module):
    """Two inputs (image, vector) added into one trunk, two outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.vec = nn.Linear(5, 8)
        self.fc1 = nn.Linear(8, 16)
        self.out1 = nn.Linear(16, 3)
        self.out2 = nn.Linear(16, 2)

    def forward(self, img: torch.Tensor, vec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = F.adaptive_avg_pool2d(self.conv(img), 1).flatten(1) + self.vec(vec)  # (B, 8)
        h = F.relu(self.fc1(h))
        return self.out1(h), self.out2(h)


class ControlFlow(nn.Module):
    """A loop over a ModuleList and a branch on the data (``if x.sum() > 0``)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(4, 8)
        self.layers = nn.ModuleList(nn.Linear(8, 8) for _ in range(3))
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.inp(x))
        for layer in self.layers:
            h = h + F.relu(layer(h))
        h = h * 2 if h.sum() > 0 else -h
        return self.head(h)


class MHAModel(nn.Module):
    """``nn.MultiheadAttention`` in (L, B, E) layout between two Linears."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(5, 8)
        self.mha = nn.MultiheadAttention(8, 2)
        self.out = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)  # (L, B, 8)
        a, _ = self.mha(h, h, h)
        return self.out(a.mean(dim=0))


class Gain(nn.Module):
    """A custom per-channel gain written with ``einsum`` (no built-in rule)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.rand(channels) + 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bchw,c->bchw", x, self.g)


class CustomLayerNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gain = Gain(8)
        self.conv2 = nn.Conv2d(8, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2(self.gain(F.relu(self.conv(x)))))
        return self.fc(x.mean(dim=(2, 3)))


def _img(model: nn.Module, size: int = 8) -> tuple[nn.Module, Any]:
    return model, _x(2, 3, size, size)


ARCHS: dict[str, Callable[[], tuple[nn.Module, Any]]] = {
    "dense_concat": lambda: _img(DenseConcat()),
    "split_chunk": lambda: _img(SplitChunk()),
    "flatten_linear": lambda: (FlattenLinear(), _x(2, 1, 6, 6)),
    "grouped_depthwise": lambda: _img(GroupedDepthwise()),
    "norms": lambda: _img(Norms()),
    "squeeze_excite": lambda: _img(SqueezeExcite()),
    "transposed_conv": lambda: _img(TransposedConv()),
    "embed_ln": lambda: (EmbedLN(), torch.randint(0, 20, (2, 7))),
    "direct_params": lambda: (DirectParams(), _x(2, 5, 6)),
    "multi_io": lambda: (MultiIO(), (_x(2, 3, 8, 8), _x(2, 5))),
    "control_flow": lambda: (ControlFlow(), _x(2, 4)),
    "mha": lambda: (MHAModel(), _x(6, 2, 5)),
}
