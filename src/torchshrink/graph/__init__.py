"""The graph layer: one dynamic trace of a model, channel-dependency groups, per-op handlers.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from torchshrink.graph import dependency_groups
    >>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> [(g.label, g.size) for g in dependency_groups(m, torch.zeros(1, 4))]
    [('0:out', 8)]
"""

from __future__ import annotations

from torchshrink.graph.groups import Group, GroupEntry, analyze, dependency_groups
from torchshrink.graph.handlers import (
    OpContext,
    OpHandler,
    get_op_handler,
    register_op_handler,
)
from torchshrink.graph.nodes import Graph, Node, Value, ValueRef
from torchshrink.graph.trace import trace

__all__ = [
    "Graph",
    "Group",
    "GroupEntry",
    "Node",
    "OpContext",
    "OpHandler",
    "Value",
    "ValueRef",
    "analyze",
    "dependency_groups",
    "get_op_handler",
    "register_op_handler",
    "trace",
]
