"""Execution backends that :func:`~torchshrink.deploy.accelerate.accelerate` measures.

Each backend turns a float model into a callable that runs the same inputs in another
precision or runtime, and says which of its ops run in low precision and which stayed in float:

* torch: ``fp32`` (the reference), ``bf16`` (weights and float inputs in bfloat16: oneDNN's
  AVX512-BF16 / AMX-BF16 kernels), ``bf16_autocast``, ``torch_dynamic_int8``
  (``torch.ao.quantization.quantize_dynamic`` on ``nn.Linear``), ``torch_static_int8``
  (torch.ao FX static int8 on the x86 engine: a CNN's convs in int8 eagerly; needs calibration
  batches and a model FX can trace), ``torchao_int8`` (torchao's
  int8 dynamic activation, int8 per-channel weights; when torchao imports), and the slow-to-build
  opt-ins ``compile_fp32``, ``compile_bf16``, ``torchao_int8_compiled`` (inductor);
* ONNX Runtime (:mod:`torchshrink.deploy.ort_backends`): ``ort_fp32``, ``ort_fused_fp32``,
  ``ort_dynamic_int8``, ``ort_int8``, ``ort_int8_mixed``, ``ort_int8_smooth`` (smoothed
  first: :mod:`torchshrink.quantize.smooth`), ``ort_int8_smooth_mixed``, ``ort_static_int8``.

Every backend returns the model's *primary output* (its first tensor: a classifier's logits,
a transformer's last hidden state, an encoder's pooled embedding) as float32, so that all of
them can be compared with the fp32 reference. Wrap a model first when another output matters.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 4)).eval()
    >>> ctx = BuildContext(net, torch.randn(2, 8), threads=1)
    >>> built = BACKENDS["torch_dynamic_int8"](ctx)
    >>> built.run(torch.randn(3, 8)).shape, built.low_precision
    (torch.Size([3, 4]), {'DynamicQuantizedLinear': 1})
"""

from __future__ import annotations

import copy
import importlib.util
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchshrink.core.forward import Inputs, call_model

# Module types whose weights hold float values: what should have become low precision.
_FLOAT_COMPUTE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class BuildContext:
    """What a backend builder gets.

    Attributes:
        model: the float model in eval mode (builders copy it; they never change it).
        inputs: example inputs (tensor, tuple or dict convention).
        threads: intra-op threads the candidate runs with.
        workdir: a folder for files (ONNX models); ``None`` where no backend needs one.
        calibration: batches for static quantization, or ``None``.
        reference: the fp32 primary output on ``inputs`` (for backends that search a mix).
        fidelity: the cosine bound such a search aims for.
    """

    model: nn.Module
    inputs: Inputs
    threads: int = 1
    workdir: Path | None = None
    calibration: tuple[Inputs, ...] | None = None
    reference: torch.Tensor | None = None
    fidelity: float = 0.995


@dataclass(frozen=True)
class Built:
    """A ready candidate.

    Attributes:
        run: inputs -> primary output as a float32 tensor.
        low_precision: op or module type -> count, for what runs in int8 / bf16.
        float_ops: op or module type -> count, for compute that stayed in fp32.
        note: anything worth reporting (e.g. the layers a mixed candidate kept in float).
    """

    run: Callable[[Inputs], torch.Tensor]
    low_precision: dict[str, int] = field(default_factory=dict)
    float_ops: dict[str, int] = field(default_factory=dict)
    note: str = ""


def primary_output(out: Any) -> torch.Tensor:
    """The first tensor of a model output (tensor, tuple / list, dict or ``ModelOutput``).

    Example:
        >>> primary_output((torch.ones(2), torch.zeros(1))).tolist()
        [1.0, 1.0]
    """
    if isinstance(out, torch.Tensor):
        return out
    values = out.values() if isinstance(out, Mapping) or hasattr(out, "values") else out
    for v in values:
        if isinstance(v, torch.Tensor):
            return v
        if isinstance(v, (tuple, list, Mapping)):
            return primary_output(v)
    raise TypeError(f"the model output holds no tensor: {type(out).__name__}")


def module_census(model: nn.Module, low: tuple[type, ...]) -> tuple[dict[str, int], dict[str, int]]:
    """Count compute modules by type: those of ``low`` types and plain float ones.

    Example:
        >>> module_census(torch.nn.Sequential(torch.nn.Linear(2, 2)), ())
        ({}, {'Linear': 1})
    """
    lows: Counter[str] = Counter()
    floats: Counter[str] = Counter()
    for m in model.modules():
        if low and isinstance(m, low):
            lows[type(m).__name__] += 1
        elif isinstance(m, _FLOAT_COMPUTE):
            floats[type(m).__name__] += 1
    return dict(sorted(lows.items())), dict(sorted(floats.items()))


