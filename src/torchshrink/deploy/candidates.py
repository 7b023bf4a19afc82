"""Inference variants of one model: BN folding, channels_last, TorchScript, compile, ORT, split.

Each variant is an :class:`InferenceModule`: the transformed model plus the two run-time
settings that belong to it, the memory format its 4-D inputs are converted to and the number of
intra-op threads it runs with. Converting the input inside ``forward`` means a measured latency
includes that conversion, so a variant is never credited with work done outside it.

Why each transformation can pay on a CPU:

* BN folding removes one memory-bound pass over every activation per conv layer;
* channels_last (NHWC) lets oneDNN run its convolutions without reordering NCHW activations
  into its blocked layout and back around every layer; small, pruned layers are dominated by
  exactly those reorders;
* ``torch.jit.trace`` + ``torch.jit.freeze`` inlines the weights as constants and fuses
  conv + add + ReLU, removing per-op Python and dispatcher overhead, which is what limits
  narrow layers;
* ``torch.jit.optimize_for_inference`` on top of freezing keeps activations in oneDNN's
  blocked layout from one conv to the next (NCHW inputs) and fuses conv + add + ReLU;
* ``torch.compile`` (inductor, CPU, weights frozen) generates fused C++ kernels; it needs a C++
  compiler and compiles for tens of seconds, so it is opt-in;
* ONNX Runtime fp32 (:class:`OrtModule`): MLAS's NCHWc convolutions with fused Conv + Add +
  ReLU, and a lower fixed cost per op than the PyTorch dispatcher;
* direct 3x3 convolutions (:mod:`torchshrink.deploy.direct_conv`): a kernel vectorised over
  pixels instead of channels, with residual add and ReLU fused, for narrow layers whose
  channel counts leave oneDNN's and MLAS's 16-lane registers half empty;
* batch split (:class:`~torchshrink.deploy.batch_split.BatchSplit`): one slice of the batch per
  thread instead of every op split across threads, so narrow layers pay no per-op barrier.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU()).eval()
    >>> x = torch.randn(2, 3, 8, 8)
    >>> v = build_variant(net, x, fold=True, channels_last=True, jit=True)
    >>> bool(torch.allclose(v(x), net(x), atol=1e-5)), v.channels_last
    (True, True)
"""

from __future__ import annotations

import copy
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchshrink.core.forward import Inputs, call_model
from torchshrink.deploy.batch_split import BatchSplit
from torchshrink.deploy.onnx_export import export_onnx
from torchshrink.deploy.ort_session import OrtSession
from torchshrink.quantize.fold import fold_bn


class InferenceModule(nn.Module):
    """A model prepared for inference, with its input memory format and thread count.

    Args:
        inner: the transformed model (an ``nn.Module``, a frozen ``ScriptModule`` or a
            compiled module).
        channels_last: convert 4-D floating-point inputs to ``torch.channels_last``.
        threads: intra-op threads for each call (restored afterwards); ``None`` keeps torch's
            current setting.

    Example:
        >>> import torch
        >>> m = InferenceModule(torch.nn.Identity(), channels_last=True, threads=1)
        >>> m(torch.zeros(1, 2, 3, 3)).is_contiguous(memory_format=torch.channels_last)
        True
    """

    def __init__(
        self, inner: nn.Module, *, channels_last: bool = False, threads: int | None = None
    ) -> None:
        super().__init__()
        self.inner = inner
        self.channels_last = channels_last
        self.threads = threads

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.channels_last:
            args = tuple(_to_channels_last(a) for a in args)
            kwargs = {k: _to_channels_last(v) for k, v in kwargs.items()}
        previous = torch.get_num_threads()
        switch = self.threads is not None and self.threads != previous
        if switch:
            torch.set_num_threads(self.threads)  # type: ignore[arg-type]
        try:
            return self.inner(*args, **kwargs)
        finally:
            if switch:
                torch.set_num_threads(previous)

    def with_threads(self, threads: int | None) -> InferenceModule:
        """The same prepared model (weights shared) with another thread count."""
        return InferenceModule(self.inner, channels_last=self.channels_last, threads=threads)

    def extra_repr(self) -> str:
        return f"channels_last={self.channels_last}, threads={self.threads}"


