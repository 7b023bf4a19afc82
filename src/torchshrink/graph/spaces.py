"""Channel index spaces: union-find with refinement, and per-dimension layouts.

Every tensor dimension that carries channels (conv filters, Linear features, attention heads,
the residual stream) is described by a *layout*: two integer arrays of the dimension's length,
``sp[i]`` (which channel space position ``i`` belongs to, ``-1`` when it belongs to none) and
``ch[i]`` (which channel of that space). A space is created where channels are produced (a
conv's output, a parameter's dimension) and spaces are merged (``union``) where an op forces two
dimensions to shrink together (residual add, elementwise gate, normalization).

Per-position arrays make every index mapping exact and simple: concatenation is array
concatenation, ``flatten`` into a Linear repeats each channel ``H*W`` times, zero padding adds
``-1`` positions. When an op ties only *part* of a space to something (``chunk``, a channel
zero-pad aligned with a conv output), the space is *refined*: cut into child spaces at those
boundaries, so each part can join its own group. A space that must not shrink is *blocked*
with a reason, which every space merged with it inherits.

Example:
    >>> t = SpaceTable()
    >>> a, b = t.new(4, "a"), t.new(2, "b")
    >>> unify(t, fresh(a, 4)[:, 2:], fresh(b, 2), reason="add")  # a[2:4] ~ b
    >>> t.find(b) in [leaf for _, leaf, _ in t.leaves(a)]
    True
"""

from __future__ import annotations

import itertools

import numpy as np

# A layout is an int64 array of shape (2, n): row 0 the space ids, row 1 the channel indices.
# ``None`` stands for a dimension whose positions carry no channel space (batch, spatial, ...).
Layout = np.ndarray


def fresh(space: int, size: int) -> Layout:
    """The layout of a new dimension that is exactly channels ``0..size-1`` of ``space``."""
    return np.stack([np.full(size, space, dtype=np.int64), np.arange(size, dtype=np.int64)])


def untracked(size: int) -> Layout:
    """A layout of ``size`` positions that belong to no space."""
    return np.stack([np.full(size, -1, dtype=np.int64), np.zeros(size, dtype=np.int64)])


