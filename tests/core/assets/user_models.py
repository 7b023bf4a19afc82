"""A user's own model file, loaded by tests as ``user_models.py:FACTORY`` references."""

from __future__ import annotations

import torch
from torch import nn

NOT_CALLABLE = 3


class TinyConvNet(nn.Module):
    """conv-BN-ReLU x2 -> global pool -> linear, on (B, 3, 8, 8) inputs."""

    def __init__(self, width: int = 8, num_classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))  # (B, W, 8, 8)
        x = torch.relu(self.bn2(self.conv2(x)))  # (B, W, 8, 8)
        return self.fc(self.pool(x).flatten(1))  # (B, num_classes)

    def example_inputs(self, batch_size: int = 1) -> torch.Tensor:
        return torch.randn(batch_size, 3, 8, 8, generator=torch.Generator().manual_seed(0))


class TiedLM(nn.Module):
    """Embedding and output projection sharing one weight (a tied language-model head)."""

    def __init__(self, vocab: int = 20, dim: int = 8) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.embed(ids)))  # (B, L, vocab)


class Scale(nn.Module):
    """A custom layer that torchshrink does not know."""

    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        self.dim = dim
        self.gain = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain


def mlp(hidden: int = 16, num_classes: int = 3) -> nn.Module:
    return nn.Sequential(nn.Linear(6, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


def convnet(width: int = 8, num_classes: int = 4) -> nn.Module:
    return TinyConvNet(width=width, num_classes=num_classes)


def tied_lm(vocab: int = 20, dim: int = 8) -> nn.Module:
    return TiedLM(vocab=vocab, dim=dim)


def broken() -> nn.Module:
    raise RuntimeError("boom: the factory failed")


def not_a_module() -> dict[str, int]:
    return {"layers": 2}