def build_variant(
    model: nn.Module,
    example_inputs: Inputs,
    *,
    fold: bool = True,
    channels_last: bool = False,
    jit: bool = False,
    jit_optimize: bool = False,
    compile: bool = False,
    compile_mode: str | None = None,
    ort: bool = False,
    direct: bool = False,
    split: bool = False,
    threads: int | None = None,
) -> InferenceModule:
    """One inference variant of ``model`` (a copy: ``model`` is not changed).

    Args:
        model: the model to prepare.
        example_inputs: inputs in the torchshrink convention (tensor, tuple or dict), used to
            trace, compile or export the model.
        fold: fold eval-mode BatchNorm into the preceding conv / linear layer.
        channels_last: weights and 4-D inputs in ``torch.channels_last``.
        jit: ``torch.jit.trace`` then ``torch.jit.freeze``.
        jit_optimize: ``jit`` plus ``torch.jit.optimize_for_inference`` (oneDNN layouts kept
            between ops, conv + add / ReLU fusions); implies ``jit``.
        compile: ``torch.compile`` (inductor) with weight freezing, compiled here.
        compile_mode: ``torch.compile`` mode, e.g. ``"max-autotune-no-cudagraphs"``.
        ort: export to ONNX and run in ONNX Runtime fp32 (:class:`OrtModule`).
        direct: run eligible 3x3 convolutions on the direct kernel, fused with a following
            residual add / ReLU (:func:`~torchshrink.deploy.direct_conv.use_direct_convs`).
        split: run each slice of the batch on its own thread
            (:class:`~torchshrink.deploy.batch_split.BatchSplit`).
        threads: intra-op threads the variant runs with (with ``split``: the slice count).

    Raises:
        ValueError: more than one of ``jit``, ``compile``, ``ort`` and ``direct``, or ``ort``
            or ``direct`` with ``channels_last``.
        Exception: whatever tracing, compiling or exporting raises; callers record it.

    Example:
        >>> import torch
        >>> v = build_variant(torch.nn.Linear(3, 2), torch.zeros(1, 3), jit=True)
        >>> v(torch.zeros(4, 3)).shape
        torch.Size([4, 2])
    """
    jit = jit or jit_optimize
    if jit + compile + ort + direct > 1:
        raise ValueError("build_variant: choose one of jit, compile, ort and direct")
    if (ort or direct) and channels_last:
        raise ValueError(
            "build_variant: ort and direct take NCHW inputs; channels_last does not apply"
        )
    m = fold_bn(model) if fold else copy.deepcopy(model).eval()
    if channels_last:
        m = m.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        example_inputs = _inputs_to_channels_last(example_inputs)
    inner: nn.Module = m
    if jit:
        with torch.inference_mode(False), torch.no_grad():
            traced = _trace(m, example_inputs)
            inner = torch.jit.freeze(traced.eval())
            if jit_optimize:
                inner = torch.jit.optimize_for_inference(inner)  # type: ignore[arg-type]
    elif compile:
        inner = _compiled(m, example_inputs, compile_mode)
    elif ort:
        inner = OrtModule.export(m, example_inputs)
    elif direct:
        from torchshrink.deploy.direct_conv import use_direct_convs

        inner = use_direct_convs(m)
    if split:
        inner = BatchSplit(inner)
    return InferenceModule(inner, channels_last=channels_last, threads=threads)


