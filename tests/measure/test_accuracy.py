from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from torchshrink.core.errors import EmptyDataError
from torchshrink.measure.accuracy import evaluate


class _Fixed(nn.Module):
    """Predicts class = first feature > 0, returned inside a tuple like many real models do."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = torch.stack([-x[:, 0], x[:, 0]], dim=1)  # (B, 2)
        return logits, x


def test_evaluate_counts_correct_predictions() -> None:
    x = torch.tensor([[1.0], [2.0], [-1.0], [-3.0], [4.0]])
    y = torch.tensor([1, 1, 0, 1, 0])  # 3 of 5 right
    r = evaluate(_Fixed(), TensorDataset(x, y), batch_size=2)
    assert r.n == 5
    assert r.accuracy == pytest.approx(0.6)
    assert r.error == pytest.approx(0.4)
    assert r.loss > 0


def test_evaluate_restores_training_mode_and_rejects_empty() -> None:
    m = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    m.train()
    evaluate(m, TensorDataset(torch.randn(4, 2), torch.zeros(4, dtype=torch.long)))
    assert m.training
    with pytest.raises(EmptyDataError, match="no samples"):
        evaluate(m, [])
