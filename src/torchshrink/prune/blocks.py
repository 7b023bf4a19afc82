"""Find the residual blocks that depth pruning may replace by ``nn.Identity``.

The rule, checked on one run of the model on its example inputs: a submodule ``M`` called with
one tensor ``x`` is **removable** when

1. it returns one tensor ``y`` of the same shape as ``x``;
2. following ``y`` backwards through ops run *directly in M's own forward* (not in its
   children), ``y`` is ``x`` plus other terms: a chain of additions (``+``, ``+=``,
   ``torch.add``) reaches ``x`` itself, optionally followed by one final ReLU. Examples:
   ``relu(f(x) + x)`` (CIFAR ResNet basic block with an identity shortcut),
   ``x = x + attn(norm(x)); x = x + mlp(norm(x))`` (pre-norm transformer block);
3. it has parameters.

Replacing such a block by ``Identity`` computes ``x`` instead of ``act(x + f(x))``: exact when
``f(x) = 0`` and the input is already non-negative (it comes out of a previous ReLU block), which
is why removing the blocks with the weakest residual branch costs little. Blocks whose
shortcut transforms ``x`` (a strided / projection shortcut), post-norm blocks (``norm(x + f(x))``)
and containers of several blocks (their additions run in the children) are not removable.

Example:
    >>> from torchshrink.core.zoo import create_zoo_model
    >>> m = create_zoo_model("resnet20", input_size=8)
    >>> residual_blocks(m, m.example_inputs(1))[:3]
    ['layer1.0', 'layer1.1', 'layer1.2']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from torchshrink.core.forward import Inputs, checked_forward, eval_mode

_ADD = {"add", "__add__", "__radd__", "__iadd__", "add_"}
_ACT = {"relu", "relu_"}


@dataclass(frozen=True)
class _Op:
    name: str
    scope: int  # id() of the innermost running module
    out: int
    inputs: tuple[int, ...]


class _Recorder(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[_Op] = []
        self.stack: list[int] = [0]
        self.alive: list[Any] = []  # keeps ids unique during the run

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        name = getattr(func, "__name__", "")
        if isinstance(out, torch.Tensor) and name in _ADD | _ACT:
            ins = tuple(id(a) for a in args if isinstance(a, torch.Tensor))
            self.alive += [out, *args]
            self.ops.append(_Op(name, self.stack[-1], id(out), ins))
        return out


def residual_blocks(model: nn.Module, example_inputs: Inputs) -> list[str]:
    """Qualified names of the removable residual blocks (see the module docs), in run order.

    Example:
        >>> class Block(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.f = nn.Linear(4, 4)
        ...     def forward(self, x):
        ...         return x + self.f(x)
        >>> residual_blocks(nn.Sequential(Block(), nn.Linear(4, 4), Block()), torch.zeros(1, 4))
        ['0', '2']
    """
    rec = _Recorder()
    io: dict[str, tuple[int, int, int]] = {}  # name -> (id x, id y, number of ops before y)
    names = {id(m): n for n, m in model.named_modules() if n}
    handles = []

    def pre(m: nn.Module, args: tuple[Any, ...]) -> None:
        rec.stack.append(id(m))

    def post(m: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        rec.stack.pop()
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if (
            id(m) in names
            and len(tensors) == 1
            and isinstance(out, torch.Tensor)
            and out.shape == tensors[0].shape
            and any(True for _ in m.parameters())
        ):
            rec.alive += [tensors[0], out]
            io[names[id(m)]] = (id(tensors[0]), id(out), len(rec.ops))

    for m in model.modules():
        handles.append(m.register_forward_pre_hook(pre))
        handles.append(m.register_forward_hook(post))
    was_fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused path hides the additions
    try:
        with eval_mode(model), torch.no_grad(), rec:
            checked_forward(model, example_inputs)
    finally:
        torch.backends.mha.set_fastpath_enabled(was_fast)
        for h in handles:
            h.remove()
    modules = dict(model.named_modules())
    acts = {id(m) for m in model.modules() if isinstance(m, nn.ReLU)}
    out = []
    for name, (x, y, n_ops) in io.items():
        if _skip_path(rec.ops[:n_ops], id(modules[name]), x, y, acts):
            out.append(name)
    return out


def _skip_path(ops: list[_Op], scope: int, x: int, y: int, acts: set[int]) -> bool:
    def producer(t: int, before: int) -> int | None:
        for i in range(before - 1, -1, -1):
            if ops[i].out == t:
                return i
        return None

    def reaches(t: int, before: int, depth: int) -> bool:
        if t == x:
            return True
        i = producer(t, before)
        if i is None or depth > 64 or ops[i].scope != scope or ops[i].name not in _ADD:
            return False
        return any(reaches(a, i, depth + 1) for a in ops[i].inputs)

    i = producer(y, len(ops))
    if i is not None and ops[i].name in _ACT and (ops[i].scope == scope or ops[i].scope in acts):
        y, end = ops[i].inputs[0], i
    else:
        end = len(ops)
    j = producer(y, end)
    if j is None or ops[j].scope != scope or ops[j].name not in _ADD:
        return False
    return any(reaches(a, j, 0) for a in ops[j].inputs)
