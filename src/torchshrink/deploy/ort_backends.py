"""ONNX Runtime backends for :func:`~torchshrink.deploy.accelerate.accelerate`.

* ``ort_fp32``: the TorchScript ONNX export, all of ORT's graph optimizations on;
* ``ort_fused_fp32``: plus ``onnxruntime.transformers`` fusions (attention, LayerNorm with
  residual, bias + GELU, embedding + LayerNorm) where the graph has those patterns;
* ``ort_dynamic_int8``: ``onnxruntime.quantization.quantize_dynamic`` with its defaults
  (per-tensor int8 weights) on the plain export, the baseline a user would pick;
* ``ort_int8``: int8 weights *per output channel* on every weight MatMul of the plain export
  (attention's two activation MatMuls stay float: ORT's dynamic quantizer skips a MatMul
  whose second input is not a weight);
* ``ort_int8_attn``: ``ort_int8`` plus attention's activation MatMuls (Q K^T and P V) in int8
  (``MatMulInteger`` on two dynamically quantized activations);
* ``ort_fused_int8``: ``onnxruntime.transformers`` fusions, then dynamic int8 per-channel
  (``QAttention``, ``SkipLayerNormalization``, ``BiasGelu``, ``QEmbedLayerNormalization``):
  0.95x ORT's default on all-MiniLM-L6-v2 (its float attention is slower than MatMul/Softmax);
* ``ort_int8_mixed``: ``ort_int8`` keeping the most sensitive MatMuls in float until the
  cosine bound is met (each layer's sensitivity is the cosine lost when only it is int8);
* ``ort_int8_smooth``: the model smoothed first (:func:`torchshrink.quantize.smooth.smooth`:
  activation outliers moved into the weights, same fp32 function), then every weight MatMul
  int8 as ``ort_int8``; the migration strength alpha is chosen by measured cosine, and
  per-tensor weights (the faster kernels) are taken when the cosine still meets the bound;
* ``ort_int8_smooth_mixed``: the same, keeping the most sensitive MatMuls in float if needed;
* ``ort_int8_smooth_attn``: ``ort_int8_smooth`` plus attention's activation MatMuls in int8,
  and then only one role of Linears smoothed (e.g. every layer's FFN-in) when that alone keeps
  the bound with the fewest extra ``Mul`` ops; the fused graph cannot be smoothed (the
  smoothing ``Mul`` between LayerNorm and the Q/K/V MatMuls breaks ORT's attention pattern);
* ``ort_int8_smooth_attn_lean``: ``ort_int8_smooth_attn`` with two cuts: attention's
  ``1/sqrt(d)`` folded into the query projection before export (the ``Mul`` over every
  (B, heads, L, L) score tensor goes away; exact up to float rounding), and int8 weights per
  tensor (ORT's faster kernels) on every role of weight MatMuls except the fewest roles that
  must stay per channel for the cosine bound (on all-MiniLM-L6-v2: FFN-in, FFN-out and the
  attention output projection);
* ``ort_int8_smooth_attn_qkv``: the lean path with each layer's Q, K and V Linears merged into
  one (:mod:`torchshrink.quantize.fuse_qkv`): one GEMM three times as wide instead of three;
* ``ort_static_int8``: torchshrink's own static QDQ export (``quantize`` + ``export_onnx``),
  only when calibration data is given.

Dynamic int8 activations in ORT are quantized per tensor, so activations with a few outlier
channels lose the most; per-channel weights and smoothing recover most of it.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 4)).eval()
    >>> from torchshrink.deploy.backends import BuildContext
    >>> import tempfile, pathlib
    >>> ctx = BuildContext(net, torch.randn(2, 8), workdir=pathlib.Path(tempfile.mkdtemp()))
    >>> build("ort_fp32", ctx).run(torch.randn(2, 8)).shape
    torch.Size([2, 4])
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import re
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from torchshrink.core.errors import ConfigError, require
from torchshrink.core.forward import Inputs
from torchshrink.deploy.backends import BuildContext, Built, primary_output
from torchshrink.deploy.ort_session import OrtSession

#: Every backend name :func:`build` knows.
NAMES = (
    "ort_fp32", "ort_fused_fp32", "ort_dynamic_int8", "ort_int8", "ort_int8_attn",
    "ort_fused_int8", "ort_int8_mixed", "ort_int8_smooth", "ort_int8_smooth_mixed",
    "ort_int8_smooth_attn", "ort_int8_smooth_attn_lean", "ort_int8_smooth_attn_qkv",
    "ort_static_int8",
)  # fmt: skip
_SENSITIVITY_SAMPLES = 8  # samples of the example batch used to rank layer sensitivity
_CALIBRATION_CHUNKS = 4  # smoothing calibrates on the example batch in this many chunks
# SmoothQuant migration strengths, tried in order until the cosine meets the bound; on
# all-MiniLM-L6-v2 0.5: 0.9915, 0.65: 0.9979, 0.8: 0.9985, 0.3: 0.889 (worse than none).
_ALPHAS = (0.65, 0.8, 0.5)


class _Positional(nn.Module):
    """Positional inputs in, primary output out: the form the ONNX exporter needs."""

    def __init__(self, model: nn.Module, keys: list[str] | None) -> None:
        super().__init__()
        self.model = model
        self.keys = keys

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        if self.keys is not None:
            return primary_output(self.model(**dict(zip(self.keys, args, strict=True))))
        return primary_output(self.model(*args))


def _arrays(inputs: Inputs) -> tuple[list[str] | None, list[torch.Tensor]]:
    if isinstance(inputs, Mapping):
        return list(inputs), list(inputs.values())
    if isinstance(inputs, (tuple, list)):
        return None, list(inputs)
    return None, [inputs]


def _eager_attention(model: nn.Module) -> None:
    # Transformers' SDPA attention exports as a graph the ORT fusions do not recognise; the
    # "eager" implementation (same numbers) exports as the MatMul / Softmax pattern they fuse.
    for m in model.modules():
        setter = getattr(m, "set_attn_implementation", None)
        if callable(setter):  # not every model offers it: else keep its own attention
            with contextlib.suppress(Exception):
                setter("eager")


def export_plain(ctx: BuildContext) -> Path:
    """Export the float model (once per workdir) with every integer dimension dynamic."""
    assert ctx.workdir is not None
    path = ctx.workdir / "fp32.onnx"
    if path.is_file():
        return path
    keys, tensors = _arrays(ctx.inputs)
    model = copy.deepcopy(ctx.model).eval()
    _eager_attention(model)
    names = keys or [f"input_{i}" for i in range(len(tensors))]
    # Token-id style inputs: batch and sequence length vary; float inputs: only the batch.
    axes: dict[str, dict[int, str]] = {
        n: {d: f"{n}_{d}" for d in range(t.dim())} if not t.is_floating_point() else {0: "batch"}
        for n, t in zip(names, tensors, strict=True)
    }
    axes["output"] = {0: "batch"}
    # nn.TransformerEncoderLayer's fused fast path (taken without grad) has no ONNX form.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Positional(model, keys), tuple(tensors), str(path), dynamo=False,
                opset_version=17, input_names=names, output_names=["output"], dynamic_axes=axes,
            )  # fmt: skip
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return path


def _fused(ctx: BuildContext) -> Path:
    assert ctx.workdir is not None
    path = ctx.workdir / "fused.onnx"
    if not path.is_file():
        require("onnxruntime", "onnx")
        from onnxruntime.transformers.optimizer import optimize_model

        # opt_level=0: only the Python fusions; the session applies ORT's own passes later.
        heads, hidden = _heads_hidden(ctx.model)
        with _quiet():
            optimized = optimize_model(
                str(export_plain(ctx)), model_type="bert", num_heads=heads, hidden_size=hidden,
                opt_level=0,
            )  # fmt: skip
        optimized.save_model_to_file(str(path))
    return path


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # onnxruntime's quantizer and fusions log advice at WARNING on the root logger per call.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _heads_hidden(model: nn.Module) -> tuple[int, int]:
    # The attention fusion needs both; its own detection from the graph fails on HF BERT.
    for m in model.modules():
        cfg = getattr(m, "config", None)
        heads, hidden = (
            getattr(cfg, "num_attention_heads", None),
            getattr(cfg, "hidden_size", None),
        )
        if isinstance(heads, int) and isinstance(hidden, int):
            return heads, hidden
        if isinstance(m, nn.MultiheadAttention):
            return m.num_heads, m.embed_dim
    return 0, 0  # let the optimizer try to detect them


def _quantize(
    src: Path,
    dst: Path,
    *,
    exclude: list[str] | None = None,
    tuned: bool,
    per_channel: bool = True,
    activations: bool = False,
    op_types: tuple[str, ...] | None = ("MatMul",),
) -> Path:
    onnx: Any = require("onnx", "onnx")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    options: dict[str, Any] = {}
    kwargs: dict[str, Any] = {}
    if tuned:
        # Fused contrib ops defeat shape inference; their outputs are float.
        options = {"DefaultTensorType": onnx.TensorProto.FLOAT}
        kwargs = {"per_channel": per_channel}
        if op_types is not None:  # None: every op type ORT can quantize (QAttention, ...)
            kwargs["op_types_to_quantize"] = list(op_types)
        if activations:
            # By default ORT's dynamic quantizer leaves MatMuls of two activations in float.
            options["MatMulConstBOnly"] = False
    with _quiet():
        quantize_dynamic(
            str(src), str(dst), weight_type=QuantType.QInt8, nodes_to_exclude=exclude or [],
            extra_options=options, **kwargs,
        )  # fmt: skip
    return dst


def weight_matmuls(path: Path) -> list[str]:
    """Names of the MatMul nodes whose second input is a weight (an initializer)."""
    onnx: Any = require("onnx", "onnx")
    graph = onnx.load(str(path)).graph
    inits = {i.name for i in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "MatMul" and n.input[1] in inits]


class _Session:
    def __init__(self, path: Path, ctx: BuildContext) -> None:
        # Idle intra-op threads spin after each run and take the cores from the candidate
        # timed next (5-30% slower on 2 cores): every session here, baselines included,
        # yields its cores when idle.
        self.session = OrtSession(path, threads=ctx.threads, spinning=False)

    def __call__(self, inputs: Inputs) -> torch.Tensor:
        arrays = [np.ascontiguousarray(t.detach().cpu().numpy()) for t in _arrays(inputs)[1]]
        return torch.from_numpy(self.session.run_numpy(*arrays)[0]).float()

    def built(self, note: str = "") -> Built:
        ops = self.session.op_report().ops.items()
        from torchshrink.deploy.ort_session import FLOAT_COMPUTE_OPS, INT8_COMPUTE_OPS

        low = {k: v for k, v in ops if k in INT8_COMPUTE_OPS | {"DynamicQuantizeLinear"}}
        flt = {k: v for k, v in ops if k in FLOAT_COMPUTE_OPS}
        return Built(self, low, flt, note)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten(1).double(), b.flatten(1).double()  # (B, F)
    return float(torch.nn.functional.cosine_similarity(a, b, dim=1).mean())


def _mixed(ctx: BuildContext, *, base: Path | None = None, note: str = "") -> Built:
    assert ctx.workdir is not None and ctx.reference is not None
    base = base or export_plain(ctx)  # unfused: int8 attention MatMuls beat ORT's fp32 Attention
    full = _Session(_quantize(base, base.with_name("int8.onnx"), tuned=True), ctx)
    if _cosine(full(ctx.inputs), ctx.reference) >= ctx.fidelity:
        return full.built(f"{note}every weight MatMul in int8")
    layers = weight_matmuls(base)
    small = _slice(ctx.inputs, 0, _SENSITIVITY_SAMPLES)
    ref = ctx.reference[:_SENSITIVITY_SAMPLES]
    loss = {}
    for i, name in enumerate(layers):
        others = [n for n in layers if n != name]
        one = ctx.workdir / f"only_{i}.onnx"
        loss[name] = 1.0 - _cosine(
            _Session(_quantize(base, one, exclude=others, tuned=True), ctx)(small), ref
        )
        one.unlink()
    ranked = sorted(layers, key=lambda n: -loss[n])
    # Keep 1, 2, 4, ... of the most sensitive layers in float until the bound holds.
    k = 1
    while k < len(ranked):
        keep = ranked[:k]
        sess = _Session(
            _quantize(base, ctx.workdir / f"mixed_{k}.onnx", exclude=keep, tuned=True), ctx
        )
        if _cosine(sess(ctx.inputs), ctx.reference) >= ctx.fidelity:
            return sess.built(f"{note}kept in float: {', '.join(keep)}")
        k *= 2
    raise ConfigError(
        f"ort_int8_mixed: no mix of int8 MatMuls reaches cosine {ctx.fidelity} "
        f"(tried keeping up to {k // 2} of {len(ranked)} in float)"
    )


def _calibration(ctx: BuildContext) -> list[Inputs]:
    # Without calibration data the example batch, in chunks, calibrates the smoothing.
    if ctx.calibration:
        return list(ctx.calibration)
    _, tensors = _arrays(ctx.inputs)
    n = tensors[0].shape[0] if tensors and tensors[0].dim() else 1
    step = max(1, -(-n // _CALIBRATION_CHUNKS))
    return [_slice(ctx.inputs, i, i + step) for i in range(0, n, step)]


def _slice(inputs: Inputs, start: int, stop: int) -> Inputs:
    if isinstance(inputs, Mapping):
        return {k: v[start:stop] for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return tuple(v[start:stop] for v in inputs)
    return inputs[start:stop]


def _smoothed(
    ctx: BuildContext, *, mixed: bool, activations: bool = False, lean: bool = False
) -> Built:
    """SmoothQuant-smoothed model, every weight MatMul int8; alpha chosen by measured cosine.

    ``activations``: attention's activation MatMuls in int8 too. ``lean``: attention's scale
    folded into the query, per-tensor weights wherever the bound allows (:func:`_per_tensor_roles`).
    """
    if lean:
        from torchshrink.quantize.smooth import fold_attention_scale

        ctx = dataclasses.replace(ctx, model=fold_attention_scale(ctx.model))
    from torchshrink.quantize.smooth import SmoothConfig, collect_stats, smooth

    assert ctx.workdir is not None and ctx.reference is not None
    calibration = _calibration(ctx)
    stats = collect_stats(ctx.model, calibration)
    tried: list[tuple[float, float, BuildContext, Path, _Session]] = []
    for alpha in _ALPHAS:
        model, _ = smooth(ctx.model, calibration, config=SmoothConfig(alpha=alpha), stats=stats)
        sub = ctx.workdir / f"smooth_{alpha:g}"
        sub.mkdir(exist_ok=True)
        sctx = dataclasses.replace(ctx, model=model, workdir=sub)
        base = export_plain(sctx)
        int8 = _quantize(base, sub / "int8.onnx", tuned=True, activations=activations)
        sess = _Session(int8, ctx)
        tried.append((_cosine(sess(ctx.inputs), ctx.reference), alpha, sctx, base, sess))
        if tried[-1][0] >= ctx.fidelity:
            break  # the graph and so the speed is the same for every alpha
    cos, alpha, sctx, base, sess = max(tried, key=lambda t: t[0])
    note = (
        f"alpha {alpha:g} (cosine by alpha: "
        + ", ".join(f"{a:g}: {c:.4f}" for c, a, *_ in tried)
        + "); "
    )
    if cos < ctx.fidelity:
        if mixed:
            return _mixed(sctx, base=base, note=note)
        return sess.built(f"{note}per-channel weights, below the bound")
    if activations:
        fewer = _fewest_muls(ctx, calibration, stats, alpha)
        if fewer is not None and lean:
            return _per_tensor_roles(ctx, fewer[2], fewer[1], note=f"{note}{fewer[0]}; ")
        if fewer is not None:
            return fewer[1].built(f"{note}{fewer[0]}")
        if lean:
            return _per_tensor_roles(ctx, base, sess, note=note)
    # Per-tensor weights (as ORT's default makes them; 4-8% faster) when the cosine holds.
    flat = _Session(_quantize(base, base.with_name("int8_pt.onnx"), tuned=True,
                              per_channel=False, activations=activations), ctx)  # fmt: skip
    flat_cos = _cosine(flat(ctx.inputs), ctx.reference)
    if flat_cos >= ctx.fidelity:
        return flat.built(f"{note}per-tensor weights (cosine {flat_cos:.4f})")
    return sess.built(f"{note}per-channel weights (per-tensor: cosine {flat_cos:.4f})")


def _fewest_muls(
    ctx: BuildContext, calibration: list[Inputs], stats: Any, alpha: float
) -> tuple[str, _Session, Path] | None:
    """Smooth one role of Linear groups only, the one that keeps the bound with fewest ``Mul``.

    An unfolded group costs one ``Mul`` per forward (~5% of ORT int8 MiniLM for three per
    layer) and not every group's smoothing helps. A role is a group's first Linear name with
    its layer numbers removed (``layer.#.query``).
    """
    from torchshrink.quantize.smooth import SmoothConfig, smooth

    assert ctx.workdir is not None and ctx.reference is not None
    roles: dict[str, list[tuple[str, ...]]] = {}
    for g in stats.groups:
        roles.setdefault(re.sub(r"\d+", "#", g[0]), []).append(g)
    found: list[tuple[int, float, str, _Session, Path]] = []
    for i, (role, groups) in enumerate(roles.items()):
        sub_stats = dataclasses.replace(stats, groups=tuple(groups))
        model, rep = smooth(
            ctx.model, calibration, config=SmoothConfig(alpha=alpha), stats=sub_stats
        )
        muls = sum(1 for g in rep.groups if g.folded_into is None)
        sub = ctx.workdir / f"smooth_{alpha:g}_role{i}"
        sub.mkdir(exist_ok=True)
        base = export_plain(dataclasses.replace(ctx, model=model, workdir=sub))
        sess = _Session(_quantize(base, sub / "int8.onnx", tuned=True, activations=True), ctx)
        cos = _cosine(sess(ctx.inputs), ctx.reference)
        if cos >= ctx.fidelity:
            found.append((muls, -cos, role, sess, base))
    if not found:
        return None
    muls, neg_cos, role, sess, base = min(found, key=lambda t: t[:2])
    return f"only {role} smoothed ({muls} Mul, cosine {-neg_cos:.4f})", sess, base


def _per_tensor_roles(ctx: BuildContext, base: Path, fallback: _Session, *, note: str) -> Built:
    """Per-tensor int8 weights (ORT's faster kernels) on all but the fewest roles of MatMuls.

    Roles (node names without layer numbers) are ranked by the cosine each recovers alone
    as per-channel, then made per-channel in that order until the bound holds. Two quantizer
    passes: per-channel roles and attention's activation MatMuls, then the rest per tensor.
    """
    reference = ctx.reference
    assert reference is not None
    layers = weight_matmuls(base)
    roles: dict[str, list[str]] = {}
    for n in layers:
        roles.setdefault(re.sub(r"\d+", "#", n), []).append(n)

    def mixed(per_channel: list[str], tag: str) -> tuple[float, _Session]:
        rest = [n for n in layers if n not in per_channel]
        first = _quantize(base, base.with_name(f"lean_{tag}_a.onnx"), exclude=rest, tuned=True,
                          activations=True)  # fmt: skip
        path = _quantize(first, base.with_name(f"lean_{tag}.onnx"), tuned=True, per_channel=False)
        sess = _Session(path, ctx)
        return _cosine(sess(ctx.inputs), reference), sess

    alone = {r: mixed(ns, f"r{i}")[0] for i, (r, ns) in enumerate(roles.items())}
    ranked = sorted(roles, key=lambda r: -alone[r])
    for k in range(len(ranked)):  # k = len(ranked), all per-channel, is the fallback
        chosen = ranked[:k]
        cos, sess = mixed([n for r in chosen for n in roles[r]], f"k{k}")
        if cos >= ctx.fidelity:
            kept = ", ".join(chosen) or "none"
            return sess.built(
                f"{note}attention scale folded into the query; per-channel weights only for "
                f"{kept}, the rest per-tensor (cosine {cos:.4f})"
            )
    return fallback.built(f"{note}attention scale folded into the query; every role per-channel")


def _static(ctx: BuildContext) -> Built:
    from torchshrink.deploy.onnx_export import export_onnx
    from torchshrink.quantize.config import QuantConfig
    from torchshrink.quantize.ptq import quantize

    assert ctx.workdir is not None
    if not ctx.calibration:
        raise ConfigError("ort_static_int8 needs calibration data: pass calibration=[batches]")
    q = quantize(ctx.model, QuantConfig.preset("w8a8"), calibration=list(ctx.calibration))
    keys, tensors = _arrays(ctx.inputs)
    path = ctx.workdir / "static_int8.onnx"
    names = keys or [f"input_{i}" for i in range(len(tensors))]
    export_onnx(_Positional(q, keys), path, example_inputs=tuple(tensors), input_names=names)
    return _Session(path, ctx).built()


# Built backends by (workdir, model, threads, name), while the workdir exists: a batch-split
# twin (:mod:`torchshrink.deploy.ort_split`) reuses its base's files instead of redoing them.
_BUILT: dict[tuple[str, int, int, str], Built] = {}


def build(name: str, ctx: BuildContext) -> Built:
    """Build the ONNX Runtime backend ``name`` (one of the ``ort_*`` names)."""
    if ctx.workdir is None:
        raise ConfigError(f"{name}: ONNX Runtime backends need a workdir")
    require("onnxruntime", "onnx")
    for key in [k for k in _BUILT if not Path(k[0]).is_dir()]:
        del _BUILT[key]
    key = (str(ctx.workdir), id(ctx.model), ctx.threads, name)
    if key not in _BUILT:
        _BUILT[key] = _build(name, ctx)
    return _BUILT[key]


def _build(name: str, ctx: BuildContext) -> Built:
    assert ctx.workdir is not None
    if name == "ort_fp32":
        return _Session(export_plain(ctx), ctx).built()
    if name == "ort_fused_fp32":
        return _Session(_fused(ctx), ctx).built()
    if name == "ort_dynamic_int8":
        path = _quantize(export_plain(ctx), ctx.workdir / "dynamic_int8.onnx", tuned=False)
        return _Session(path, ctx).built()
    if name == "ort_int8":
        path = _quantize(export_plain(ctx), ctx.workdir / "int8.onnx", tuned=True)
        return _Session(path, ctx).built()
    if name == "ort_int8_attn":
        path = _quantize(export_plain(ctx), ctx.workdir / "int8_attn.onnx", tuned=True,
                         activations=True)  # fmt: skip
        return _Session(path, ctx).built()
    if name == "ort_fused_int8":
        path = _quantize(_fused(ctx), ctx.workdir / "fused_int8.onnx", tuned=True, op_types=None)
        return _Session(path, ctx).built()
    if name == "ort_int8_mixed":
        return _mixed(ctx)
    if name in ("ort_int8_smooth", "ort_int8_smooth_mixed"):
        return _smoothed(ctx, mixed=name.endswith("mixed"))
    if name == "ort_int8_smooth_attn":
        return _smoothed(ctx, mixed=False, activations=True)
    if name in ("ort_int8_smooth_attn_lean", "ort_int8_smooth_attn_qkv"):
        if name.endswith("qkv"):  # merged before smoothing: the same scales as Q, K, V apart
            from torchshrink.quantize.fuse_qkv import fuse_qkv
            from torchshrink.quantize.smooth import fold_attention_scale

            (sub := ctx.workdir / "qkv").mkdir(exist_ok=True)  # not the lean path's exports
            ctx = dataclasses.replace(
                ctx, model=fuse_qkv(fold_attention_scale(ctx.model)), workdir=sub
            )
        return _smoothed(ctx, mixed=False, activations=True, lean=True)
    if name == "ort_static_int8":
        return _static(ctx)
    raise ConfigError(f"unknown ONNX Runtime backend {name!r}")
