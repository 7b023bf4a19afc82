"""BatchSplit: one slice of the batch per thread gives the same output as one call."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from torchshrink.deploy.batch_split import BatchSplit


@pytest.fixture
def two_threads():  # type: ignore[no-untyped-def]
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))


def test_split_matches_and_keeps_the_thread_count(two_threads: None) -> None:
    net = _net().eval()
    x = torch.randn(5, 3, 6, 6)  # 5 rows over 2 threads: slices of 3 and 2
    with torch.inference_mode():
        out = BatchSplit(net)(x)
        ref = net(x)
    assert out.shape == (5, 5)
    assert (out - ref).abs().max().item() < 1e-6
    assert torch.get_num_threads() == 2


def test_the_caller_runs_the_first_slice_and_a_worker_the_other(two_threads: None) -> None:
    import threading

    class Where(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            names.append((threading.current_thread().name, torch.get_num_threads(), x[0, 0]))
            return x * 2

    names: list[tuple[str, int, torch.Tensor]] = []
    out = BatchSplit(Where())(torch.arange(4.0).reshape(4, 1))
    assert out.flatten().tolist() == [0.0, 2.0, 4.0, 6.0]
    by_first_row = {float(first): (name, threads) for name, threads, first in names}
    assert by_first_row[0.0] == (threading.current_thread().name, 1)  # one intra-op thread
    assert by_first_row[2.0][0].startswith("torchshrink-split") and by_first_row[2.0][1] == 1
    assert torch.get_num_threads() == 2  # the caller's setting is back
    names.clear()
    BatchSplit(Where())(torch.ones(1, 1))  # smaller than the thread count: one direct call
    assert [name for name, _, _ in names] == [threading.current_thread().name]


def test_tuple_and_dict_outputs_are_concatenated(two_threads: None) -> None:
    class Multi(nn.Module):
        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | tuple[torch.Tensor]]:
            return {"a": x + 1, "b": (x.sum(1, keepdim=True),)}

    x = torch.arange(12.0).reshape(6, 2)
    out = BatchSplit(Multi())(x)
    assert torch.equal(out["a"], x + 1)
    assert torch.equal(out["b"][0], x.sum(1, keepdim=True))


def test_an_output_that_cannot_be_concatenated_raises(two_threads: None) -> None:
    class Tagged(nn.Module):
        def forward(self, x: torch.Tensor) -> str:
            return "tag"

    with pytest.raises(TypeError, match="cannot concatenate outputs of type str"):
        BatchSplit(Tagged())(torch.zeros(4, 1))