def _runner(model: nn.Module, cast: torch.dtype | None = None) -> Callable[[Inputs], torch.Tensor]:
    def run(inputs: Inputs) -> torch.Tensor:
        if cast is not None:
            inputs = _cast_floats(inputs, cast)
        return primary_output(call_model(model, inputs)).float()

    return run


def _cast_floats(inputs: Inputs, dtype: torch.dtype) -> Inputs:
    def one(x: Any) -> Any:
        return x.to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point() else x

    if isinstance(inputs, Mapping):
        return {k: one(v) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return tuple(one(v) for v in inputs)
    return one(inputs)


def _fp32(ctx: BuildContext) -> Built:
    m = copy.deepcopy(ctx.model).eval()
    return Built(_runner(m), {}, module_census(m, ())[1])


def _bf16(ctx: BuildContext) -> Built:
    # Every parameter and float input in bfloat16: matmuls, LayerNorm and softmax all run there.
    m = copy.deepcopy(ctx.model).eval().to(torch.bfloat16)
    lows = module_census(m, _FLOAT_COMPUTE)[0]
    return Built(_runner(m, torch.bfloat16), {f"{k}[bf16]": n for k, n in lows.items()}, {})


def _bf16_autocast(ctx: BuildContext) -> Built:
    m = copy.deepcopy(ctx.model).eval()

    def run(inputs: Inputs) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return primary_output(call_model(m, inputs)).float()

    # autocast runs linear / conv / matmul in bf16 and keeps the rest (norms, softmax) in fp32.
    lows = module_census(m, _FLOAT_COMPUTE)[0]
    return Built(run, {f"{k}[bf16 autocast]": n for k, n in lows.items()}, {})


def _torch_dynamic(ctx: BuildContext) -> Built:
    from torch.ao.nn.quantized import dynamic as nnqd

    m = torch.ao.quantization.quantize_dynamic(
        copy.deepcopy(ctx.model).eval(), {nn.Linear}, dtype=torch.qint8
    )
    lows, floats = module_census(m, (nnqd.Linear,))
    return Built(_runner(m), {"DynamicQuantizedLinear": sum(lows.values())}, floats)


def _torch_static(ctx: BuildContext) -> Built:
    """Static int8 through torch.ao FX graph mode on the x86 engine (a CNN's eager int8 path).

    ``prepare_fx`` with the x86 qconfig mapping (per-channel int8 weights, uint8 activations,
    conv + ReLU and add + ReLU fused), calibration on ``ctx.calibration``, ``convert_fx``: the
    result runs oneDNN / FBGEMM int8 kernels eagerly, no compile step. The census comes from
    one shape-propagated run: ops whose output is a quantized tensor ran in int8.
    """
    import warnings

    from torchshrink.core.errors import ConfigError

    if not ctx.calibration:
        raise ConfigError("torch_static_int8 needs calibration batches (calibration=...)")
    if isinstance(ctx.inputs, Mapping):
        raise ConfigError("torch_static_int8 traces positional inputs only, got a dict")
    if "x86" not in torch.backends.quantized.supported_engines:
        raise ConfigError(
            f"torch_static_int8: this torch has no x86 quantized engine "
            f"(engines: {torch.backends.quantized.supported_engines})"
        )
    example = ctx.inputs if isinstance(ctx.inputs, (tuple, list)) else (ctx.inputs,)
    with warnings.catch_warnings():
        # torch.ao.quantization warns that it is deprecated (torchao's PT2E replaces it) and
        # that reduce_range will go; both still work in this torch
        warnings.simplefilter("ignore")
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        torch.backends.quantized.engine = "x86"
        m = copy.deepcopy(ctx.model).eval()
        prepared = prepare_fx(m, get_default_qconfig_mapping("x86"), tuple(example))
        with torch.no_grad():
            for batch in ctx.calibration:
                call_model(prepared, batch)
        q = convert_fx(prepared)
    lows, floats = fx_int8_census(q, tuple(example))
    return Built(_runner(q), lows, floats, note="torch.ao FX, x86 engine")


def fx_int8_census(
    graph_module: torch.fx.GraphModule, inputs: tuple[Any, ...]
) -> tuple[dict[str, int], dict[str, int]]:
    """Ops of a converted FX model that ran on int8 tensors, and compute ops left in float.

    Quantize / dequantize steps and attribute reads are not counted; an op counts as int8 when
    its output is a quantized tensor in one run on ``inputs``.

    Example:
        >>> gm = torch.fx.symbolic_trace(torch.nn.Sequential(torch.nn.Linear(2, 2)))
        >>> fx_int8_census(gm, (torch.randn(1, 2),))
        ({}, {'Linear': 1})
    """
    from torch.fx.passes.shape_prop import ShapeProp

    with torch.no_grad():
        ShapeProp(graph_module).propagate(*inputs)
    modules = dict(graph_module.named_modules())
    lows: Counter[str] = Counter()
    floats: Counter[str] = Counter()
    for node in graph_module.graph.nodes:
        if node.op not in ("call_module", "call_function", "call_method"):
            continue
        if node.op == "call_module":
            kind = type(modules[str(node.target)]).__name__
        else:
            kind = getattr(node.target, "__name__", str(node.target))
        meta = node.meta.get("tensor_meta")
        if kind in _QDQ or meta is None or not hasattr(meta, "dtype"):
            continue
        target = lows if meta.dtype in _QDTYPES else floats
        target[kind] += 1
    return dict(sorted(lows.items())), dict(sorted(floats.items()))


_QDQ = frozenset({"quantize_per_tensor", "quantize_per_channel", "dequantize", "getattr"})
_QDTYPES = (torch.quint8, torch.qint8, torch.qint32)


def _compiled(dtype: torch.dtype) -> Callable[[BuildContext], Built]:
    def build(ctx: BuildContext) -> Built:
        m = copy.deepcopy(ctx.model).eval().to(dtype)
        lows, floats = module_census(m, _FLOAT_COMPUTE if dtype == torch.bfloat16 else ())
        compiled = torch.compile(m, backend="inductor")
        cast = torch.bfloat16 if dtype == torch.bfloat16 else None
        low = {f"{k}[bf16 inductor]": n for k, n in lows.items()}
        return Built(_runner(compiled, cast), low, floats)  # type: ignore[arg-type]

    return build


def torchao_available() -> bool:
    """Whether torchao can be imported (it is optional: ``pip install torchao``)."""
    return importlib.util.find_spec("torchao") is not None


def _torchao(compile: bool) -> Callable[[BuildContext], Built]:
    def build(ctx: BuildContext) -> Built:
        from torchshrink.core.errors import require

        quantization: Any = require("torchao.quantization", "accel")
        m = copy.deepcopy(ctx.model).eval()
        # Per-token dynamic int8 activations and per-channel int8 weights on every Linear.
        quantization.quantize_(m, quantization.Int8DynamicActivationInt8WeightConfig())
        count = sum(
            1
            for mod in m.modules()
            if isinstance(mod, nn.Linear) and type(mod.weight).__module__.startswith("torchao")
        )
        floats = module_census(m, ())[1]
        floats = {k: n - (count if k == "Linear" else 0) for k, n in floats.items()}
        runner: nn.Module = torch.compile(m, backend="inductor") if compile else m  # type: ignore[assignment]
        low = {"Linear[torchao int8 dyn]": count}
        return Built(_runner(runner), low, {k: n for k, n in floats.items() if n})

    return build


def _ort(name: str) -> Callable[[BuildContext], Built]:
    def build(ctx: BuildContext) -> Built:
        from torchshrink.deploy import ort_backends

        return ort_backends.build(name, ctx)

    return build


#: Every backend by name. Opt-in ones (slow to build) are listed in :data:`OPT_IN`.
BACKENDS: dict[str, Callable[[BuildContext], Built]] = {
    "fp32": _fp32,
    "bf16": _bf16,
    "bf16_autocast": _bf16_autocast,
    "torch_dynamic_int8": _torch_dynamic,
    "torch_static_int8": _torch_static,
    "torchao_int8": _torchao(compile=False),
    "compile_fp32": _compiled(torch.float32),
    "compile_bf16": _compiled(torch.bfloat16),
    "torchao_int8_compiled": _torchao(compile=True),
    **{
        n: _ort(n)
        for n in (
            "ort_fp32",
            "ort_fused_fp32",
            "ort_dynamic_int8",
            "ort_int8",
            "ort_int8_attn",
            "ort_fused_int8",
            "ort_int8_mixed",
            "ort_int8_smooth",
            "ort_int8_smooth_attn",
            "ort_int8_smooth_mixed",
            "ort_static_int8",
        )
    },
}
#: Backends that compile for tens of seconds to minutes, or that only ever lost here (ORT's
#: fused attention in int8 ran at 0.94x ORT's default dynamic int8 on MiniLM): measured only
#: when named.
OPT_IN = frozenset({"compile_fp32", "compile_bf16", "torchao_int8_compiled", "ort_fused_int8"})


def default_candidates(*, calibration: bool) -> list[str]:
    """The candidates measured when none are named (ORT only when onnxruntime imports).

    Example:
        >>> "fp32" in default_candidates(calibration=False)
        True
    """
    names = [n for n in BACKENDS if n not in OPT_IN]
    if not torchao_available():
        names.remove("torchao_int8")
    ort = importlib.util.find_spec("onnxruntime") is not None
    names = [n for n in names if ort or not n.startswith("ort_")]
    if not calibration:
        names = [n for n in names if n not in ("ort_static_int8", "torch_static_int8")]
    return names
