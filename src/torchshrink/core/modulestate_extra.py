"""Per-module extras in model files: state that sits on a module without being its type.

Some stages attach behaviour to a module and leave its type alone: static quantization with
residual adds fake-quantizes a ``ReLU``'s output through a forward hook. Such a stage registers
an *extra* under a key with :func:`register_module_extra`: ``record(module)`` returns a
JSON-ready value (``None`` when the module has none) and ``restore(module, value)`` puts it back
on a loaded model. :func:`~torchshrink.core.modulestate.record_modules` keeps the values under
``modules[name]["extras"][key]`` and :func:`~torchshrink.core.modulestate.apply_modules`
restores them once the modules are rebuilt. A file that names a key not registered yet imports
the key's module from the fixed allow-list :data:`EXTRA_MODULES` (never a name read from the
file); a key that is not there is a :class:`~torchshrink.core.errors.ModelFileError`. Files
without extras load as before, and readers older than this ignore the ``extras`` field.

Example:
    >>> from torch import nn
    >>> def rec(m):
    ...     return getattr(m, "tag", None)
    >>> def put(m, value):
    ...     m.tag = value
    >>> _ = register_module_extra("doc_tag", record=rec, restore=put)
    >>> relu = nn.ReLU()
    >>> relu.tag = "calibrated"
    >>> record_extras(relu)
    {'doc_tag': 'calibrated'}
    >>> fresh = nn.Sequential(nn.ReLU())
    >>> restore_extras(fresh, {"0": {"extras": {"doc_tag": "calibrated"}}}, where="f")
    >>> fresh[0].tag
    'calibrated'
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from torchshrink.core.errors import ModelFileError

# extra key (as written in a file) -> the module that registers it when imported.
EXTRA_MODULES: dict[str, str] = {"output_quant": "torchshrink.quantize.residual"}

EXTRAS_KEY = "extras"


@dataclass(frozen=True)
class ModuleExtra:
    """How one kind of per-module extra is recorded and restored.

    Attributes:
        key: the name written in model files.
        record: module -> JSON-ready value, or ``None`` when the module has nothing to keep.
        restore: ``(module, value)`` -> None; puts the recorded value back (in place).
    """

    key: str
    record: Callable[[nn.Module], Any]
    restore: Callable[[nn.Module, Any], None]


_EXTRAS: dict[str, ModuleExtra] = {}


def register_module_extra(
    key: str,
    *,
    record: Callable[[nn.Module], Any],
    restore: Callable[[nn.Module, Any], None],
) -> ModuleExtra:
    """Register an extra (see the module docstring); registering a key again replaces it.

    Example:
        >>> register_module_extra("noop", record=lambda m: None, restore=lambda m, v: None).key
        'noop'
    """
    extra = ModuleExtra(key, record, restore)
    _EXTRAS[key] = extra
    return extra


def record_extras(module: nn.Module) -> dict[str, Any]:
    """The non-``None`` values of every registered extra for ``module`` (often ``{}``)."""
    out: dict[str, Any] = {}
    for key, extra in _EXTRAS.items():
        value = extra.record(module)
        if value is not None:
            out[key] = value
    return out


def restore_extras(
    model: nn.Module, records: Mapping[str, Mapping[str, Any]], *, where: str
) -> None:
    """Restore the extras that ``records`` (a file's ``modules``) hold onto ``model``.

    Raises:
        ModelFileError: an extra of an unknown key, on a module the model lacks, or one that
            its ``restore`` rejects.
    """
    for name, rec in records.items():
        extras = rec.get(EXTRAS_KEY)
        if not extras:
            continue
        if not isinstance(extras, Mapping):
            raise ModelFileError(f"{where}: module '{name}': malformed extras {extras!r}")
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ModelFileError(f"{where}: extras for module '{name}', which is missing") from None
        for key, value in extras.items():
            _extra_for(key, where=where).restore(module, value)


def _extra_for(key: str, *, where: str) -> ModuleExtra:
    if key not in _EXTRAS and key in EXTRA_MODULES:
        importlib.import_module(EXTRA_MODULES[key])
    if key not in _EXTRAS:
        raise ModelFileError(
            f"{where}: a module carries the extra {key!r}, which this torchshrink cannot "
            f"restore (known: {', '.join(sorted(set(_EXTRAS) | set(EXTRA_MODULES)))})"
        )
    return _EXTRAS[key]