class SpaceTable:
    """Union-find over channel spaces, with refinement into sub-ranges and blocking reasons.

    Example:
        >>> t = SpaceTable()
        >>> s = t.new(8, "conv.out")
        >>> t.refine(s, [4])
        >>> [(start, size) for start, _, size in t.leaves(s)]
        [(0, 4), (4, 4)]
    """

    def __init__(self) -> None:
        self.size: list[int] = []
        self.origin: list[str] = []
        self._parent: list[int] = []
        self._children: dict[int, list[tuple[int, int]]] = {}
        self._reasons: dict[int, list[str]] = {}
        self._first: dict[int, int] = {}  # root -> oldest space merged into it (for labels)

    def label(self, s: int) -> str:
        """The origin of the oldest space merged into ``s`` (e.g. the stem conv of a stream)."""
        r = self.find(s)
        return self.origin[self._first.get(r, r)]

    def new(self, size: int, origin: str) -> int:
        """Create a space of ``size`` channels; ``origin`` says where it comes from."""
        self.size.append(int(size))
        self.origin.append(origin)
        self._parent.append(len(self._parent))
        return len(self._parent) - 1

    def find(self, s: int) -> int:
        root = s
        while self._parent[root] != root:
            root = self._parent[root]
        while self._parent[s] != root:  # path compression
            self._parent[s], s = root, self._parent[s]
        return root

    def leaves(self, s: int) -> list[tuple[int, int, int]]:
        """``(start, leaf, size)`` of the unrefined spaces that make up ``s``, in order."""
        r = self.find(s)
        if r not in self._children:
            return [(0, r, self.size[r])]
        out = []
        for start, child in self._children[r]:
            out += [(start + st, leaf, n) for st, leaf, n in self.leaves(child)]
        return out

    def refine(self, s: int, cuts: list[int]) -> None:
        """Cut space ``s`` so that every position in ``cuts`` starts a leaf."""
        r = self.find(s)
        inner = sorted({c for c in cuts if 0 < c < self.size[r]})
        if not inner:
            return
        if r in self._children:
            for start, child in self._children[r]:
                self.refine(child, [c - start for c in inner])
            return
        bounds = [0, *inner, self.size[r]]
        kids = []
        for lo, hi in itertools.pairwise(bounds):
            kid = self.new(hi - lo, f"{self.origin[r]}[{lo}:{hi}]")
            self._reasons[kid] = list(self._reasons.get(r, []))
            kids.append((lo, kid))
        self._children[r] = kids

    def union(self, a: int, b: int) -> None:
        """Merge two spaces of equal size: channel ``i`` of one is channel ``i`` of the other."""
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        assert self.size[ra] == self.size[rb], (self.origin[ra], self.origin[rb])
        if ra in self._children or rb in self._children:
            cuts = [st for st, _, _ in self.leaves(ra)] + [st for st, _, _ in self.leaves(rb)]
            self.refine(ra, cuts)
            self.refine(rb, cuts)
            for (_, la, _), (_, lb, _) in zip(self.leaves(ra), self.leaves(rb), strict=True):
                self.union(la, lb)
            self._children.pop(rb, None)
        self._parent[rb] = ra
        self._first[ra] = min(self._first.get(ra, ra), self._first.pop(rb, rb))
        self._reasons.setdefault(ra, []).extend(self._reasons.pop(rb, []))

    def block(self, s: int, reason: str) -> None:
        """Mark every channel of ``s`` as not removable, saying why."""
        for _, leaf, _ in self.leaves(s):
            reasons = self._reasons.setdefault(self.find(leaf), [])
            if reason not in reasons:
                reasons.append(reason)

    def reasons(self, s: int) -> list[str]:
        """Why the leaf space ``s`` may not shrink (empty when it may)."""
        return list(self._reasons.get(self.find(s), []))

    def resolve(self, layout: Layout) -> Layout:
        """The same positions expressed in current leaf spaces and leaf-local channels."""
        out = layout.copy()
        sp = layout[0]
        for s in np.unique(sp[sp >= 0]):
            mask = sp == s
            leaves = self.leaves(int(s))
            starts = np.array([st for st, _, _ in leaves])
            ids = np.array([self.find(leaf) for _, leaf, _ in leaves])
            pos = np.searchsorted(starts, layout[1, mask], side="right") - 1
            out[0, mask] = ids[pos]
            out[1, mask] = layout[1, mask] - starts[pos]
        return out


def _runs(lay: Layout) -> np.ndarray:
    """Start positions of maximal runs of one space with consecutive channels."""
    sp, ch = lay
    brk = (sp[1:] != sp[:-1]) | ((ch[1:] != ch[:-1] + 1) & (sp[1:] >= 0))
    return np.concatenate([[0], np.nonzero(brk)[0] + 1])


def unify(table: SpaceTable, a: Layout | None, b: Layout | None, *, reason: str) -> None:
    """Make two equally long dimensions shrink together, position by position.

    Positions that are channels on both sides merge their spaces (refining them first where
    the runs cover only part of a space); a channel facing a position without a space (a model
    input, zero padding, a constant) is blocked with ``reason``.
    """
    if a is None and b is None:
        return
    n = (a if a is not None else b).shape[1]  # type: ignore[union-attr]
    a = untracked(n) if a is None else a
    b = untracked(n) if b is None else b
    assert a.shape == b.shape, (a.shape, b.shape)
    for _ in range(64):
        ra, rb = table.resolve(a), table.resolve(b)
        starts = np.union1d(_runs(ra), _runs(rb))
        ends = np.append(starts[1:], n)
        changed = False
        for lo, hi in zip(starts, ends, strict=True):
            for r in (ra, rb):
                s, c = int(r[0, lo]), int(r[1, lo])
                if s >= 0 and (c != 0 or hi - lo != table.size[s]):
                    table.refine(s, [c, c + hi - lo])
                    changed = True
        if changed:
            continue
        for lo in starts:
            sa, sb = int(ra[0, lo]), int(rb[0, lo])
            if sa >= 0 and sb >= 0:
                table.union(sa, sb)
            elif sa >= 0 or sb >= 0:
                table.block(max(sa, sb), reason)
        return
    raise AssertionError("channel layout refinement did not converge")


def block(table: SpaceTable, lay: Layout | None, reason: str) -> None:
    """Block every space that has a position in ``lay``."""
    if lay is None:
        return
    sp = table.resolve(lay)[0]
    for s in np.unique(sp[sp >= 0]):
        table.block(int(s), reason)
