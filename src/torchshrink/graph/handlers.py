"""Per-op handlers: how a module type maps channels from its inputs to its outputs and weights.

A module type with a registered handler is recorded as *one* node by the trace; its handler
then says, in :meth:`OpHandler.propagate`, which dimensions of its inputs, outputs and
parameters share channel spaces, and in :meth:`OpHandler.update` how to fix the module's
attributes (``out_features``, ``num_heads``, ...) once its parameters were sliced.

Handlers are keyed by module type (subclasses inherit their base's handler) or, for optional
libraries such as ``transformers``, by the class's qualified name so that nothing is imported
until a model actually uses it.

Example:
    >>> import torch
    >>> from torch import nn
    >>> class Gain(nn.Module):  # a per-channel gain the tracer cannot see through
    ...     def __init__(self, c): super().__init__(); self.g = nn.Parameter(torch.ones(c))
    ...     def forward(self, x): return torch.einsum("bc,c->bc", x, self.g)
    >>> @register_op_handler(Gain)
    ... class GainHandler(OpHandler):
    ...     def propagate(self, ctx):
    ...         x = ctx.input_layouts(0)
    ...         ctx.param("g", 0, x[1], role="through")
    ...         ctx.set_output(0, x)
    >>> get_op_handler(Gain(3)).__class__.__name__
    'GainHandler'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
from torch import nn

from torchshrink.graph.nodes import Graph, Node, ValueRef
from torchshrink.graph.spaces import Layout, SpaceTable, block, fresh, unify

Role = Literal["out", "in", "through", "direct"]
LayoutList = list[Layout | None]


@dataclass(frozen=True)
class Member:
    """One parameter dimension whose positions belong to channel spaces (internal record)."""

    module: str  # qualified name of the module whose handler declared it (or the owner)
    param: str  # parameter / buffer path relative to ``module``
    dim: int
    layout: Layout
    role: Role


class OpHandler:
    """Base class of op handlers. Subclasses implement :meth:`propagate`, maybe :meth:`update`.

    Example:
        >>> class Passthrough(OpHandler):
        ...     def propagate(self, ctx):
        ...         ctx.set_output(0, ctx.input_layouts(0))
    """

    def propagate(self, ctx: OpContext) -> None:
        """Declare the channel spaces of one call of the module (see :class:`OpContext`)."""
        raise NotImplementedError

    def update(self, module: nn.Module) -> nn.Module | None:
        """Fix ``module``'s attributes after its parameters were sliced.

        Returns:
            ``None``, or a module that replaces ``module`` in its parent.
        """
        return None


_BY_TYPE: dict[type, OpHandler] = {}
_BY_NAME: dict[str, OpHandler] = {}
H = TypeVar("H", bound=type[OpHandler])


def register_op_handler(*keys: type[nn.Module] | str) -> Callable[[H], H]:
    """Class decorator: register an :class:`OpHandler` for module types or qualified names.

    Args:
        *keys: module classes, or ``"package.module.ClassName"`` strings for classes of
            optional libraries (matched without importing them). A later registration for the
            same key replaces the earlier one, so users can override built-in handlers.

    Example:
        >>> @register_op_handler("mylib.layers.Fancy")
        ... class FancyHandler(OpHandler):
        ...     def propagate(self, ctx): ...
    """

    def deco(cls: H) -> H:
        handler = cls()
        for key in keys:
            if isinstance(key, str):
                _BY_NAME[key] = handler
            else:
                _BY_TYPE[key] = handler
        return cls

    return deco


def get_op_handler(module: nn.Module) -> OpHandler | None:
    """The handler for ``module``'s type or nearest base class, or ``None``.

    Example:
        >>> get_op_handler(nn.ReLU()) is None
        True
    """
    _load_builtin()
    for cls in type(module).__mro__:
        if cls in _BY_TYPE:
            return _BY_TYPE[cls]
        name = f"{cls.__module__}.{cls.__qualname__}"
        if name in _BY_NAME:
            return _BY_NAME[name]
    return None


def _load_builtin() -> None:
    # The built-in handlers register themselves on import (kept out of `import torchshrink`).
    from torchshrink.graph import handlers_attention, handlers_nn  # noqa: F401


class OpContext:
    """What a handler (or a function rule) sees of one node, and how it declares channels.

    Layouts are per-dimension: ``ctx.input_layouts(i)[d]`` is the layout of dimension ``d`` of
    the ``i``-th tensor argument, ``None`` where that dimension carries no channels.
    """

    def __init__(
        self,
        graph: Graph,
        node: Node,
        module: nn.Module | None,
        table: SpaceTable,
        layouts: dict[int, LayoutList],
        members: list[Member],
    ) -> None:
        self.graph = graph
        self.node = node
        self.module = module
        self.table = table
        self._layouts = layouts
        self._members = members

    @property
    def name(self) -> str:
        """Qualified name of the module (module nodes) or of the enclosing module."""
        return self.node.target if self.node.kind == "module" else self.node.scope

    def arg(self, index: int, name: str | None = None, default: Any = None) -> Any:
        """Positional argument ``index`` or keyword ``name`` as recorded (tensors as refs)."""
        if index < len(self.node.args):
            return self.node.args[index]
        if name is not None and name in self.node.kwargs:
            return self.node.kwargs[name]
        return default

    def tensor_arg(self, index: int, name: str | None = None) -> int | None:
        """Value id of a tensor argument (``None`` if absent or not a tensor)."""
        ref = self.arg(index, name)
        return ref.id if isinstance(ref, ValueRef) else None

    def shape(self, value: int) -> tuple[int, ...]:
        return self.graph.values[value].shape

    def layouts(self, value: int) -> LayoutList:
        """Per-dimension layouts of a value."""
        return list(self._layouts[value])

    def input_layouts(self, index: int) -> LayoutList:
        """Layouts of the ``index``-th tensor input of the node."""
        return self.layouts(self.node.inputs[index])

    def set_output(self, index: int, layouts: Sequence[Layout | None]) -> None:
        """Set the layouts of the ``index``-th output of the node."""
        vid = self.node.outputs[index]
        assert len(layouts) == self.graph.values[vid].ndim, (self.node.describe(), len(layouts))
        self._layouts[vid] = list(layouts)

    def new_space(self, size: int, label: str) -> Layout:
        """A layout over a new space of ``size`` channels (e.g. a conv's output channels)."""
        return fresh(self.table.new(size, f"{self.name}:{label}" if self.name else label), size)

    def heads(self, num_heads: int, head_dim: int, label: str = "heads") -> Layout:
        """A new space of ``num_heads`` channels laid out as ``head_dim`` positions each."""
        sid = self.table.new(num_heads, f"{self.name}:{label}")
        return np.stack(
            [np.full(num_heads * head_dim, sid), np.arange(num_heads * head_dim) // head_dim]
        )

    def unify(self, a: Layout | None, b: Layout | None, why: str = "") -> None:
        """Make two equally long dimensions shrink together (see :func:`spaces.unify`)."""
        reason = why or (
            f"tied by {self.node.describe()} to positions that carry no removable channel "
            "(zero padding, a model input, a constant or a kept channel)"
        )
        unify(self.table, a, b, reason=reason)

    def block(self, layout: Layout | None, why: str) -> None:
        """Keep every channel in ``layout`` (``why`` is shown to the user)."""
        block(self.table, layout, f"{why} ({self.node.describe()})")

    def param(self, path: str, dim: int, layout: Layout | None, *, role: Role) -> None:
        """Declare that dimension ``dim`` of parameter/buffer ``path`` follows ``layout``.

        ``path`` is relative to the handler's module. ``role`` says what the positions do:
        ``"out"`` produce channels (weight rows), ``"in"`` read them (weight columns),
        ``"through"`` act per channel (norm scales, depthwise filters).
        """
        if layout is None or self.module is None:
            return
        owner, _, attr = path.rpartition(".")
        tensor = getattr(self.module.get_submodule(owner) if owner else self.module, attr)
        assert tensor.shape[dim] == layout.shape[1], (self.name, path, dim, layout.shape)
        self._members.append(Member(self.name, path, dim, layout, role))
