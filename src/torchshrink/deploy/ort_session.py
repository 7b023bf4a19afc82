"""Run an ONNX file in ONNX Runtime and report which ops run in int8 after optimisation.

ONNX Runtime rewrites a QDQ graph when it loads it (``DQ -> Conv -> Q`` becomes
``QLinearConv``, ...). What ran is only visible in the optimised graph, which the session
writes to ``SessionOptions.optimized_model_filepath``; :meth:`OrtSession.op_report` counts its
nodes: integer compute ops versus float compute ops.

Example:
    >>> import torch, tempfile, os
    >>> from torch import nn
    >>> from torchshrink.deploy.onnx_export import export_onnx
    >>> p = os.path.join(tempfile.mkdtemp(), "f.onnx")
    >>> _ = export_onnx(nn.Linear(3, 2), p, example_inputs=torch.randn(1, 3))
    >>> sess = OrtSession(p, threads=1)
    >>> sess.run(torch.randn(4, 3)).shape
    torch.Size([4, 2])
    >>> sess.op_report().int8_compute
    0
"""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from torchshrink.core.errors import ModelFileError, ShapeError, require

# Ops whose arithmetic runs on 8-bit integers (ONNX standard and ORT contrib domain).
INT8_COMPUTE_OPS = frozenset(
    {
        "QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "QGemm",
        "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QLinearAdd", "QLinearMul",
        "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat", "QLinearSigmoid",
        "QLinearLeakyRelu", "QLinearSoftmax", "QAttention", "QEmbedLayerNormalization",
    }
)  # fmt: skip
# Float ops that carry the bulk of the arithmetic (what should have become int8).
FLOAT_COMPUTE_OPS = frozenset(
    {"Conv", "Gemm", "MatMul", "FusedConv", "FusedGemm", "FusedMatMul", "NchwcConv", "Attention"}
)


@dataclass(frozen=True)
class OpReport:
    """Node counts of the optimised graph ONNX Runtime actually runs.

    Attributes:
        ops: count of every op type.
        int8_compute: nodes of :data:`INT8_COMPUTE_OPS`.
        float_compute: nodes of :data:`FLOAT_COMPUTE_OPS`.
    """

    ops: dict[str, int] = field(default_factory=dict)
    int8_compute: int = 0
    float_compute: int = 0

    @property
    def int8_fraction(self) -> float:
        """Share of the compute ops that run in int8 (0 when there are none)."""
        total = self.int8_compute + self.float_compute
        return self.int8_compute / total if total else 0.0


class OrtSession:
    """An ONNX Runtime CPU session with a fixed thread count.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (inter-op is 1; execution is sequential).
        optimized_path: where to write the optimised graph (default: a temporary file).
        spinning: let idle intra-op threads spin (ONNX Runtime's default). Spinning threads
            keep taking the cores for a while after a run, which slows whatever runs next on
            them; sessions timed beside other candidates turn it off.

    Raises:
        ModelFileError: the file is missing or ONNX Runtime cannot load it.

    Example:
        >>> sess = OrtSession("model.onnx", threads=2)  # doctest: +SKIP
        >>> logits = sess.run(torch.randn(64, 1, 28, 28))  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | Path,
        *,
        threads: int = 2,
        optimized_path: str | Path | None = None,
        spinning: bool = True,
    ) -> None:
        ort: Any = require("onnxruntime", "onnx")
        self.path = Path(path)
        if not self.path.is_file():
            raise ModelFileError(f"ONNX file not found: {self.path}")
        if optimized_path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="torchshrink-ort-")
            optimized_path = Path(self._tmp.name) / "optimized.onnx"
        self.optimized_path = Path(optimized_path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.optimized_model_filepath = str(self.optimized_path)
        opts.log_severity_level = 3  # the optimised-model warning is expected, not news
        if not spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(
                str(self.path), opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # ORT raises its own exception types
            raise ModelFileError(f"ONNX Runtime cannot load {self.path}: {exc}") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.threads = threads

    def run_numpy(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Run on numpy arrays; returns every graph output."""
        if len(inputs) != len(self.input_names):
            raise ShapeError(
                f"{self.path.name} takes {len(self.input_names)} input(s) "
                f"{self.input_names}, got {len(inputs)}"
            )
        feeds = dict(zip(self.input_names, inputs, strict=True))
        return list(self.session.run(None, feeds))

    def run(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Run on tensors; returns the first output as a float tensor."""
        arrays = [x.detach().cpu().float().numpy() for x in inputs]
        return torch.from_numpy(self.run_numpy(*arrays)[0])

    def op_report(self) -> OpReport:
        """Count the ops of the optimised graph (written when the session was created)."""
        onnx: Any = require("onnx", "onnx")
        graph = onnx.load(str(self.optimized_path)).graph
        ops = Counter(node.op_type for node in graph.node)
        return OpReport(
            dict(sorted(ops.items())),
            sum(n for op, n in ops.items() if op in INT8_COMPUTE_OPS),
            sum(n for op, n in ops.items() if op in FLOAT_COMPUTE_OPS),
        )

    def as_module(self) -> nn.Module:
        """An ``nn.Module`` whose forward runs this session (for ``measure.evaluate``)."""
        return _OrtModule(self)


class _OrtModule(nn.Module):
    def __init__(self, session: OrtSession) -> None:
        super().__init__()
        self.session = session

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.session.run(*inputs)  # (B, ...) first graph output
