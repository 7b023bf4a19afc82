"""Data-parallel inference on one machine: each thread runs the whole model on a slice of the batch.

Intra-op parallelism splits every single operator across the threads and joins them again
after it: one fork / join barrier per layer. For a narrow (pruned) network whose layers take
tens of microseconds each, those barriers, and the idle time while one thread waits for the
other, are a large share of the latency, and under load (a preempted thread stalls the whole
team at every barrier) they dominate it. Splitting the batch instead gives each thread a
whole, independent forward pass at one intra-op thread: no barrier until the outputs are
concatenated. It is only correct when samples do not interact (eval-mode BatchNorm does not
couple them; a batch statistic would), which is why :func:`optimize_for_inference` checks the
output of every candidate against the unchanged model before it can be chosen.

The number of slices is the intra-op thread count in effect when the module is called (set by
:class:`~torchshrink.deploy.candidates.InferenceModule`), so the same wrapped model serves
every thread count.

Example:
    >>> import torch
    >>> net = torch.nn.Linear(4, 3).eval()
    >>> x = torch.randn(8, 4)
    >>> with torch.inference_mode():
    ...     torch.set_num_threads(2)
    ...     same = torch.allclose(BatchSplit(net)(x), net(x), atol=1e-6)
    >>> same
    True
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import torch
from torch import nn

# One pool per worker count, shared by every BatchSplit: workers are long-lived threads (each
# keeps its one-thread OpenMP setting) and modules stay deep-copyable (no pool inside them).
_POOLS: dict[int, ThreadPoolExecutor] = {}
_LOCK = threading.Lock()
T = TypeVar("T")


class BatchSplit(nn.Module):
    """Run ``inner`` on ``torch.get_num_threads()`` slices of the batch, one thread each.

    Every tensor argument is split along dimension 0 (the batch); the outputs (a tensor, or a
    tuple / list of tensors) are concatenated along dimension 0. With one thread, or a batch
    smaller than the thread count, ``inner`` is called directly.

    Args:
        inner: a batch-independent model (eval mode).

    Example:
        >>> import torch
        >>> m = BatchSplit(torch.nn.Identity())
        >>> m(torch.arange(6.0).reshape(6, 1)).flatten().tolist()
        [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    """

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args: Any) -> Any:
        n = torch.get_num_threads()
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        batch = tensors[0].shape[0] if tensors and tensors[0].dim() else 0
        if n <= 1 or batch < n:
            return self.inner(*args)
        # (B, ...) -> n slices of ~B/n; non-tensor arguments go to every slice unchanged.
        parts = [a.tensor_split(n) if isinstance(a, torch.Tensor) else [a] * n for a in args]
        grad = torch.is_grad_enabled()
        inference = torch.is_inference_mode_enabled()
        calls = [
            functools.partial(_one_thread, self.inner, [p[i] for p in parts], grad, inference)
            for i in range(n)
        ]
        try:
            results = run_slices(calls)
        finally:
            # set_num_threads(1) on a thread also changes process-wide settings (MKL, the
            # default for new threads): give the caller back its own.
            torch.set_num_threads(n)
        return _concat([out for out, _ in results])


def run_slices(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run ``calls`` concurrently and return their results in order: the first on the calling
    thread, the others on the shared pool. The caller working too means one thread fewer to
    wake per call (waking an idle CPU of a virtual machine can take milliseconds).
    """
    pool = _pool(len(calls))
    futures = [pool.submit(c) for c in calls[1:]]
    try:
        first = calls[0]()
    finally:
        rest = [f.result() for f in futures]
    return [first, *rest]


def _pool(n: int) -> ThreadPoolExecutor:
    with _LOCK:
        if n not in _POOLS:
            _POOLS[n] = ThreadPoolExecutor(max_workers=n, thread_name_prefix="torchshrink-split")
        return _POOLS[n]


def _one_thread(inner: nn.Module, args: list[Any], grad: bool, inference: bool) -> tuple[Any, bool]:
    changed = torch.get_num_threads() != 1  # the OpenMP setting is per thread: once per worker
    if changed:
        torch.set_num_threads(1)
    # Grad / inference mode are thread-local: carry the caller's into the worker.
    with torch.inference_mode(inference), torch.set_grad_enabled(grad):
        return inner(*args), changed


def _concat(outs: list[Any]) -> Any:
    first = outs[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(outs)  # n x (B/n, ...) -> (B, ...)
    if isinstance(first, (tuple, list)):
        return type(first)(_concat(list(col)) for col in zip(*outs, strict=True))
    if isinstance(first, dict):
        return {k: _concat([o[k] for o in outs]) for k in first}
    raise TypeError(f"BatchSplit: cannot concatenate outputs of type {type(first).__name__}")
