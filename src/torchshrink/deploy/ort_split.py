"""Batch-split ONNX Runtime candidates: one single-thread session per thread, a slice each.

Any ONNX Runtime backend ``NAME`` of :mod:`torchshrink.deploy.ort_backends` has a
``NAME+split`` twin for :func:`~torchshrink.deploy.accelerate.accelerate`: the same ONNX file,
run by as many sessions as there are threads, each with one intra-op thread, each on its slice
of the batch, concurrently (ONNX Runtime releases the GIL while it runs). ORT's intra-op
parallelism splits every operator and joins the threads after it; a transformer runs a few
hundred operators per forward, many of them small (LayerNorm, GELU, softmax, adds,
transposes), and those joins are a real share of the time on few cores. Measured on
all-MiniLM-L6-v2 (32 x 128 tokens, 2 threads): about 10-20% faster than one two-thread
session. Only correct for models whose samples do not interact, which
:func:`~torchshrink.deploy.accelerate.accelerate` checks through the fidelity of the output.
Dynamic int8 quantizes activations per tensor, so a slice gets its own scales: outputs differ
slightly from the unsplit session's, and that difference is part of the measured fidelity.

Example:
    >>> import torch, tempfile, pathlib
    >>> from torchshrink.deploy.backends import BuildContext
    >>> ctx = BuildContext(torch.nn.Linear(8, 4).eval(), torch.randn(6, 8), threads=2,
    ...                    workdir=pathlib.Path(tempfile.mkdtemp()))
    >>> built = build_split("ort_fp32+split", ctx)
    >>> built.run(torch.randn(6, 8)).shape, built.note
    (torch.Size([6, 4]), 'batch split across 2 single-thread sessions')
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from torchshrink.core.errors import ConfigError
from torchshrink.core.forward import Inputs
from torchshrink.deploy import ort_backends
from torchshrink.deploy.backends import BuildContext, Built
from torchshrink.deploy.batch_split import run_slices
from torchshrink.deploy.ort_session import OrtSession

SUFFIX = "+split"


class SplitSessions:
    """``threads`` single-thread sessions of one ONNX file, each run on a slice of the batch.

    Args:
        path: the ONNX file.
        threads: sessions (and threads) to split the batch across.
    """

    def __init__(self, path: str, threads: int) -> None:
        self.sessions = [OrtSession(path, threads=1, spinning=False) for _ in range(threads)]

    def __call__(self, inputs: Inputs) -> torch.Tensor:
        tensors = ort_backends._arrays(inputs)[1]
        k = min(len(self.sessions), int(tensors[0].shape[0]) if tensors[0].dim() else 1)
        if k <= 1:
            arrays = [np.ascontiguousarray(t.detach().cpu().numpy()) for t in tensors]
            return torch.from_numpy(self.sessions[0].run_numpy(*arrays)[0]).float()
        parts = [t.detach().cpu().tensor_split(k) for t in tensors]  # each (B/k, ...)
        calls = [
            functools.partial(
                self.sessions[i].run_numpy, *[np.ascontiguousarray(p[i].numpy()) for p in parts]
            )
            for i in range(k)
        ]
        return torch.cat([torch.from_numpy(out[0]) for out in run_slices(calls)]).float()


def build_split(name: str, ctx: BuildContext) -> Built:
    """Build ``NAME+split``: the ORT backend ``NAME``'s file, run batch-split.

    Raises:
        ConfigError: ``name`` does not end in ``+split`` or names no ORT backend.
    """
    base_name = name.removesuffix(SUFFIX)
    if base_name == name or base_name not in ort_backends.NAMES:
        raise ConfigError(f"{name!r} is not an ONNX Runtime backend name followed by {SUFFIX!r}")
    base = ort_backends.build(base_name, ctx)
    path = getattr(getattr(base.run, "session", None), "path", None)
    if path is None:  # pragma: no cover - every ORT backend runs an OrtSession
        raise ConfigError(f"{base_name} has no ONNX file to split")
    threads = max(1, ctx.threads)
    note = f"batch split across {threads} single-thread sessions"
    if base.note:
        note = f"{base.note}; {note}"
    return Built(SplitSessions(str(path), threads), base.low_precision, base.float_ops, note)
