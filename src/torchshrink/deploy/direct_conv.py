"""Run a model's convolutions on the direct kernel, fused and chained per image.

:func:`use_direct_convs` rewrites a copy of the model in three steps:

1. every ``nn.Conv2d`` the kernel of :mod:`torchshrink.deploy.direct_kernel` computes exactly
   (3x3 with padding 1 or 1x1, stride 1 or 2, no dilation, one group, float32) becomes a
   :class:`DirectConv`;
2. when the model traces with ``torch.fx``, ``relu(conv(x))``, ``conv(x) + r`` and
   ``relu(conv(x) + r)`` become one layer each (``nn.Identity`` nodes, which BatchNorm folding
   leaves behind, are dropped first);
3. consecutive such layers become one :class:`DirectChain`, which runs them image by image in
   one call, the activations in the thread's cache. For a CIFAR ResNet that is every layer
   but the pooling and the classifier;
4. global average pooling [+ flatten [+ ``nn.Linear``]] right after a chain with one output
   becomes the chain's :class:`DirectHead`, computed in the same call, per image.

A model that does not trace gets each convolution replaced on its own (a chain of one).
Anything the kernel does not take (another dtype or device, an odd size at stride 2, an
input that needs gradients) runs on ``torch.conv2d``, so
the rewritten model computes the same function for every input.
:func:`~torchshrink.deploy.optimize.optimize_for_inference` tries it as the ``direct``
candidate and keeps it only where it is measured faster and matches the original's output.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(),
    ...                     nn.Conv2d(8, 8, 3, padding=1)).eval()
    >>> fast = use_direct_convs(net)
    >>> x = torch.randn(2, 4, 8, 8)
    >>> bool(torch.allclose(fast(x), net(x), atol=1e-5))
    True
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from torchshrink.deploy import direct_kernel


class DirectConv(nn.Module):
    """A 3x3 (padding 1) or 1x1 convolution, stride 1 or 2, with an optional residual and ReLU.

    ``forward(x, residual=None)`` returns ``[relu](conv(x) [+ residual])`` (on
    ``torch.conv2d``; inside a :class:`DirectChain` it runs on the direct kernel).

    Args:
        conv: the convolution to replace (see :func:`eligible`); its weights are copied.
        relu: apply ReLU to the result.

    Example:
        >>> import torch
        >>> conv = torch.nn.Conv2d(3, 5, 3, padding=1)
        >>> d = DirectConv(conv, relu=True)
        >>> x, r = torch.randn(1, 3, 4, 4), torch.randn(1, 5, 4, 4)
        >>> bool(torch.allclose(d(x, r), torch.relu(conv(x) + r), atol=1e-5))
        True
    """

    weight: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, conv: nn.Conv2d, *, relu: bool = False) -> None:
        super().__init__()
        if not eligible(conv):
            raise ValueError(f"DirectConv: not a convolution the direct kernel runs: {conv}")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.stride = int(conv.stride[0])
        self.padding = int(conv.kernel_size[0]) // 2
        self.relu: bool = relu
        self.register_buffer("weight", conv.weight.detach().clone())
        bias = None if conv.bias is None else conv.bias.detach().clone()
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        y = F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding)
        if residual is not None:
            y = y + residual
        return torch.relu(y) if self.relu else y

    def extra_repr(self) -> str:
        k = 2 * self.padding + 1
        return f"{self.in_channels}, {self.out_channels}, {k}x{k}, stride={self.stride}, relu={self.relu}"


class DirectHead(nn.Module):
    """Global average pooling, optionally flattened, optionally followed by a Linear layer: a
    classifier head computed inside a :class:`DirectChain`'s kernel call, per image, while the
    last feature map is still in cache (on PyTorch when the chain's last layers are not).

    Args:
        flatten: return ``(N, C)`` (or the Linear's ``(N, K)``), not ``(N, C, 1, 1)``.
        linear: the Linear layer after the flattened pooling, or ``None``.

    Example:
        >>> import torch
        >>> head = DirectHead(flatten=True, linear=torch.nn.Linear(8, 3))
        >>> head(torch.randn(2, 8, 4, 4)).shape
        torch.Size([2, 3])
    """

    def __init__(self, *, flatten: bool, linear: nn.Linear | None = None) -> None:
        super().__init__()
        if linear is not None and not flatten:
            raise ValueError("DirectHead: a Linear layer needs the flattened pooling")
        self.flatten = flatten
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.adaptive_avg_pool2d(x, 1)
        if self.flatten:
            y = torch.flatten(y, 1)
        return y if self.linear is None else self.linear(y)

    def kernel_head(self, channels: int) -> direct_kernel.ChainHead | None:
        """The kernel's version for ``channels`` input channels, or ``None`` if it has none."""
        lin = self.linear
        if lin is None:
            return direct_kernel.ChainHead()
        if lin.weight.dtype != torch.float32 or lin.in_features != channels:
            return None  # PyTorch gives the error (or the other dtype's result)
        return direct_kernel.ChainHead(lin.weight, lin.bias)

    def from_kernel(self, y: torch.Tensor) -> torch.Tensor:
        """The kernel's ``(N, C)`` / ``(N, K)`` output in this head's shape."""
        return y if self.flatten else y[:, :, None, None]


class DirectChain(nn.Module):
    """Consecutive :class:`DirectConv` layers run by one call of the direct kernel.

    Values are numbered: ``0 .. n_inputs-1`` are the chain's inputs, ``n_inputs + i`` is the
    output of layer ``i``. ``forward(*inputs)`` returns the tuple of ``outputs`` values.

    Args:
        layers: the layers, in order.
        wiring: per layer, the value it convolves and the value it adds (or ``None``).
        n_inputs: number of chain inputs.
        outputs: the values to return.
        head: a :class:`DirectHead` applied to the one output (``None``: the values as they are).

    Example:
        >>> import torch
        >>> c1, c2 = torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, padding=1)
        >>> chain = DirectChain([DirectConv(c1, relu=True), DirectConv(c2, relu=True)],
        ...                     [(0, None), (1, 1)], n_inputs=1, outputs=[2])
        >>> x = torch.randn(2, 4, 8, 8)
        >>> h = torch.relu(c1(x))
        >>> bool(torch.allclose(chain(x)[0], torch.relu(c2(h) + h), atol=1e-4))
        True
    """

    def __init__(
        self,
        layers: Sequence[DirectConv],
        wiring: Sequence[tuple[int, int | None]],
        *,
        n_inputs: int,
        outputs: Sequence[int],
        head: DirectHead | None = None,
    ) -> None:
        super().__init__()
        if len(layers) != len(wiring) or not layers:
            raise ValueError("DirectChain: give one (src, residual) pair per layer")
        if head is not None and len(outputs) != 1:
            raise ValueError("DirectChain: a head applies to a chain with one output")
        self.head = head
        self.layers = nn.ModuleList(layers)
        self.wiring: list[tuple[int, int | None]] = [(int(s), r) for s, r in wiring]
        self.n_inputs = n_inputs
        self.outputs = list(outputs)
        self._plans: dict[tuple[direct_kernel.Shape, ...], list[_Segment]] = {}

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        values: dict[int, torch.Tensor] = dict(enumerate(inputs))
        convs = self._convs()
        headed = False  # the kernel computed the head
        for seg in self._plan(inputs):
            if seg.kernel is None:  # PyTorch, layer by layer
                for i in seg.layers:
                    s, r = self.wiring[i]
                    layer = convs[i]
                    values[self.n_inputs + i] = layer(values[s], None if r is None else values[r])
            else:
                outs = seg.kernel.run([values[v] for v in seg.inputs])
                values.update(zip(seg.outputs, outs, strict=True))
                headed = headed or seg.headed
        if self.head is not None:
            y = values[self.outputs[0]]
            return (self.head.from_kernel(y) if headed else self.head(y),)
        return tuple(values[v] for v in self.outputs)

    def _plan(self, inputs: Sequence[torch.Tensor]) -> list[_Segment]:
        """Runs of layers the kernel can take for these input shapes, and runs it cannot."""
        everything = [_Segment(list(range(len(self.wiring))))]
        if len(inputs) != self.n_inputs or direct_kernel.kernel_unavailable_reason() is not None:
            return everything
        grad = torch.is_grad_enabled()
        n = inputs[0].shape[0] if inputs and inputs[0].dim() == 4 else -1
        for x in inputs:
            if x.dtype != torch.float32 or x.device.type != "cpu" or x.dim() != 4:
                return everything
            if x.shape[0] != n or n == 0 or (grad and x.requires_grad):
                return everything
        key = tuple((int(x.shape[1]), int(x.shape[2]), int(x.shape[3])) for x in inputs)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plans[key] = self._segments(key)
        return plan

    def _segments(self, shapes: tuple[direct_kernel.Shape, ...]) -> list[_Segment]:
        convs = self._convs()
        shape: dict[int, direct_kernel.Shape] = dict(enumerate(shapes))
        runnable = []
        for i, (layer, (s, r)) in enumerate(zip(convs, self.wiring, strict=True)):
            out, problem = direct_kernel.layer_output(
                shape[s],
                layer.in_channels,
                layer.out_channels,
                layer.stride,
                None if r is None else shape[r],
            )
            shape[self.n_inputs + i] = out
            runnable.append(problem is None)
        segments: list[_Segment] = []
        i = 0
        while i < len(convs):
            j = i
            while j < len(convs) and runnable[j] == runnable[i]:
                j += 1
            layers = list(range(i, j))
            segments.append(
                self._kernel_segment(layers, shape) if runnable[i] else _Segment(layers)
            )
            i = j
        return segments

    def _kernel_segment(self, layers: list[int], shape: dict[int, direct_kernel.Shape]) -> _Segment:
        first, last = layers[0], layers[-1]
        produced = {self.n_inputs + i for i in layers}
        inputs: list[int] = []
        for i in layers:
            for v in self.wiring[i]:
                if v is not None and v not in produced and v not in inputs:
                    inputs.append(v)
        later = {v for i in range(last + 1, len(self.wiring)) for v in self.wiring[i]}
        outputs = [v for v in sorted(produced) if v in later or v in self.outputs]
        # Local numbering for the slot plan: segment inputs first, then its layers' outputs.
        local = {v: k for k, v in enumerate(inputs)}
        local |= {self.n_inputs + i: len(inputs) + k for k, i in enumerate(layers)}
        wiring = [
            (local[s], None if r is None else local[r]) for s, r in (self.wiring[i] for i in layers)
        ]
        slot = _assign_slots(wiring, len(inputs), [local[v] for v in outputs])
        # The head runs in the kernel call when its value is the chain's output and no later
        # layer (on PyTorch) reads it.
        heads: list[direct_kernel.ChainHead | None] = [None] * len(outputs)
        if self.head is not None and self.outputs[0] in outputs and self.outputs[0] not in later:
            heads[outputs.index(self.outputs[0])] = self.head.kernel_head(shape[self.outputs[0]][0])
        convs = self._convs()
        kernel = [
            direct_kernel.ChainLayer(
                src=slot[s],
                res=-1 if r is None else slot[r],
                dst=slot[len(inputs) + k],
                weight=convs[first + k].weight,
                bias=convs[first + k].bias,
                relu=convs[first + k].relu,
                stride=convs[first + k].stride,
            )
            for k, (s, r) in enumerate(wiring)
        ]
        prepared = direct_kernel.prepare_chain(
            kernel,
            [shape[v] for v in inputs],
            inputs=[slot[local[v]] for v in inputs],
            outputs=[slot[local[v]] for v in outputs],
            heads=heads,
        )
        headed = any(h is not None for h in heads)
        return _Segment(layers, kernel=prepared, inputs=inputs, outputs=outputs, headed=headed)

    def _convs(self) -> list[DirectConv]:
        return [m for m in self.layers if isinstance(m, DirectConv)]

    def extra_repr(self) -> str:
        head = "" if self.head is None else ", head"
        return f"layers={len(self.layers)}, inputs={self.n_inputs}, outputs={self.outputs}{head}"


@dataclass
class _Segment:
    """Consecutive layers of a chain: run by the kernel (``kernel`` set) or by PyTorch."""

    layers: list[int]
    kernel: direct_kernel.PreparedChain | None = None
    inputs: list[int] = field(default_factory=list)  # chain values read
    outputs: list[int] = field(default_factory=list)  # chain values written and read later
    headed: bool = False  # the kernel returns the chain head's output for the chain's output


def _assign_slots(
    wiring: Sequence[tuple[int, int | None]], n_inputs: int, outputs: Sequence[int]
) -> dict[int, int]:
    """Value -> slot, reusing the slot of a value after its last use (outputs are kept)."""
    last: dict[int, int] = {}
    for i, (s, r) in enumerate(wiring):
        last[s] = i
        if r is not None:
            last[r] = i
    keep = set(outputs)
    slot: dict[int, int] = {}
    free: list[int] = []
    n_slots = 0
    for v in range(n_inputs):
        slot[v] = n_slots
        n_slots += 1
    for i in range(len(wiring)):
        # Values whose last reader was an earlier layer are dead now; the current layer's
        # inputs stay live while it writes its output (other tiles still read them).
        for v, used in list(last.items()):
            if used < i and v not in keep:
                free.append(slot[v])
                del last[v]
        if free:
            slot[n_inputs + i] = free.pop()
        else:
            slot[n_inputs + i] = n_slots
            n_slots += 1
        if n_inputs + i not in last and n_inputs + i not in keep:
            free.append(slot[n_inputs + i])  # never read: its slot is free again
    return slot


def eligible(module: nn.Module) -> bool:
    """Whether ``module`` is a plain float32 ``nn.Conv2d`` the direct kernel computes exactly.

    That is 3x3 with padding 1 or 1x1 without padding, stride 1 or 2 (the same both ways),
    no dilation, one group, zero padding.

    Example:
        >>> import torch
        >>> eligible(torch.nn.Conv2d(4, 4, 3, padding=1)), eligible(torch.nn.Conv2d(4, 4, 1))
        (True, True)
        >>> eligible(torch.nn.Conv2d(4, 4, 3)), eligible(torch.nn.Conv2d(4, 4, 5, padding=2))
        (False, False)
    """
    if type(module) is not nn.Conv2d:
        return False
    k = tuple(module.kernel_size)
    stride = tuple(module.stride)
    pad = module.padding
    if pad == "same":
        pad = (1, 1) if k == (3, 3) and stride == (1, 1) else (-1, -1)
    return (
        ((k == (3, 3) and tuple(pad) == (1, 1)) or (k == (1, 1) and tuple(pad) == (0, 0)))  # type: ignore[arg-type]
        and stride in ((1, 1), (2, 2))
        and tuple(module.dilation) == (1, 1)
        and module.groups == 1
        and module.padding_mode == "zeros"
        and module.weight.dtype == torch.float32
    )


def use_direct_convs(model: nn.Module) -> nn.Module:
    """An inference copy of ``model`` whose eligible 3x3 convolutions run on the direct kernel.

    ``model`` is not changed; the copy's parameters do not require gradients (the kernel has
    no backward).

    Raises:
        RuntimeError: the kernel cannot run on this machine (the reason is given), or the
            model has no eligible convolution.
    """
    reason = direct_kernel.kernel_unavailable_reason()
    if reason is not None:
        raise RuntimeError(f"use_direct_convs: {reason}")
    if not any(eligible(mod) for mod in model.modules()):  # before copying a large model
        raise RuntimeError(
            "use_direct_convs: no float32 Conv2d the kernel runs (3x3 padding 1 or 1x1, stride 1 "
            "or 2, one group) to replace"
        )
    m = copy.deepcopy(model).eval()
    for p in m.parameters():
        # An inference copy: no autograd bookkeeping around the layers left to PyTorch.
        p.requires_grad_(False)
    if eligible(m):  # a bare convolution: tracing it would only see torch.conv2d
        return _Single(m)  # type: ignore[arg-type]
    try:
        gm = fx.symbolic_trace(m)
    except Exception:  # data-dependent control flow etc.: replace the modules only
        return _replace_modules(m)
    _fuse(gm)
    _chain(gm)
    _attach_heads(gm)
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm


class _Single(nn.Module):
    """One convolution as a chain of one, returning a tensor (for models that do not trace)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.chain = DirectChain([DirectConv(conv)], [(0, None)], n_inputs=1, outputs=[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.chain(x)[0]


def _replace_modules(model: nn.Module) -> nn.Module:
    for mod in list(model.modules()):
        for child_name, child in list(mod.named_children()):
            if eligible(child):
                setattr(mod, child_name, _Single(child))  # type: ignore[arg-type]
    return model


def _fuse(gm: fx.GraphModule) -> None:
    """Replace eligible conv nodes by DirectConv nodes, absorbing a following add / ReLU."""
    graph = gm.graph
    modules = dict(gm.named_modules())
    for node in list(graph.nodes):
        if node.op == "call_module" and isinstance(modules.get(node.target), nn.Identity):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
    count = 0
    for node in list(graph.nodes):
        if node.op != "call_module" or not eligible(modules.get(node.target, nn.Identity())):
            continue
        if len(node.args) != 1 or node.kwargs:
            continue
        chain, residual = [node], None
        add = _only_user(node)
        if add is not None and _is_add(add):
            other = add.args[1] if add.args[0] is node else add.args[0]
            if isinstance(other, fx.Node) and other is not node:
                chain, residual = [node, add], other
        relu = _only_user(chain[-1])
        fuse_relu = relu is not None and _is_relu(relu, modules)
        if fuse_relu:
            chain.append(relu)  # type: ignore[arg-type]
        name = f"direct_conv{count}"
        count += 1
        conv = modules[node.target]
        gm.add_submodule(name, DirectConv(conv, relu=fuse_relu))  # type: ignore[arg-type]
        last = chain[-1]
        args = (node.args[0],) if residual is None else (node.args[0], residual)
        with graph.inserting_after(last):
            new = graph.call_module(name, args)
        last.replace_all_uses_with(new)
        for n in reversed(chain):
            graph.erase_node(n)


def _chain(gm: fx.GraphModule) -> None:
    """Group runs of consecutive DirectConv nodes into DirectChain nodes."""
    modules = dict(gm.named_modules())
    runs: list[list[fx.Node]] = [[]]
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(modules.get(node.target), DirectConv):
            runs[-1].append(node)
        elif runs[-1]:
            runs.append([])
    for k, run in enumerate(r for r in runs if r):
        _make_chain(gm, run, modules, f"direct_chain{k}")


def _make_chain(
    gm: fx.GraphModule, run: list[fx.Node], modules: dict[str, nn.Module], name: str
) -> None:
    graph = gm.graph
    inside = set(run)
    inputs: list[fx.Node] = []
    for node in run:
        for a in node.args:
            if isinstance(a, fx.Node) and a not in inside and a not in inputs:
                inputs.append(a)
    index = {a: i for i, a in enumerate(inputs)}
    index |= {node: len(inputs) + i for i, node in enumerate(run)}
    wiring = []
    for node in run:
        src = index[node.args[0]]  # type: ignore[index]
        res = index[node.args[1]] if len(node.args) > 1 else None  # type: ignore[index]
        wiring.append((src, res))
    escaping = [n for n in run if any(u not in inside for u in n.users)]
    layers = [modules[n.target] for n in run]  # type: ignore[index]
    chain = DirectChain(
        layers,  # type: ignore[arg-type]
        wiring,
        n_inputs=len(inputs),
        outputs=[index[n] for n in escaping],
    )
    gm.add_submodule(name, chain)
    last = run[-1]
    with graph.inserting_after(last):
        call = graph.call_module(name, tuple(inputs))
    prev = call
    for k, node in enumerate(escaping):
        with graph.inserting_after(prev):
            item = graph.call_function(operator.getitem, (call, k))
        outside = [u for u in node.users if u not in inside]
        for u in outside:
            u.replace_input_with(node, item)
        prev = item
    for node in reversed(run):
        graph.erase_node(node)


def _attach_heads(gm: fx.GraphModule) -> None:
    """Move ``avgpool(1) [-> flatten(1) [-> Linear]]`` after a one-output chain into the chain."""
    modules = dict(gm.named_modules())
    for node in list(gm.graph.nodes):
        chain = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(chain, DirectChain) or len(chain.outputs) != 1:
            continue
        item = _only_user(node)
        pool = None if item is None else _only_user(item)
        if pool is None or not _is_global_pool(pool, modules):
            continue
        matched, flatten, linear = [pool], False, None
        nxt = _only_user(pool)
        if nxt is not None and _is_flatten(nxt, modules):
            matched.append(nxt)
            flatten = True
            lin = _only_user(nxt)
            if lin is not None and lin.op == "call_module":
                mod = modules.get(lin.target)  # type: ignore[arg-type]
                if type(mod) is nn.Linear and len(lin.args) == 1 and not lin.kwargs:
                    matched.append(lin)
                    linear = mod
        chain.head = DirectHead(flatten=flatten, linear=linear)
        matched[-1].replace_all_uses_with(item)  # type: ignore[arg-type]
        for n in reversed(matched):
            gm.graph.erase_node(n)


def _is_global_pool(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    one = (1, (1, 1), [1, 1])
    if node.op == "call_module":
        mod = modules.get(node.target)  # type: ignore[arg-type]
        return type(mod) is nn.AdaptiveAvgPool2d and mod.output_size in one and len(node.args) == 1
    if node.op == "call_function" and node.target is F.adaptive_avg_pool2d:
        size = node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")
        return size in one and len(node.args) + len(node.kwargs) == 2
    return False


def _is_flatten(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        mod = modules.get(node.target)  # type: ignore[arg-type]
        return type(mod) is nn.Flatten and (mod.start_dim, mod.end_dim) == (1, -1)
    if (node.op == "call_function" and node.target is torch.flatten) or (
        node.op == "call_method" and node.target == "flatten"
    ):
        given = dict(zip(("start_dim", "end_dim"), node.args[1:], strict=False)) | node.kwargs
        # torch.flatten / Tensor.flatten start at dimension 0 unless told otherwise
        dims = (given.get("start_dim", 0), given.get("end_dim", -1))
        return dims == (1, -1) and set(given) <= {"start_dim", "end_dim"}
    return False


def _only_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _is_add(node: fx.Node) -> bool:
    if node.kwargs or len(node.args) != 2:
        return False
    if node.op == "call_function":
        return node.target in (operator.add, torch.add)
    return node.op == "call_method" and node.target == "add"


def _is_relu(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return type(modules.get(node.target)) is nn.ReLU  # type: ignore[arg-type]
    if node.op == "call_function":
        return node.target in (F.relu, torch.relu) and len(node.args) == 1
    return node.op == "call_method" and node.target == "relu" and len(node.args) == 1
