"""User-facing exceptions.

Every error a user can cause derives from :class:`TorchshrinkError`. Messages name the thing that
was wrong (module, field, file) and the value received, and say what was expected. The CLI turns
these into one readable line and a non-zero exit status instead of a traceback.

Example:
    >>> from torchshrink.core.errors import UnknownModelError
    >>> try:
    ...     raise UnknownModelError("unknown zoo model 'foo'; valid names: lenet5, lenet300")
    ... except TorchshrinkError as exc:
    ...     print(exc)
    unknown zoo model 'foo'; valid names: lenet5, lenet300
"""

from __future__ import annotations


class TorchshrinkError(Exception):
    """Base class of every error a user can cause."""

    exit_code: int = 2


class ConfigError(TorchshrinkError, ValueError):
    """A configuration value is out of range or malformed."""


class UnknownModelError(TorchshrinkError, LookupError):
    """A model reference names nothing we know (e.g. an unknown zoo name)."""


class ModelFactoryError(TorchshrinkError):
    """A user's ``file.py:factory`` reference cannot be resolved or does not return a module."""


class ModelFileError(TorchshrinkError):
    """A model or weights file is missing, corrupt, truncated or of an unknown format."""


class UnsafeFileError(ModelFileError):
    """A file would need pickle code execution to load; it is refused."""


class DataError(TorchshrinkError):
    """A data reference is unknown, or the data it names is unusable."""


class EmptyDataError(DataError):
    """A dataset, split or calibration set has no samples."""


class ShapeError(TorchshrinkError, ValueError):
    """An input does not fit the model; the message names the layer where it failed."""


class UnsupportedLayerError(TorchshrinkError):
    """A layer type is not supported by the requested operation; the message names it."""


class MissingDependencyError(TorchshrinkError, ImportError):
    """An optional dependency (an extra) is needed but not installed."""


def require(module: str, extra: str) -> object:
    """Import an optional dependency or raise a clear :class:`MissingDependencyError`.

    Args:
        module: importable module name, e.g. ``"onnxruntime"``.
        extra: the torchshrink extra that provides it, e.g. ``"onnx"``.

    Example:
        >>> np = require("numpy", "core")
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"this feature needs the optional package '{module}'; "
            f"install it with: pip install 'torchshrink[{extra}]'"
        ) from exc
