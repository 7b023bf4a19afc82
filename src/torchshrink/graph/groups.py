"""Channel-dependency groups: the sets of weight slices that must shrink together.

:func:`dependency_groups` traces the model (:func:`~torchshrink.graph.trace`), walks the graph
in execution order applying the op handlers (modules) and function rules (``torch.cat``,
``view``, ``x + y``...), and returns one :class:`Group` per resulting channel space: every
parameter dimension whose positions carry those channels, with the exact positions of each
channel (so concatenation offsets, flatten expansion and head layouts are explicit).

Removing channel ``c`` of a group means deleting, in every entry, the positions whose
``channel`` is ``c``; :func:`torchshrink.prune.remove_channels` does that. A group that may not
shrink (it reaches a model output, is sliced by position, is tied to zero padding or to an
ignored layer...) is *blocked* and lists why.

Example:
    >>> import torch
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 9, 2))
    >>> [g] = dependency_groups(m, torch.zeros(1, 1, 5, 5))
    >>> g.size, [(e.module, e.param, e.dim, len(e.index)) for e in g.entries]
    (4, [('0', 'weight', 0, 4), ('0', 'bias', 0, 4), ('3', 'weight', 1, 36)])
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from torchshrink.core.errors import UnsupportedLayerError
from torchshrink.core.forward import Inputs
from torchshrink.graph.functions import FUNCTION_RULES
from torchshrink.graph.handlers import LayoutList, Member, OpContext, Role, get_op_handler
from torchshrink.graph.nodes import Graph
from torchshrink.graph.spaces import SpaceTable, block, fresh
from torchshrink.graph.trace import trace


@dataclass(frozen=True, eq=False)
class GroupEntry:
    """One parameter dimension of a group.

    Attributes:
        module: qualified name of the module that owns the parameter.
        param: the parameter / buffer name on that module (``"weight"``).
        dim: the dimension that shrinks.
        index: positions along ``dim`` that belong to the group (LongTensor).
        channel: the group channel of each position (same length as ``index``).
        role: ``"out"`` (produces the channels), ``"in"`` (reads them), ``"through"``
            (per-channel: norm scales, depthwise filters) or ``"direct"`` (a parameter used
            directly in ``forward``).
        length: the size of ``dim`` when the group was built.
        handler_module: the module whose handler declared the entry (its attributes are
            fixed after removal); ``""`` for parameters used directly.
    """

    module: str
    param: str
    dim: int
    index: torch.Tensor
    channel: torch.Tensor
    role: Role
    length: int
    handler_module: str


@dataclass(frozen=True, eq=False)
class Group:
    """Channels that shrink together, and every weight slice that carries them.

    Attributes:
        id: index of the group among all groups of the model (blocked ones included).
        size: number of channels (heads for a heads group).
        label: where the channels come from, e.g. ``"layer1.0.conv1:out"``.
        unit: ``"head"`` for attention heads, else ``"channel"``.
        entries: the parameter dimensions of the group.
        reasons: why the group may not shrink; empty when it may.
    """

    id: int
    size: int
    label: str
    unit: Literal["channel", "head"]
    entries: tuple[GroupEntry, ...]
    reasons: tuple[str, ...]

    @property
    def prunable(self) -> bool:
        return not self.reasons

    def modules(self) -> list[str]:
        """Qualified names of the modules owning the group's parameters, in order."""
        return list(dict.fromkeys(e.module for e in self.entries))

    def __repr__(self) -> str:
        state = "prunable" if self.prunable else f"blocked: {self.reasons[0]}"
        return f"Group({self.id}, {self.label!r}, {self.size} {self.unit}s, {state})"


def dependency_groups(
    model: nn.Module,
    example_inputs: Inputs,
    *,
    ignore: Iterable[str] = (),
    include_blocked: bool = False,
) -> list[Group]:
    """Trace ``model`` and return its channel-dependency groups.

    Args:
        model: the model (not changed).
        example_inputs: a tensor, a tuple of positional tensors or a dict of keyword tensors.
        ignore: qualified module names to leave untouched: they are not looked into, and every
            channel they read is kept.
        include_blocked: also return groups that may not shrink (with their ``reasons``).

    Returns:
        The groups, in order of first appearance in the model.

    Raises:
        UnsupportedLayerError: an op the graph layer does not know touches channels; the
            message names the module and its type (register a handler or use ``ignore``).
        ShapeError: the model does not run on ``example_inputs``.

    Example:
        >>> from torchshrink.core.zoo import create_zoo_model
        >>> m = create_zoo_model("lenet5")
        >>> [(g.label, g.size) for g in dependency_groups(m, m.example_inputs(1))]
        [('conv1:out', 20), ('conv2:out', 50), ('fc1:out', 500)]
    """
    ignore = list(ignore)
    graph = trace(model, example_inputs, ignore=ignore)
    table, members = analyze(model, graph, ignore=ignore)
    groups = _collect(table, members)
    return [g for g in groups if include_blocked or g.prunable]


