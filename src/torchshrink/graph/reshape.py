"""Channel layouts through ``view`` / ``reshape`` / ``flatten`` / ``unflatten`` / ``squeeze``.

Input and output shapes are matched into groups of dimensions with equal products (the usual
view rule). Within a group the input dims are merged into one flat layout (row-major: an outer
channel dim repeats each channel over the inner positions, an inner one tiles), and the flat
layout is split back into the output dims: a dim gets the channels when the layout varies
along it only. That is exact for ``flatten`` into a Linear (channel ``c`` covers features
``c*H*W .. (c+1)*H*W - 1``) and for its inverse, and it refuses (reports as failed) reshapes
that mix channels with another dim, such as splitting features into attention heads.

Example:
    >>> from torchshrink.graph.spaces import fresh
    >>> out, failed = reshape_layouts((2, 3, 2, 2), [None, fresh(0, 3), None, None], (2, 12))
    >>> out[1][1].tolist(), failed
    ([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2], [])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from torchshrink.graph.spaces import Layout

LayoutList = list[Layout | None]


def _merge(sizes: Sequence[int], lays: LayoutList) -> tuple[Layout | None, list[Layout]]:
    cur, size = lays[0], sizes[0]
    for s, lay in zip(sizes[1:], lays[1:], strict=True):
        if cur is not None and lay is not None:
            return None, [cur, lay]
        if cur is not None:
            cur = np.repeat(cur, s, axis=1)  # each outer channel spans the inner positions
        elif lay is not None:
            cur = np.tile(lay, (1, size))  # the inner channels repeat for each outer index
        size *= s
    return cur, []


def _split(flat: Layout | None, sizes: Sequence[int]) -> tuple[LayoutList, list[Layout]]:
    if flat is None or not (flat[0] >= 0).any():
        return [None] * len(sizes), []
    if len(sizes) == 1:
        return [flat], []
    arr = flat.reshape(2, *sizes)  # (2, *sizes)
    for t, n in enumerate(sizes):
        if n == 1:
            continue
        index: list[slice | int] = [slice(None)] + [0] * len(sizes)
        index[1 + t] = slice(None)
        line = arr[tuple(index)]  # (2, n)
        shape = [2] + [1] * len(sizes)
        shape[1 + t] = n
        if np.array_equal(np.broadcast_to(line.reshape(shape), arr.shape), arr):
            out: LayoutList = [None] * len(sizes)
            out[t] = np.ascontiguousarray(line)
            return out, []
    return [None] * len(sizes), [flat]


def reshape_layouts(
    in_shape: Sequence[int], in_lays: LayoutList, out_shape: Sequence[int]
) -> tuple[LayoutList, list[Layout]]:
    """Layouts of a reshape's output, and the input layouts that could not be carried over.

    Args:
        in_shape: input shape.
        in_lays: per-dim input layouts.
        out_shape: output shape (same number of elements).

    Returns:
        ``(out_layouts, failed)``; every layout in ``failed`` must be kept whole by the caller.

    Example:
        >>> from torchshrink.graph.spaces import fresh
        >>> out, failed = reshape_layouts((2, 8), [None, fresh(0, 8)], (2, 2, 4))
        >>> out, len(failed)
        ([None, None, None], 1)
    """
    out: LayoutList = [None] * len(out_shape)
    failed: list[Layout] = []
    if 0 in in_shape or math.prod(in_shape) != math.prod(out_shape):
        return out, [lay for lay in in_lays if lay is not None]
    i = j = 0
    while i < len(in_shape) and j < len(out_shape):
        i0, j0 = i, j
        pi, pj = in_shape[i], out_shape[j]
        i, j = i + 1, j + 1
        while pi != pj:
            if pi < pj:
                pi, i = pi * in_shape[i], i + 1
            else:
                pj, j = pj * out_shape[j], j + 1
        flat, bad = _merge(in_shape[i0:i], in_lays[i0:i])
        parts, bad2 = _split(flat, out_shape[j0:j])
        failed += bad + bad2
        out[j0:j] = parts
    failed += [lay for lay in in_lays[i:] if lay is not None]  # trailing size-1 channel dims
    return out, failed
