"""Export a float or quantized model to ONNX; quantized layers become QDQ int8 nodes.

Exporter: ``torch.onnx.export(..., dynamo=False)``, the TorchScript exporter. In torch 2.13 the
default is the dynamo exporter, which needs the ``onnxscript`` package (not a dependency, and
not installable offline here); the TorchScript exporter needs nothing beyond torch, keeps the
parameter names as initializer names (``fc1.weight``), and its deprecation warning is silenced.

Route for quantized models (no ``onnxruntime.quantization``, whose calibrator would pick its
own scales): the model is exported with each quant layer replaced by its float layer, then the
graph is rewritten with ``onnx.helper`` using *our* numbers from
:class:`~torchshrink.quantize.qmodules.QuantLayer`:

- weight -> int8 initializer (our codes) + ``DequantizeLinear`` (per channel on axis 0);
- static input -> ``QuantizeLinear`` / ``DequantizeLinear`` with the calibrated scale;
- bias -> int32 initializer at scale ``s_x * s_w`` + ``DequantizeLinear`` (the simulation
  rounds the bias the same way);
- dynamic input -> ``DynamicQuantizeLinear`` + ``DequantizeLinear`` (uint8 only);
- a Q/DQ pair on a quantized layer's *output* when it reaches the next static quantized layer
  only through MaxPool / Relu / Flatten / Reshape: the pair reuses the next layer's input
  scale, so it changes no value (those ops commute with a monotone quantizer that represents
  0 exactly, and quantizing twice at one scale is quantizing once) but lets ONNX Runtime fuse
  ``DQ -> Conv -> Q`` into ``QLinearConv`` and ``DQ -> Gemm -> Q`` into ``QGemm``;
- residual adds: a pair on each module output that ``quantize`` fake-quantizes (conv before
  the ``Add``, ReLU of the shortcut, ReLU after the ``Add``; ``ptq.get_output_qparams``), also
  moved (value-preserving) back through that ReLU onto the ``Add`` output and forward through a
  shortcut's Slice / zero Pad, so that ONNX Runtime forms ``QLinearConv`` and ``QLinearAdd``.

Weights that are not 8-bit (int4, per group) are written as their dequantized float values:
the graph computes what the simulation computes, in float.

Example:
    >>> import torch, tempfile, os
    >>> from torch import nn
    >>> from torchshrink.quantize.ptq import quantize
    >>> from torchshrink.quantize.config import QuantConfig
    >>> net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    >>> q = quantize(net, QuantConfig.preset("w8a8"), calibration=[torch.randn(32, 8)])
    >>> path = os.path.join(tempfile.mkdtemp(), "q.onnx")
    >>> result = export_onnx(q, path, example_inputs=torch.randn(2, 8))
    >>> result.int8_layers
    ('0', '2')
"""

from __future__ import annotations

import copy
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from torchshrink.core.errors import ConfigError, UnsupportedLayerError, require
from torchshrink.quantize.qmodules import QuantLayer
from torchshrink.quantize.residual import OutputQParams, get_output_qparams, strip_output_quant

