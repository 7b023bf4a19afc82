"""The data types of a traced graph: values (tensors), nodes (ops) and the graph itself.

A :class:`Graph` is what :func:`torchshrink.graph.trace` records from one run of a model:
every tensor the run produced is a :class:`Value`; every op is a :class:`Node` that consumed
and produced values. Nodes are in execution order, which is a topological order.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from torchshrink.graph import trace
    >>> g = trace(nn.Sequential(nn.Linear(4, 3), nn.ReLU()), torch.zeros(2, 4))
    >>> [n.target for n in g.nodes]
    ['input.0', '0', 'relu']
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

NodeKind = Literal["input", "param", "constant", "function", "module"]


@dataclass(frozen=True)
class ValueRef:
    """Stands for a traced tensor inside the recorded arguments of a node."""

    id: int


@dataclass(frozen=True)
class Value:
    """One tensor of the run.

    Attributes:
        id: index into :attr:`Graph.values`.
        shape: the tensor's shape during the trace.
        dtype: its dtype.
        producer: index of the node that produced it.
    """

    id: int
    shape: tuple[int, ...]
    dtype: torch.dtype
    producer: int

    @property
    def ndim(self) -> int:
        return len(self.shape)


@dataclass(frozen=True)
class Node:
    """One op of the run.

    Attributes:
        index: position in :attr:`Graph.nodes` (execution order).
        kind: ``"input"`` (a model input), ``"param"`` (a parameter or buffer used directly in
            a ``forward``), ``"constant"`` (any other tensor from outside the run),
            ``"function"`` (a torch function or tensor method) or ``"module"`` (a module with
            a registered op handler, or one the user asked to ignore, recorded as one op).
        target: function name, module qualified name, parameter qualified name or input path.
        scope: qualified name of the innermost module running when the op ran (``""`` is the
            model itself).
        scope_type: class name of that module.
        inputs: ids of the values consumed, in argument order.
        outputs: ids of the values produced.
        args: positional arguments, tensors replaced by :class:`ValueRef`.
        kwargs: keyword arguments, tensors replaced by :class:`ValueRef`.
    """

    index: int
    kind: NodeKind
    target: str
    scope: str
    scope_type: str
    inputs: tuple[int, ...] = ()
    outputs: tuple[int, ...] = ()
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        """A short text naming the op and where it ran, for error messages."""
        where = f"'{self.scope}'" if self.scope else "the model itself"
        if self.kind == "module":
            return f"module '{self.target}' ({self.scope_type})"
        return f"'{self.target}' in {where} ({self.scope_type})"


@dataclass
class Graph:
    """The record of one run: values, nodes, and which values are the model's inputs / outputs.

    Example:
        >>> import torch
        >>> from torchshrink.graph import trace
        >>> g = trace(torch.nn.Linear(4, 3), torch.zeros(2, 4))
        >>> g.values[g.outputs[0]].shape
        (2, 3)
    """

    values: list[Value] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)

    def users(self, value: int) -> list[Node]:
        """The nodes that consume ``value``."""
        return [n for n in self.nodes if value in n.inputs]

    def module_nodes(self) -> Iterator[Node]:
        """The nodes that stand for whole modules (handled or ignored)."""
        return (n for n in self.nodes if n.kind == "module")

    def __len__(self) -> int:
        return len(self.nodes)

    def __str__(self) -> str:
        lines = []
        for n in self.nodes:
            outs = ", ".join(f"%{v}{list(self.values[v].shape)}" for v in n.outputs)
            ins = ", ".join(f"%{v}" for v in n.inputs)
            lines.append(f"{outs} = {n.kind}:{n.target}({ins})")
        return "\n".join(lines)
