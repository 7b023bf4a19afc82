"""Pruning: structured removal of channels, neurons and heads (more granularities to come).

Example:
    >>> from torchshrink.prune import remove_channels
    >>> callable(remove_channels)
    True
"""

from __future__ import annotations

from torchshrink.prune.structured import remove_channels, remove_groups

__all__ = ["remove_channels", "remove_groups"]