DEFAULT_OPSET = 17
# Ops through which a Q/DQ pair moves without changing any value (see the module docstring).
_PASS_THROUGH = {"MaxPool", "Relu", "Flatten", "Reshape", "Identity", "Squeeze", "Unsqueeze"}
_WEIGHT_OPS = {"Conv", "Gemm", "MatMul"}
_GRID_OPS = _PASS_THROUGH | {"Slice", "Pad"}  # keep values on their input's int8 grid
_Pair = tuple[np.ndarray, np.ndarray, str]  # (scale, zero point, name stem) of one Q/DQ pair


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: the ONNX file.
        opset: the ONNX opset.
        int8_layers: layers with int8 weights and Q/DQ (static or dynamic) inputs.
        weight_only_layers: layers with quantized weights but float inputs.
        output_qdq: layers whose output is quantized too (fusable into QLinear* ops).
    """

    path: Path
    opset: int
    int8_layers: tuple[str, ...] = ()
    weight_only_layers: tuple[str, ...] = ()
    output_qdq: tuple[str, ...] = ()


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    example_inputs: torch.Tensor | tuple[torch.Tensor, ...],
    opset: int = DEFAULT_OPSET,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
    dynamic_batch: bool = True,
) -> OnnxExport:
    """Export ``model`` (float or returned by ``quantize``) to an ONNX file at ``path``.

    Args:
        model: the model; it is not changed (a copy is exported, in eval mode).
        path: where to write the ``.onnx`` file (parent folders are created).
        example_inputs: one input batch (a tensor, or a tuple for several inputs).
        opset: ONNX opset, 17 or newer.
        input_names: graph input names (default ``input``, or ``input_0``, ``input_1``, ...).
        output_names: graph output names (default ``output``).
        dynamic_batch: make dimension 0 of every input and output dynamic.

    Returns:
        An :class:`OnnxExport` naming which layers were written in int8.

    Raises:
        ConfigError: ``opset`` below 17, or a quantized layer's spec has no ONNX form.
        UnsupportedLayerError: a quantized layer's weight is not found in the exported graph.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "f.onnx")
        >>> export_onnx(nn.Linear(3, 2), p, example_inputs=torch.randn(1, 3)).int8_layers
        ()
    """
    onnx: Any = require("onnx", "onnx")
    if opset < DEFAULT_OPSET:
        raise ConfigError(f"opset must be >= {DEFAULT_OPSET}, got {opset}")
    args = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    in_names = input_names or (
        ["input"] if len(args) == 1 else [f"input_{i}" for i in range(len(args))]
    )
    out_names = output_names or ["output"]
    qlayers = {n: m for n, m in model.named_modules() if isinstance(m, QuantLayer)}
    twin = copy.deepcopy(model).eval()
    strip_output_quant(twin)  # output quantization is written as QDQ below, not traced
    for name, q in qlayers.items():
        _set_submodule(twin, name, copy.deepcopy(q.module))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = {n: {0: "batch"} for n in [*in_names, *out_names]} if dynamic_batch else None
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        torch.onnx.export(
            twin, args, str(path), dynamo=False, opset_version=opset,
            input_names=in_names, output_names=out_names, dynamic_axes=axes,
        )  # fmt: skip
    if not qlayers:
        return OnnxExport(path, opset)
    proto = onnx.load(str(path))
    rewriter = _QdqRewriter(proto.graph, qlayers, get_output_qparams(model))
    rewriter.run()
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return OnnxExport(
        path,
        opset,
        tuple(rewriter.int8_layers),
        tuple(rewriter.weight_only_layers),
        tuple(rewriter.output_qdq),
    )


class _QdqRewriter:
    """Rewrites an exported float graph into QDQ form from our quant layers' numbers."""

    def __init__(
        self, graph: Any, qlayers: dict[str, QuantLayer], outputs: dict[str, OutputQParams]
    ) -> None:
        self.graph = graph
        self.qlayers = qlayers
        self.outputs = outputs
        self.pairs: dict[str, _Pair] = {}  # tensor -> the Q/DQ pair inserted after it
        self.new_inits: list[Any] = []
        self.int8_layers: list[str] = []
        self.weight_only_layers: list[str] = []
        self.output_qdq: list[str] = []
        self._act_cache: dict[tuple[str, float, int], str] = {}
        self._uid = 0

    # -- helpers ----------------------------------------------------------------------------
    def _const(self, array: np.ndarray, stem: str) -> str:
        from onnx import numpy_helper

        self._uid += 1
        name = f"{stem}__{self._uid}"
        self.new_inits.append(numpy_helper.from_array(array, name))
        return name

    def _node(self, out: list[Any], op: str, inputs: list[str], stem: str, **attrs: Any) -> str:
        from onnx import helper

        self._uid += 1
        name = f"{stem}__{op}_{self._uid}"
        out.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def _act_qparams(self, q: QuantLayer) -> tuple[np.ndarray, np.ndarray]:
        spec = q.act_spec
        assert spec is not None
        if spec.bits != 8 or spec.granularity != "per_tensor":
            raise ConfigError(
                f"layer '{q.layer_name}': only 8-bit per-tensor activations export to ONNX "
                f"QDQ, got {spec.bits}-bit {spec.granularity}"
            )
        dtype = np.int8 if spec.signed else np.uint8
        scale = np.array(float(q.input_scale), dtype=np.float32)
        return scale, np.array(int(q.input_zero_point), dtype=dtype)

    def _qdq(self, out: list[Any], tensor: str, q: QuantLayer) -> str:
        scale, zp = self._act_qparams(q)
        pair = self.pairs.get(tensor)
        if pair is not None and (float(pair[0]), int(pair[1])) == (float(scale), int(zp)):
            return tensor  # already the output of a DequantizeLinear with these qparams
        key = (tensor, float(scale), int(zp))
        if key not in self._act_cache:
            s, z = (
                self._const(scale, f"{q.layer_name}.in_scale"),
                self._const(zp, f"{q.layer_name}.in_zp"),
            )
            qt = self._node(out, "QuantizeLinear", [tensor, s, z], q.layer_name)
            self._act_cache[key] = self._node(out, "DequantizeLinear", [qt, s, z], q.layer_name)
        return self._act_cache[key]

    # -- the rewrite --------------------------------------------------------------------------
    def _match(self) -> dict[int, tuple[str, int]]:
        """Node index -> (layer name, weight axis in the graph) for every quant layer."""
        by_weight = {f"{name}.weight": name for name in self.qlayers}
        found: dict[int, tuple[str, int]] = {}
        for i, node in enumerate(self.graph.node):
            if node.op_type in _WEIGHT_OPS and len(node.input) > 1 and node.input[1] in by_weight:
                trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
                # Conv and Gemm(transB=1) store (C_out, ...); MatMul / Gemm(transB=0) store (in, out)
                axis = 0 if node.op_type == "Conv" or trans_b == 1 else 1
                found[i] = (by_weight[node.input[1]], axis)
        missing = set(self.qlayers) - {name for name, _ in found.values()}
        if missing:
            raise UnsupportedLayerError(
                f"quantized layer(s) {sorted(missing)} not found as Conv / Gemm / MatMul weights "
                "in the exported ONNX graph (e.g. a Linear applied to a 3-D input, whose weight "
                "the exporter transposes); keep them in float with QuantConfig.ignore"
            )
        return found

    def _output_targets(self, matched: dict[int, tuple[str, int]]) -> None:
        """Fill :attr:`pairs` for every tensor whose quantization changes no value.

        First the module outputs that the simulation fake-quantizes (residual adds). Then a
        quantized producer and the pass-through ops after it take the input scale of the one
        static quant layer they reach (except the last pass-through op: its output is the
        consumer's input, quantized there already).
        """
        consumers: dict[str, list[tuple[int, Any]]] = {}
        producers: dict[str, Any] = {}
        for i, node in enumerate(self.graph.node):
            producers.update({t: node for t in node.output})
            for t in node.input:
                consumers.setdefault(t, []).append((i, node))
        graph_outputs = {o.name for o in self.graph.output}
        self._module_pairs(matched)
        for t in list(self.pairs):
            # back through Relu (and the like) onto the Add output: Q(relu(Q(a))) = Q(relu(a))
            node = producers.get(t)
            while node is not None and node.op_type in _PASS_THROUGH and node.input:
                src = node.input[0]
                if src in self.pairs or len(consumers.get(src, [])) != 1 or src not in producers:
                    break
                self.pairs[src] = self.pairs[t]
                node = producers[src]
        for node in self.graph.node:
            if node.op_type != "Add":
                continue
            for t in node.input:
                # forward through Slice / zero Pad: values already on the grid stay on it
                src = t
                while src not in self.pairs and src in producers:
                    prev = producers[src]
                    if prev.op_type not in _GRID_OPS or not _zero_pad(prev):
                        break
                    src = prev.input[0]
                if t not in self.pairs and src in self.pairs:
                    self.pairs[t] = self.pairs[src]
        for i, (name, _) in matched.items():
            if self.qlayers[name].mode != "static":
                continue
            t = self.graph.node[i].output[0]
            chain = [i]
            while t not in graph_outputs and len(consumers.get(t, [])) == 1:
                j, nxt = consumers[t][0]
                if nxt.op_type not in _PASS_THROUGH or nxt.input[0] != t:
                    break
                chain.append(j)
                t = nxt.output[0]
            users = consumers.get(t, [])
            layers = [
                self.qlayers[matched[j][0]] for j, n in users if j in matched and n.input[0] == t
            ]
            static = [q for q in layers if q.mode == "static" and q.act_spec is not None]
            if (
                t not in graph_outputs
                and users
                and len(static) == len(users)
                and len({(float(q.input_scale), int(q.input_zero_point)) for q in static}) == 1
            ):
                # Every tensor on the way gets the pair, so that each op between the two
                # layers runs on int8 too; the last one already has the consumer's input pair.
                scale, zp = self._act_qparams(static[0])
                for k in chain[:-1]:
                    out = self.graph.node[k].output[0]
                    self.pairs.setdefault(out, (scale, zp, f"{static[0].layer_name}.in"))
        self.output_qdq = [
            name for i, (name, _) in sorted(matched.items())
            if self.graph.node[i].output[0] in self.pairs
        ]  # fmt: skip

    def _module_pairs(self, matched: dict[int, tuple[str, int]]) -> None:
        """Pairs on the outputs of the modules that ``quantize`` fake-quantizes."""
        by_module = {name: [self.graph.node[i].output[0]] for i, (name, _) in matched.items()}
        for node in self.graph.node:
            # TorchScript names a module's nodes by scope (/layer1/layer1.0/relu2/Relu); every
            # call of a module used twice (one ReLU for a whole block) is fake-quantized
            if node.op_type == "Relu" and node.output:
                name = _scope_module(node.name)
                # a second call of one module is scoped relu_1
                name = name if name in self.outputs else re.sub(r"_\d+$", "", name)
                by_module.setdefault(name, []).append(node.output[0])
        for name, qp in self.outputs.items():
            if name not in by_module:
                msg = f"output quantization of '{name}' not found in the ONNX graph: left float"
                warnings.warn(msg, stacklevel=3)
                continue
            spec = qp.spec
            if spec.bits != 8 or spec.granularity != "per_tensor":
                raise ConfigError(
                    f"module '{name}': only 8-bit per-tensor outputs export to ONNX QDQ, got "
                    f"{spec.bits}-bit {spec.granularity}"
                )
            dtype = np.int8 if spec.signed else np.uint8
            scale = np.array(qp.scale, dtype=np.float32)
            for tensor in by_module[name]:
                self.pairs[tensor] = (scale, np.array(qp.zero_point, dtype=dtype), f"{name}.out")

    def run(self) -> None:
        matched = self._match()
        self._output_targets(matched)
        replaced: set[str] = set()
        nodes: list[Any] = []
        for i, node in enumerate(self.graph.node):
            if i not in matched:
                nodes.append(node)
                self._pairs_after(nodes, node)
                continue
            name, axis = matched[i]
            q = self.qlayers[name]
            replaced.update(node.input[1:3])
            (self.weight_only_layers if q.mode == "weight_only" else self.int8_layers).append(name)
            if q.mode == "dynamic" and _int8_weight(q):
                self._dynamic_integer(nodes, node, q)
                continue
            node.input[1] = self._weight(nodes, q, axis)
            if q.mode == "static":
                node.input[0] = self._qdq(nodes, node.input[0], q)
            if len(node.input) > 2 and node.input[2]:
                node.input[2] = (
                    self._float_bias(q) if not q.bias_is_quantized else self._bias(nodes, q)
                )
            nodes.append(node)
            self._pairs_after(nodes, node)
        nodes = _drop_dead_identities(nodes, {o.name for o in self.graph.output})
        del self.graph.node[:]
        self.graph.node.extend(nodes)
        # The exporter shares identical initializers through Identity nodes; keep what is used.
        used = {t for n in nodes for t in n.input}
        kept = [t for t in self.graph.initializer if t.name not in replaced or t.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend([*kept, *self.new_inits])

    def _weight(self, nodes: list[Any], q: QuantLayer, axis: int) -> str:
        """int8 codes + DequantizeLinear, or the dequantized float weight when not 8-bit."""
        name = q.layer_name
        if not _int8_weight(q):
            w = q.dequantized_weight().numpy().astype(np.float32)
            return self._const(w.T if axis == 1 else w, f"{name}.weight_dq")
        codes = q.weight_q.numpy()  # (C_out, ...) as in torch
        codes = codes.T if axis == 1 else codes
        s = self._const(q.weight_scale.numpy().astype(np.float32), f"{name}.w_scale")
        z = self._const(q.weight_zero_point.numpy().astype(codes.dtype), f"{name}.w_zp")
        wq = self._const(np.ascontiguousarray(codes), f"{name}.weight_q")
        attrs = {"axis": axis} if q.weight_scale.dim() > 0 else {}
        return self._node(nodes, "DequantizeLinear", [wq, s, z], name, **attrs)

    def _float_bias(self, q: QuantLayer) -> str:
        bias = q.effective_bias()
        assert bias is not None
        return self._const(bias.numpy().astype(np.float32), f"{q.layer_name}.bias")

    def _dynamic_integer(self, nodes: list[Any], node: Any, q: QuantLayer) -> None:
        """``DynamicQuantizeLinear -> MatMulInteger / ConvInteger -> Cast -> Mul (-> Add)``."""
        from onnx import TensorProto, helper

        name, spec = q.layer_name, q.act_spec
        if spec is None or spec.bits != 8 or spec.signed or spec.symmetric:
            raise ConfigError(
                f"layer '{name}': dynamic ONNX export needs uint8 asymmetric activations "
                "(what DynamicQuantizeLinear computes)"
            )
        self._uid += 1
        xq, xs, xz = (f"{name}.dyn_{k}__{self._uid}" for k in ("q", "s", "z"))
        nodes.append(helper.make_node("DynamicQuantizeLinear", [node.input[0]], [xq, xs, xz]))
        conv = node.op_type == "Conv"
        codes = q.weight_q.numpy()  # (C_out, ...)
        c_out = codes.shape[0]
        w_scale = q.weight_scale.numpy().astype(np.float32).reshape(-1)  # (C_out,) or (1,)
        if conv:
            wq = self._const(codes, f"{name}.weight_q")
            acc = self._node(nodes, "ConvInteger", [xq, wq, xz], name, **_attrs(node))
            bshape: tuple[int, ...] = (1, -1, 1, 1)  # broadcast over (B, C_out, H, W)
        else:
            wq = self._const(np.ascontiguousarray(codes.T), f"{name}.weight_q")  # (in, out)
            wz = self._const(
                q.weight_zero_point.numpy().astype(codes.dtype).reshape(-1), f"{name}.w_zp"
            )
            acc = self._node(nodes, "MatMulInteger", [xq, wq, xz, wz], name)
            bshape = (-1,)
        acc_f = self._node(nodes, "Cast", [acc], name, to=TensorProto.FLOAT)
        ws = self._const(
            np.broadcast_to(w_scale, (c_out,)).reshape(bshape).copy(), f"{name}.w_scale"
        )
        scale = self._node(nodes, "Mul", [xs, ws], name)
        bias = cast(torch.Tensor | None, q.module.bias)
        if bias is None:
            nodes.append(helper.make_node("Mul", [acc_f, scale], [node.output[0]]))
            return
        y = self._node(nodes, "Mul", [acc_f, scale], name)
        b = self._const(bias.detach().numpy().astype(np.float32).reshape(bshape), f"{name}.bias")
        nodes.append(helper.make_node("Add", [y, b], [node.output[0]]))

    def _bias(self, nodes: list[Any], q: QuantLayer) -> str:
        bias = cast(torch.Tensor | None, q.module.bias)
        assert bias is not None
        s = q.bias_scale().double().expand(bias.shape)  # (C_out,)
        codes = torch.round(bias.detach().double() / s).clamp(-(2**31), 2**31 - 1)
        b = self._const(codes.numpy().astype(np.int32), f"{q.layer_name}.bias_q")
        bs = self._const(s.float().numpy(), f"{q.layer_name}.bias_scale")
        bz = self._const(np.zeros(bias.shape, dtype=np.int32), f"{q.layer_name}.bias_zp")
        return self._node(nodes, "DequantizeLinear", [b, bs, bz], q.layer_name, axis=0)

    def _pairs_after(self, nodes: list[Any], node: Any) -> None:
        """Insert Q/DQ after ``node`` for each of its outputs in :attr:`pairs`."""
        from onnx import helper

        for k, y in enumerate(node.output):
            if y not in self.pairs:
                continue
            scale, zp, stem = self.pairs[y]
            raw = f"{y}__preq"
            node.output[k] = raw
            s, z = self._const(scale, f"{stem}_scale"), self._const(zp, f"{stem}_zp")
            qt = self._node(nodes, "QuantizeLinear", [raw, s, z], stem)
            nodes.append(helper.make_node("DequantizeLinear", [qt, s, z], [y]))


def _scope_module(node_name: str) -> str:
    """``/layer1/layer1.0/relu2/Relu`` -> ``layer1.0.relu2`` (TorchScript scope names)."""
    name = ""
    for part in node_name.split("/")[1:-1]:
        name = part if name and part.startswith(f"{name}.") else f"{name}.{part}".lstrip(".")
    return name


def _zero_pad(node: Any) -> bool:
    """True unless ``node`` is a Pad that may write something other than zeros."""
    if node.op_type != "Pad":
        return True
    mode = next((a.s for a in node.attribute if a.name == "mode"), b"constant")
    return mode == b"constant" and (len(node.input) < 3 or not node.input[2])


def _drop_dead_identities(nodes: list[Any], graph_outputs: set[str]) -> list[Any]:
    """Remove Identity nodes whose output nothing reads (left over from shared weights)."""
    while True:
        used = {t for n in nodes for t in n.input} | graph_outputs
        alive = [n for n in nodes if n.op_type != "Identity" or n.output[0] in used]
        if len(alive) == len(nodes):
            return nodes
        nodes = alive


def _int8_weight(q: QuantLayer) -> bool:
    """Whether the weight has an int8 ONNX form (8-bit, per tensor or per channel)."""
    return q.weight_spec.bits == 8 and q.weight_spec.granularity != "per_group"


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _set_submodule(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)