def analyze(
    model: nn.Module, graph: Graph, *, ignore: Iterable[str] = ()
) -> tuple[SpaceTable, list[Member]]:
    """Propagate channel layouts through ``graph``; return the spaces and parameter members.

    Example:
        >>> import torch
        >>> m = torch.nn.Linear(3, 2)
        >>> table, members = analyze(m, trace(m, torch.zeros(1, 3)))
        >>> [(x.param, x.dim, x.role) for x in members]
        [('weight', 0, 'out'), ('bias', 0, 'out')]
    """
    ignored = set(ignore)
    modules = dict(model.named_modules(remove_duplicate=False))
    table = SpaceTable()
    layouts: dict[int, LayoutList] = {}
    members: list[Member] = []
    for node in graph.nodes:
        for v in node.outputs:
            layouts[v] = [None] * graph.values[v].ndim
        module = modules.get(node.target) if node.kind == "module" else None
        ctx = OpContext(graph, node, module, table, layouts, members)
        if node.kind == "param":
            _param_leaf(ctx, model)
        elif node.kind == "module" and node.target in ignored:
            for v in node.inputs:
                for lay in layouts[v]:
                    ctx.block(lay, "read by a module listed in ignore=")
        elif node.kind == "module":
            handler = get_op_handler(module)  # type: ignore[arg-type]
            assert handler is not None
            handler.propagate(ctx)
        elif node.kind == "function":
            rule = FUNCTION_RULES.get(node.target)
            if rule is not None:
                rule(ctx)
            elif any(lay is not None for v in node.inputs for lay in layouts[v]):
                where = f"module '{node.scope}'" if node.scope else "the model's own forward"
                fix = f"ignore=['{node.scope}']" if node.scope else "ignore="
                raise UnsupportedLayerError(
                    f"cannot follow channels through '{node.target}' in {where} "
                    f"({node.scope_type}): no rule for this op. Register an op handler for "
                    f"{node.scope_type} with torchshrink.graph.register_op_handler, or pass "
                    f"{fix} to keep its channels"
                )
    for i, v in enumerate(graph.outputs):
        for d, lay in enumerate(layouts[v]):
            block(table, lay, f"dimension {d} of model output {i} must keep its size")
    return table, members


def _param_leaf(ctx: OpContext, model: nn.Module) -> None:
    # A parameter used directly in forward(): each of its dims of size > 1 starts a space,
    # which the ops that use it tie to the dims they add / multiply / concatenate it along.
    node = ctx.node
    owner, _, attr = node.target.rpartition(".")
    shape = ctx.shape(node.outputs[0])
    lays: LayoutList = []
    for d, n in enumerate(shape):
        if n == 1:
            lays.append(None)
            continue
        lay = fresh(ctx.table.new(n, f"{node.target}[dim {d}]"), n)
        ctx._members.append(Member(owner, attr, d, lay, "direct"))
        lays.append(lay)
    ctx.set_output(0, lays)


def _collect(table: SpaceTable, members: list[Member]) -> list[Group]:
    by_leaf: dict[int, list[GroupEntry]] = {}
    for m in members:
        res = table.resolve(m.layout)
        owner, _, param = f"{m.module}.{m.param}".lstrip(".").rpartition(".")
        for s in dict.fromkeys(int(x) for x in res[0] if x >= 0):
            (pos,) = np.nonzero(res[0] == s)
            entry = GroupEntry(
                owner,
                param,
                m.dim,
                torch.from_numpy(pos.astype(np.int64)),
                torch.from_numpy(res[1, pos].astype(np.int64)),
                m.role,
                int(m.layout.shape[1]),
                m.module if m.role != "direct" else "",
            )
            by_leaf.setdefault(s, []).append(entry)
    groups = []
    for i, (leaf, entries) in enumerate(by_leaf.items()):
        reasons = table.reasons(leaf)
        if all(e.role == "direct" for e in entries):
            reasons.append("only parameters used directly in forward() carry these channels")
        label = table.label(leaf)
        unit: Literal["channel", "head"] = "head" if ":heads" in label else "channel"
        groups.append(Group(i, table.size[leaf], label, unit, tuple(entries), tuple(reasons)))
    return groups
