"""Channel spaces, refinement, unify and reshape layouts."""

from __future__ import annotations

import numpy as np

from torchshrink.graph.reshape import reshape_layouts
from torchshrink.graph.spaces import SpaceTable, fresh, unify, untracked


def test_union_after_refinement_aligns_sub_ranges() -> None:
    t = SpaceTable()
    a, b = t.new(6, "a"), t.new(2, "b")
    unify(t, fresh(a, 6)[:, 2:4], fresh(b, 2), reason="add")
    assert [(st, n) for st, _, n in t.leaves(a)] == [(0, 2), (2, 2), (4, 2)]
    res = t.resolve(fresh(a, 6))
    assert res[0, 2] == t.find(b) and res[1, 2:4].tolist() == [0, 1]


def test_untracked_positions_block_only_what_they_face() -> None:
    t = SpaceTable()
    a = t.new(4, "a")
    padded = np.concatenate([untracked(1), fresh(t.new(2, "x"), 2), untracked(1)], axis=1)
    unify(t, fresh(a, 4), padded, reason="zero pad")
    blocked = [bool(t.reasons(leaf)) for _, leaf, _ in t.leaves(a)]
    assert blocked == [True, False, True]


def test_chunk_like_self_union_ties_halves() -> None:
    t = SpaceTable()
    a = t.new(8, "a")
    lay = fresh(a, 8)
    unify(t, lay[:, :4], lay[:, 4:], reason="chunk")
    res = t.resolve(lay)
    assert len(set(res[0].tolist())) == 1 and res[1].tolist() == [0, 1, 2, 3] * 2


def test_reshape_flatten_unflatten_and_refusal() -> None:
    lay = fresh(0, 3)
    out, failed = reshape_layouts((2, 3, 2, 2), [None, lay, None, None], (2, 12))
    assert out[1][1].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2] and not failed
    back, failed = reshape_layouts((2, 12), out, (2, 3, 4))
    assert back[1] is not None and back[1][1].tolist() == [0, 1, 2] and not failed
    seq = fresh(1, 6)
    out, failed = reshape_layouts((2, 5, 6), [None, None, seq], (2, 5, 2, 3))  # heads split
    assert out == [None] * 4 and len(failed) == 1
    out, failed = reshape_layouts((4, 6), [None, seq], (4, 1, 6))  # unsqueeze
    assert out[2] is not None and out[1] is None and not failed
