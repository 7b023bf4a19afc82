"""Record module structure beside the weights, so that shrunk or replaced layers load back.

Compression changes architectures: pruning gives a ``Linear`` fewer outputs, factorization
replaces a ``Linear`` by ``Sequential(Linear, Linear)``, depth pruning replaces a block by
``Identity``. Rebuilding the original architecture from its :class:`ModelSpec` is then not
enough. :func:`record_modules` notes every module's type and its constructor-relevant
attributes; :func:`apply_modules` replays that record on the rebuilt model: it sets the
attributes of modules whose type matches and constructs the recorded module where the type
differs — but only for types in the allow-list (never an arbitrary import from the file).

Types are registered with :func:`register_module_state`; torch.nn built-ins are registered in
:mod:`torchshrink.core.modulestate_nn`, later stages register their own layers the same way.

Example:
    >>> from torch import nn
    >>> rec = record_modules(nn.Sequential(nn.Linear(4, 2)))
    >>> rec["0"]["attrs"]["out_features"]
    2
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from torchshrink.core.errors import ConfigError, ModelFileError
from torchshrink.core.modulestate_extra import EXTRAS_KEY, record_extras, restore_extras

# Attributes of Hugging Face attention modules that head pruning changes; recorded on any
# module type that has them, so no transformers import is needed here.
HF_ATTENTION_ATTRS = ("num_attention_heads", "attention_head_size", "all_head_size")


@dataclass(frozen=True)
class ModuleState:
    """How to record, restore and (optionally) construct one module type.

    Attributes:
        cls: the module type.
        attrs: attribute names recorded and set back on load.
        ctor: constructor keyword names taken from the record, or ``None`` when the type may not
            be constructed from a file (then it is only restored in place).
        derived: extra constructor values computed from a module (e.g. ``bias``), recorded only.
        after_apply: fix-up run after attributes were set (e.g. cached padding tuples).
    """

    cls: type[nn.Module]
    attrs: tuple[str, ...]
    ctor: tuple[str, ...] | None = None
    derived: Callable[[nn.Module], dict[str, Any]] | None = None
    after_apply: Callable[[nn.Module], None] | None = None

    def record(self, module: nn.Module) -> dict[str, Any]:
        """The JSON-ready attributes (and derived constructor values) of ``module``."""
        out = {a: _jsonable(getattr(module, a)) for a in self.attrs if hasattr(module, a)}
        if self.derived is not None:
            out.update({k: _jsonable(v) for k, v in self.derived(module).items()})
        return out

    def apply(self, module: nn.Module, attrs: Mapping[str, Any]) -> None:
        """Set the recorded attributes on ``module`` (in place)."""
        for name in self.attrs:
            if name in attrs:
                setattr(module, name, _like(getattr(module, name, None), attrs[name]))
        if self.after_apply is not None:
            self.after_apply(module)

    def build(self, attrs: Mapping[str, Any]) -> nn.Module:
        """Construct a fresh module from recorded attributes (its tensors are assigned later)."""
        assert self.ctor is not None  # callers check constructible() first
        kwargs = {k: _tupled(attrs[k]) for k in self.ctor if k in attrs}
        return self.cls(**kwargs)


_STATES: dict[type[nn.Module], ModuleState] = {}
_ALLOWED: dict[str, ModuleState] = {}


def qualified_name(cls: type) -> str:
    """``module.QualName`` of a class, the type name written to model files."""
    return f"{cls.__module__}.{cls.__qualname__}"


def register_module_state(
    cls: type[nn.Module],
    *,
    attrs: tuple[str, ...],
    ctor: tuple[str, ...] | None = None,
    derived: Callable[[nn.Module], dict[str, Any]] | None = None,
    after_apply: Callable[[nn.Module], None] | None = None,
) -> type[nn.Module]:
    """Register how ``cls`` is recorded in model files (and, with ``ctor``, allow building it).

    Args:
        cls: module type; subclasses without their own entry are recorded with it (but only
            the exact registered type may be constructed).
        attrs: attributes recorded and restored (shape-relevant ones, e.g. ``out_features``).
        ctor: constructor keywords read from the record; ``None`` means never construct.
        derived: extra constructor values computed from the module.
        after_apply: fix-up after attributes are set.

    Returns:
        ``cls``, so that a registration may sit right after a class definition.

    Example:
        >>> class Scale(nn.Module):
        ...     def __init__(self, dim: int) -> None:
        ...         super().__init__()
        ...         self.dim = dim
        >>> _ = register_module_state(Scale, attrs=("dim",), ctor=("dim",))
        >>> build_module(qualified_name(Scale), {"dim": 3}, where="x").dim
        3
    """
    state = ModuleState(cls, attrs, ctor, derived, after_apply)
    _STATES[cls] = state
    if ctor is not None:
        _ALLOWED[qualified_name(cls)] = state
    return cls


def state_for(cls: type) -> ModuleState | None:
    """The registered state of ``cls`` or of its nearest registered base class."""
    for base in cls.__mro__:
        if base in _STATES:
            return _STATES[base]
    return None


def build_module(type_name: str, attrs: Mapping[str, Any], *, where: str) -> nn.Module:
    """Construct an allow-listed module type from recorded attributes.

    Raises:
        ModelFileError: ``type_name`` is not in the allow-list (nothing is imported).
    """
    _ensure_builtins()
    state = _ALLOWED.get(type_name)
    provider = _PROVIDERS.get(type_name)
    if state is None and provider is not None:
        importlib.import_module(provider)  # a fixed torchshrink module, never a name from the file
        state = _ALLOWED.get(type_name)
    if state is None:
        raise ModelFileError(
            f"module '{where}' is of type '{type_name}' in the model file, which torchshrink "
            "may not construct (only torch.nn built-ins and types registered with "
            "register_module_state are allowed)"
        )
    try:
        return state.build(attrs)
    except (TypeError, ValueError) as exc:
        raise ModelFileError(
            f"module '{where}': cannot construct '{type_name}' from {dict(attrs)}: {exc}"
        ) from exc


def record_modules(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Type and shape attributes of every module of ``model``, in ``named_modules`` order.

    Example:
        >>> record_modules(nn.Linear(3, 1))[""]["type"]
        'torch.nn.modules.linear.Linear'
    """
    _ensure_builtins()
    out: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        state = state_for(type(module))
        try:
            attrs = state.record(module) if state is not None else {}
        except TypeError as exc:
            raise ConfigError(f"module '{name}' ({type(module).__name__}): {exc}") from None
        for a in HF_ATTENTION_ATTRS:
            value = getattr(module, a, None)
            if isinstance(value, int) and not isinstance(value, bool):
                attrs[a] = value
        out[name] = {"type": qualified_name(type(module)), "attrs": attrs}
        extras = record_extras(module)  # hook-held state, e.g. residual output quantizers
        if extras:
            out[name][EXTRAS_KEY] = extras
    return out


