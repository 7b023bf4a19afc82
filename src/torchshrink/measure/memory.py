"""Peak memory of one inference, from the allocator events recorded by ``torch.profiler``.

What is measured: with ``profile_memory=True`` the profiler records every allocation and free
made through PyTorch's allocator during one forward pass (after one untimed warm-up pass, so
one-off lazy initialisation is not counted). Replaying those events in time order gives the
bytes live at each moment; ``peak_bytes`` is the highest value above the level at the start.
That is the **working memory of the inference**: activations, the output and operator
workspaces (e.g. im2col buffers). It does **not** include the weights or the inputs, which
already existed before the pass (see ``weight_bytes`` for those), nor memory that a library
allocates outside PyTorch's allocator (e.g. oneDNN's private scratchpads). Process RSS is not
used: it moves in page-sized steps and the allocator keeps freed memory, so it hides the peak.

Example:
    >>> import torch
    >>> from torch import nn
    >>> m = measure_memory(nn.Linear(100, 1000), torch.zeros(8, 100))
    >>> m.peak_bytes >= 8 * 1000 * 4
    True
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from torchshrink.core.forward import Inputs, call_model, eval_mode


@dataclass(frozen=True)
class MemoryStats:
    """Allocator activity of one forward pass (see the module docstring for what is counted).

    Attributes:
        peak_bytes: most bytes live at once above the level before the pass, or ``None`` if
            the profiler gave no allocation events.
        allocated_bytes: sum of all allocations during the pass.
        n_allocations: number of allocations during the pass.
        retained_bytes: bytes still live when the pass ended (mostly the output).
        device: the device whose allocations are reported, e.g. ``"cpu"``.
        method: how it was measured, in words.
    """

    peak_bytes: int | None
    allocated_bytes: int
    n_allocations: int
    retained_bytes: int
    device: str
    method: str = "torch.profiler(profile_memory=True) allocator events, one forward pass"


@contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    # Kineto prints "profiler_start/stop" lines from C++ straight to file descriptor 2; they
    # would clutter every CLI run. Only profiler start and stop are wrapped, not the model.
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _model_device(model: nn.Module) -> torch.device:
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def measure_memory(model: nn.Module, inputs: Inputs, *, warmup: int = 1) -> MemoryStats:
    """Measure the working memory of one forward pass of ``model`` on ``inputs``.

    Args:
        model: the model; run in eval mode under ``torch.inference_mode()``, modes restored.
        inputs: a tensor, a tuple of positional tensors or a dict of keyword tensors.
        warmup: untimed passes before the measured one.

    Example:
        >>> import torch
        >>> measure_memory(torch.nn.ReLU(), torch.zeros(256)).peak_bytes
        1024
    """
    from torch.profiler import ProfilerActivity, profile

    device = _model_device(model)
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with eval_mode(model), torch.inference_mode():
        for _ in range(warmup):
            call_model(model, inputs)
        prof = profile(activities=activities, profile_memory=True)
        with _quiet_native_stderr():
            prof.start()
        try:
            # Kept alive until the profiler stops, so that retained_bytes shows the output.
            output = call_model(model, inputs)
        finally:
            with _quiet_native_stderr():
                prof.stop()
        del output

    # kineto_results is the raw event list; FunctionEvents fold allocations into their ops.
    results = getattr(getattr(prof, "profiler", None), "kineto_results", None)
    if results is None:
        return MemoryStats(None, 0, 0, 0, device.type, method="torch.profiler gave no events")
    events = [
        e
        for e in results.events()
        if e.name() == "[memory]" and str(e.device_type()).split(".")[-1].lower() == device.type
    ]
    events.sort(key=lambda e: e.start_ns())
    live = peak = allocated = count = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
        if e.nbytes() > 0:
            allocated += e.nbytes()
            count += 1
    return MemoryStats(
        peak_bytes=peak if events else None,
        allocated_bytes=allocated,
        n_allocations=count,
        retained_bytes=max(live, 0),
        device=device.type,
    )
