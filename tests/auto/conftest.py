"""A tiny, fast auto-search setup shared by the auto tests: LeNet-300-100 on 8x8 digits."""

from __future__ import annotations

from typing import Any

import pytest

from torchshrink.auto import AutoConfig

QUICK = {"epochs": 1, "batch_size": 64, "lr": 0.01, "show_progress": False}


def tiny(**overrides: Any) -> AutoConfig:
    """An AutoConfig whose trials take well under a second each."""
    base: dict[str, Any] = {
        "model": "zoo:lenet300",
        "data": "digits",
        "train": {"epochs": 3, "batch_size": 64, "lr": 0.05, "show_progress": False},
        "max_accuracy_drop": 0.03,
        "trials": 3,
        "val_size": 200,
        "search_train_size": 400,
        "ratios": (0.5, 0.9),
        "bits": (0, 4),
        "trial_finetune": QUICK,
        "centroid_finetune": None,
        "final_finetune": None,
        "latency_repeats": 3,
    }
    return AutoConfig.model_validate({**base, **overrides})


@pytest.fixture
def tiny_config() -> Any:
    """The :func:`tiny` factory."""
    return tiny
