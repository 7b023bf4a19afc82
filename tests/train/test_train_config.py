"""TrainConfig: defaults, presets, validation messages that name the field, round trips."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from torchshrink.core.errors import ConfigError
from torchshrink.train.config import TrainConfig


def test_defaults_are_valid_and_frozen() -> None:
    cfg = TrainConfig()
    assert (cfg.optimizer, cfg.schedule, cfg.epochs, cfg.batch_size) == ("sgd", "cosine", 10, 128)
    assert cfg.dropout is None and cfg.grad_clip is None and cfg.checkpoint_dir is None
    with pytest.raises(ValidationError, match="frozen"):
        cfg.lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lr", 0.0),
        ("lr", -1.0),
        ("epochs", -1),
        ("batch_size", 0),
        ("momentum", 1.0),
        ("weight_decay", -0.1),
        ("label_smoothing", 1.0),
        ("label_smoothing", -0.1),
        ("grad_clip", 0.0),
        ("dropout", 1.0),
        ("gamma", 0.0),
        ("step_size", 0),
        ("warmup_epochs", -1.0),
        ("early_stop_patience", 0),
        ("eval_every", 0),
        ("num_threads", 0),
        ("optimizer", "adam"),
        ("schedule", "linear"),
        ("augment", "flip"),
    ],
)
def test_invalid_value_names_the_field(field: str, value: Any) -> None:
    with pytest.raises(ValidationError, match=field):
        TrainConfig(**{field: value})


def test_unknown_field_is_refused_by_name() -> None:
    with pytest.raises(ValidationError, match="learning_rate"):
        TrainConfig(learning_rate=0.1)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"nesterov": True, "momentum": 0.0}, "nesterov"),
        ({"epochs": 2, "warmup_epochs": 3}, "warmup_epochs"),
        ({"epochs": 2, "warmup_epochs": 2, "schedule": "onecycle"}, "warmup_epochs"),
        ({"resume": True}, "resume"),
    ],
)
def test_invalid_combinations_name_the_field(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        TrainConfig(**kwargs)


def test_zero_epochs_with_warmup_is_allowed() -> None:
    # The CLI overrides `epochs` on top of a preset; --epochs 0 must still only evaluate.
    assert TrainConfig.preset("lenet-mnist", epochs=0).warmup_epochs == 1


def test_presets_and_overrides() -> None:
    cfg = TrainConfig.preset("lenet-mnist")
    assert (cfg.optimizer, cfg.nesterov, cfg.schedule, cfg.batch_size) == (
        "sgd",
        True,
        "cosine",
        128,
    )
    assert TrainConfig.preset("LeNet-MNIST", seed=7).seed == 7
    assert TrainConfig.preset_names() == ["digits", "finetune", "lenet-mnist", "scratch"]
    with pytest.raises(ValidationError, match="lr"):
        TrainConfig.preset("finetune", lr=-1)
    with pytest.raises(ConfigError, match="unknown TrainConfig preset 'nope'; valid names: digits"):
        TrainConfig.preset("nope")


def test_json_round_trip_and_dump_reconstruct(tmp_path: Any) -> None:
    cfg = TrainConfig(checkpoint_dir=tmp_path, resume=True, grad_clip=1.0, augment="shift2")
    assert TrainConfig.model_validate_json(cfg.model_dump_json()) == cfg
    assert TrainConfig(**cfg.model_dump()) == cfg
    assert "label_smoothing" in TrainConfig.model_json_schema()["properties"]