class OrtModule(nn.Module):
    """An ONNX file run by ONNX Runtime (CPU, fp32), callable like the model it came from.

    ONNX Runtime's level-3 graph optimisation converts convolutions to MLAS's blocked NCHWc
    layout and fuses Conv + Add + ReLU, so the reorders and element-wise passes between layers
    that eager PyTorch pays for go away. One session is opened per intra-op thread count in
    effect at call time (``torch.get_num_threads()``, set by :class:`InferenceModule`).

    Args:
        path: the ``.onnx`` file.
        keep: an object kept alive with the module (the temporary folder holding ``path``).
        spinning: let ONNX Runtime's idle threads spin (off by default: measured beside other
            candidates, spinning threads slow the next one down, by half for a narrow
            ResNet-56 here, so a spinning candidate would be credited with others' losses).

    Example:
        >>> import torch
        >>> m = OrtModule.export(torch.nn.Linear(3, 2).eval(), torch.zeros(1, 3))
        >>> m(torch.zeros(5, 3)).shape
        torch.Size([5, 2])
    """

    def __init__(self, path: str | Path, *, keep: Any = None, spinning: bool = False) -> None:
        super().__init__()
        self.path = Path(path)
        self._keep = keep
        self.spinning = spinning
        self._sessions: dict[int, OrtSession] = {}
        self._lock = threading.Lock()

    @classmethod
    def export(cls, model: nn.Module, example_inputs: Inputs) -> OrtModule:
        """Export ``model`` (dynamic batch) to a temporary ONNX file and wrap it."""
        if isinstance(example_inputs, Mapping):
            raise ValueError("OrtModule: keyword (dict) inputs are not supported")
        args = (
            tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else example_inputs
        )
        folder = tempfile.TemporaryDirectory(prefix="torchshrink-ortvar-")
        path = Path(folder.name) / "model.onnx"
        export_onnx(model, path, example_inputs=args)
        return cls(path, keep=folder)

    def forward(self, *inputs: torch.Tensor) -> Any:
        n = torch.get_num_threads()
        with self._lock:  # BatchSplit workers may open their session at the same time
            if n not in self._sessions:
                # No spinning: idle ORT threads would slow whatever is timed next to them.
                self._sessions[n] = OrtSession(self.path, threads=n, spinning=self.spinning)
            session = self._sessions[n]
        arrays = [x.detach().contiguous().numpy() for x in inputs]
        outs = [torch.from_numpy(o) for o in session.run_numpy(*arrays)]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def __deepcopy__(self, memo: dict[int, Any]) -> OrtModule:
        # Sessions and lock are not copyable.
        return OrtModule(self.path, keep=self._keep, spinning=self.spinning)


def _compiled(model: nn.Module, example_inputs: Inputs, mode: str | None) -> nn.Module:
    import torch._inductor.config as inductor_config

    compiled = torch.compile(model, backend="inductor", mode=mode)
    # Compile now, with freezing on (weights as constants, so BN-folded convs get prepacked
    # oneDNN weights); a later recompilation, e.g. for a new batch size, runs without it.
    with inductor_config.patch(freezing=True), torch.inference_mode():
        call_model(compiled, example_inputs)  # type: ignore[arg-type]
    return compiled  # type: ignore[return-value]


def has_4d_input(example_inputs: Inputs) -> bool:
    """Whether any floating-point input tensor is 4-D (the only case channels_last changes).

    Example:
        >>> import torch
        >>> has_4d_input(torch.zeros(1, 3, 4, 4)), has_4d_input(torch.zeros(2, 3))
        (True, False)
    """
    return any(_is_4d_float(t) for t in _flat(example_inputs))


def _trace(model: nn.Module, example_inputs: Inputs) -> torch.jit.ScriptModule:
    # strict=False lets models that return dicts or lists be traced.
    if isinstance(example_inputs, Mapping):
        return torch.jit.trace(model, example_kwarg_inputs=dict(example_inputs), strict=False)
    if isinstance(example_inputs, list):
        example_inputs = tuple(example_inputs)
    return torch.jit.trace(model, example_inputs, strict=False)  # type: ignore[arg-type]


def _is_4d_float(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.dim() == 4 and x.is_floating_point()


def _to_channels_last(x: Any) -> Any:
    return x.contiguous(memory_format=torch.channels_last) if _is_4d_float(x) else x


def _inputs_to_channels_last(inputs: Inputs) -> Inputs:
    if isinstance(inputs, Mapping):
        return {k: _to_channels_last(v) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return tuple(_to_channels_last(v) for v in inputs)
    return _to_channels_last(inputs)


def _flat(inputs: Inputs) -> list[Any]:
    if isinstance(inputs, Mapping):
        return list(inputs.values())
    if isinstance(inputs, (tuple, list)):
        return list(inputs)
    return [inputs]


def run(model: nn.Module, inputs: Inputs) -> Any:
    """Call ``model`` on ``inputs`` (tensor, tuple or dict convention) without gradients.

    Example:
        >>> import torch
        >>> run(torch.nn.Identity(), {"input": torch.ones(1)})
        tensor([1.])
    """
    with torch.inference_mode():
        return call_model(model, inputs)
