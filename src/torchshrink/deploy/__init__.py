"""torchshrink.deploy: inference-ready models chosen by measurement, ONNX export and ONNX Runtime.

* :func:`accelerate` (fp32 / bf16 / int8 backends in PyTorch, torchao and ONNX Runtime,
  the fastest within a fidelity bound, every candidate reported);
* :func:`optimize_for_inference` (BatchNorm folding, channels_last, TorchScript freezing,
  thread count, each kept only if measured faster) and :func:`round_keep` (channel rounding
  for fast kernels) are importable from here;
* the ONNX submodules (``onnx_export``, ``ort_session``) import onnx / onnxruntime lazily,
  inside the functions that need them.

Example:
    >>> from torchshrink.deploy import round_keep
    >>> round_keep(33, 16)
    32
    >>> from torchshrink.deploy.onnx_export import export_onnx
    >>> callable(export_onnx)
    True
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "accelerate": "torchshrink.deploy.accelerate",
    "AccelerateConfig": "torchshrink.deploy.accelerate",
    "AccelerateReport": "torchshrink.deploy.accelerate",
    "AccelCandidate": "torchshrink.deploy.accelerate",
    "optimize_for_inference": "torchshrink.deploy.optimize",
    "OptimizeConfig": "torchshrink.deploy.optimize",
    "OptimizeReport": "torchshrink.deploy.optimize_report",
    "CandidateResult": "torchshrink.deploy.optimize_report",
    "BaselineCheck": "torchshrink.deploy.optimize_report",
    "SlowerThanBaselineWarning": "torchshrink.deploy.optimize_report",
    "compare_to_baseline": "torchshrink.deploy.optimize_report",
    "InferenceModule": "torchshrink.deploy.candidates",
    "round_keep": "torchshrink.deploy.rounding",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    # Lazy, so that importing torchshrink.deploy for ONNX export does not load the rest.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'torchshrink.deploy' has no attribute {name!r}")
