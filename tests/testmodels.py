"""Small models shared by tests; import as ``from testmodels import SmallCNN`` (tests/ is on
sys.path for every test file, because the root conftest lives there).
"""

from __future__ import annotations

import torch
from torch import nn


class SmallCNN(nn.Module):
    """Conv-BN-ReLU x2, max-pool, two Linear layers: a small CNN for 8x8 digits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(16)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(16 * 4 * 4, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))  # (B, 8, 8, 8)
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))  # (B, 16, 4, 4)
        x = torch.relu(self.fc1(x.flatten(1)))  # (B, 32)
        return self.fc2(x)  # (B, 10)
