"""The architecture reference attached to a model, so that it can be rebuilt on load.

Example:
    >>> from torch import nn
    >>> m = nn.Linear(2, 3)
    >>> attach_spec(m, ModelSpec(ref="zoo:lenet300", args={"num_classes": 10}))
    >>> get_spec(m).ref
    'zoo:lenet300'
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

_ATTR = "_torchshrink_spec"


class ModelSpec(BaseModel):
    """How to rebuild an architecture: a model reference string plus factory keyword arguments.

    ``ref`` is one of ``zoo:NAME``, ``path/to/file.py:factory`` or ``hf:DIR``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    ref: str
    args: dict[str, Any] = Field(default_factory=dict)


def attach_spec(model: nn.Module, spec: ModelSpec) -> None:
    """Record ``spec`` on ``model`` (survives ``copy.deepcopy``)."""
    # object.__setattr__ bypasses nn.Module's attribute routing; this is plain metadata.
    object.__setattr__(model, _ATTR, spec)


def get_spec(model: nn.Module) -> ModelSpec | None:
    """The spec recorded on ``model`` by :func:`attach_spec`, or ``None``."""
    spec = getattr(model, _ATTR, None)
    return spec if isinstance(spec, ModelSpec) else None
