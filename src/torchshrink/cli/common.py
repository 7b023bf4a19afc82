"""Shared CLI plumbing: resolving model and data references, parsing shapes, printing JSON.

The commands stay thin: everything here only translates command-line strings into calls of the
Python API.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchshrink.core.errors import ConfigError


@dataclass(frozen=True)
class Loaded:
    """A resolved model plus the data it will see (if any)."""

    model: nn.Module
    data: Any | None  # DataBundle


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse ``"1,28,28"`` (or ``"1x28x28"``) into a per-sample shape tuple.

    Example:
        >>> parse_shape("1x28x28")
        (1, 28, 28)
    """
    parts = text.replace("x", ",").split(",")
    try:
        shape = tuple(int(p) for p in parts if p.strip())
    except ValueError:
        raise ConfigError(
            f"--input-shape: expected comma-separated integers like 1,28,28, got '{text}'"
        ) from None
    if not shape or any(s <= 0 for s in shape):
        raise ConfigError(
            f"--input-shape: every dimension must be a positive integer, got '{text}'"
        )
    return shape


def data_model_defaults(data: Any) -> dict[str, Any]:
    """Zoo options implied by a data bundle: classes, channels and (square) input size."""
    out: dict[str, Any] = {}
    if getattr(data, "num_classes", None):
        out["num_classes"] = data.num_classes
    shape = tuple(getattr(data, "input_shape", ()))
    if len(shape) == 3 and shape[1] == shape[2]:
        out["in_channels"] = shape[0]
        out["input_size"] = shape[1]
    return out


def load_data_ref(ref: str | None, *, seed: int = 0, limit: int | None = None) -> Any | None:
    if ref is None:
        return None
    from torchshrink.core.data import load_data

    return load_data(ref, seed=seed, limit=limit)


def resolve(
    model_ref: str,
    *,
    model_args: list[str] | None,
    weights: Path | None,
    data_ref: str | None,
    seed: int = 0,
    limit: int | None = None,
) -> Loaded:
    """Load data (if given) first, then the model, filling zoo options from the data."""
    from torchshrink.core.modelref import load_model, parse_model_args

    data = load_data_ref(data_ref, seed=seed, limit=limit)
    args = parse_model_args(list(model_args or []))
    if data is not None and model_ref.startswith("zoo:"):
        args = {**data_model_defaults(data), **args}
    torch.manual_seed(seed)
    model = load_model(model_ref, model_args=args or None, weights=weights)
    return Loaded(model=model, data=data)


def load_teacher(ref: str, data: Any) -> nn.Module:
    """A teacher model by reference (zoo options filled from ``data``), in eval mode."""
    from torchshrink.core.modelref import load_model

    args = data_model_defaults(data) if ref.startswith("zoo:") else None
    return load_model(ref, model_args=args).eval()


def example_batch(
    model: nn.Module, *, input_shape: str | None, data: Any | None, batch_size: int
) -> Any:
    """Inputs for profiling: an explicit shape, else a data batch, else the model's default."""
    if input_shape is not None:
        return torch.randn(batch_size, *parse_shape(input_shape))
    if data is not None and getattr(data, "task", "") == "classification":
        x = data.example_inputs(batch_size)
        if x.shape[0] < batch_size:  # tiny test split: repeat to the asked batch size
            reps = -(-batch_size // x.shape[0])
            x = x.repeat(reps, *([1] * (x.dim() - 1)))[:batch_size]
        return x
    from torchshrink.core.modelref import default_example_inputs

    return default_example_inputs(model, batch_size)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