def module_delta(
    built: Mapping[str, Mapping[str, Any]], records: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """The records of ``records`` that differ from ``built``, and the modules it lacks.

    ``built`` and ``records`` are :func:`record_modules` results (the architecture as its spec
    builds it, and the model to save). A module of the type built with the same attribute
    names keeps only its changed attributes (no ``type``). :func:`expand_delta` turns
    ``changed`` back into full records; :func:`apply_modules` with those and ``removed=``
    replays the difference onto a fresh build.

    Example:
        >>> small = nn.Sequential(nn.Linear(4, 2), nn.ReLU())
        >>> delta = module_delta(record_modules(nn.Sequential(nn.Linear(4, 3), nn.ReLU(),
        ...                      nn.Linear(3, 1))), record_modules(small))
        >>> delta["changed"], delta["removed"]
        ({'0': {'attrs': {'out_features': 2}}}, ['2'])
    """
    changed: dict[str, Any] = {}
    for name, rec in records.items():
        old = built.get(name)
        if old == rec:
            continue
        attrs, old_attrs = rec.get("attrs", {}), (old or {}).get("attrs", {})
        if old is None or old["type"] != rec["type"] or set(attrs) != set(old_attrs):
            changed[name] = dict(rec)
            continue
        short: dict[str, Any] = {"attrs": {k: v for k, v in attrs.items() if old_attrs[k] != v}}
        short.update({k: v for k, v in rec.items() if k not in ("type", "attrs")})  # extras
        changed[name] = short
    return {"changed": changed, "removed": [n for n in built if n not in records]}


def expand_delta(
    built: Mapping[str, Mapping[str, Any]], changed: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Full module records from a :func:`module_delta`'s ``changed`` and the fresh build's.

    Raises:
        ModelFileError: a record without ``type`` for a module the build does not have.

    Example:
        >>> built = record_modules(nn.Sequential(nn.Linear(4, 3)))
        >>> expand_delta(built, {"0": {"attrs": {"out_features": 2}}})["0"]["attrs"]
        {'in_features': 4, 'out_features': 2, 'bias': True}
    """
    out: dict[str, dict[str, Any]] = {}
    for name, rec in changed.items():
        if "type" in rec:
            out[name] = dict(rec)
            continue
        base = built.get(name)
        if base is None:
            raise ModelFileError(
                f"module '{name}': the file changes attributes of a module its spec does not build"
            )
        full = {**base, **rec}
        full["attrs"] = {**base.get("attrs", {}), **rec.get("attrs", {})}
        out[name] = full
    return out


def apply_modules(
    model: nn.Module,
    records: Mapping[str, Mapping[str, Any]],
    *,
    removed: Iterable[str] | None = None,
) -> None:
    """Make the rebuilt ``model`` match ``records`` (in place); tensors are loaded afterwards.

    Modules of the recorded type get the recorded attributes (or are built again when a
    constructor value differs, e.g. a bias removed); modules of another type (or
    missing) are constructed from the allow-list; modules that the record does not list are
    removed, so that the state_dict keys match. With ``removed`` (a :func:`module_delta`),
    ``records`` lists only the modules that differ from the fresh build, and exactly the
    ``removed`` modules are taken out. Per-module extras (:mod:`.modulestate_extra`) are
    restored last.

    Raises:
        ModelFileError: a recorded type may not be constructed, or the root type differs.
    """
    _ensure_builtins()
    for name, rec in records.items():
        type_name, attrs = str(rec["type"]), rec.get("attrs", {})
        current = _get(model, name)
        if current is not None and qualified_name(type(current)) == type_name:
            if name == "" or not _ctor_differs(current, attrs):
                _restore(current, attrs)
                continue
        if name == "":
            raise ModelFileError(
                f"the model file holds a '{type_name}' but its spec rebuilds a "
                f"'{qualified_name(type(model))}'"
            )
        parent_name, _, child = name.rpartition(".")
        parent = _get(model, parent_name)
        if parent is None:
            raise ModelFileError(f"module '{name}': its parent '{parent_name}' is missing")
        new = build_module(type_name, attrs, where=name)
        _restore(new, attrs)
        parent._modules[child] = new
    if removed is None:
        removed = [name for name, _ in model.named_modules() if name and name not in records]
    for name in reversed(list(removed)):  # children before their parents
        parent_name, _, child = str(name).rpartition(".")
        parent = _get(model, parent_name) if name else None
        if parent is not None:
            parent._modules.pop(child, None)
    restore_extras(model, records, where="model file")


def _ctor_differs(module: nn.Module, attrs: Mapping[str, Any]) -> bool:
    # A constructor value that attributes cannot change (e.g. a Linear built with a bias whose
    # record says bias=False): the module must be built again from the record.
    state = state_for(type(module))
    if state is None or state.ctor is None or state.derived is None:
        return False
    return any(k in attrs and _jsonable(v) != attrs[k] for k, v in state.derived(module).items())


def _restore(module: nn.Module, attrs: Mapping[str, Any]) -> None:
    state = state_for(type(module))
    if state is not None:
        state.apply(module, attrs)
    for a in HF_ATTENTION_ATTRS:
        if a in attrs and hasattr(module, a):
            setattr(module, a, int(attrs[a]))


def _get(model: nn.Module, name: str) -> nn.Module | None:
    module: nn.Module | None = model
    for part in name.split(".") if name else []:
        module = module._modules.get(part) if module is not None else None
    return module


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _jsonable(v) for k, v in value.items()}  # e.g. a config's model_dump()
    raise TypeError(f"cannot record attribute value {value!r} of type {type(value).__name__}")


def _tupled(value: Any) -> Any:
    return tuple(_tupled(v) for v in value) if isinstance(value, list) else value


def _like(current: Any, value: Any) -> Any:
    # JSON turns tuples into lists; give the attribute back the container type it had.
    if isinstance(value, list) and not isinstance(current, list):
        return _tupled(value)
    return value


# torchshrink's own module types that model files may name, and the module registering each.
# Lazily imported (so `import torchshrink` stays light); the keys come from this table only.
_PROVIDERS: dict[str, str] = {
    "torchshrink.graph.mha.PrunedMultiheadAttention": "torchshrink.graph.mha",
    "torchshrink.quantize.qmodules.QuantLinear": "torchshrink.quantize.qmodules",
    "torchshrink.quantize.qmodules.QuantConv2d": "torchshrink.quantize.qmodules",
    "torchshrink.quantize.codebook.CodebookLinear": "torchshrink.quantize.codebook",
    "torchshrink.quantize.codebook.CodebookConv2d": "torchshrink.quantize.codebook",
}


def _ensure_builtins() -> None:
    # The torch.nn registrations live in their own module; importing it registers them once.
    from torchshrink.core import modulestate_nn  # noqa: F401
