"""Capture a model as a graph by running it once on example inputs (a dynamic trace).

Why a dynamic trace, and why this one: ``torch.fx`` symbolic tracing fails on Python control
flow that depends on data (``if x.sum() > 0``); ``torch.export`` also refuses data-dependent
branches and lowers everything to ATen ops, which loses the module structure that pruning
needs (which ``nn.Linear`` owns which weight) and is slow on large models. An autograd walk
sees no integer tensors and no ops under ``no_grad``. Here the model simply runs, eagerly:

* a :class:`~torch.overrides.TorchFunctionMode` records every torch function and tensor method
  called (``torch.cat``, ``x.view``, ``x + y``, ``F.pad``...) with its arguments, so whatever
  Python decided at run time (branches, loops) is what is recorded;
* forward hooks make every module that has a registered op handler (``nn.Conv2d``,
  ``nn.MultiheadAttention``, HF ``BertAttention``...) one node: the ops inside it are not
  recorded, its handler describes it instead. Modules named in ``ignore`` become opaque nodes.

Tensors are identified by object identity during the run (all are kept alive until the end,
so ids are never reused). Parameters and buffers used directly in a ``forward`` (a class
token, a learned scale) appear as ``param`` nodes.

Caveat of any dynamic trace: code that did not run on the example inputs (the branch not
taken) is not in the graph. Give inputs that exercise every branch that reads channels, or
list such modules in ``ignore``.

Example:
    >>> import torch
    >>> from torch import nn
    >>> g = trace(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten()), torch.zeros(1, 1, 5, 5))
    >>> [(n.kind, n.target) for n in g.nodes]
    [('input', 'input.0'), ('module', '0'), ('function', 'flatten')]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from torchshrink.core.forward import Inputs, checked_forward, eval_mode
from torchshrink.graph.handlers import get_op_handler
from torchshrink.graph.nodes import Graph, Node, NodeKind, Value, ValueRef

# Ops that return None but change their first argument in place.
_INPLACE_NONE = {"__setitem__"}


def trace(model: nn.Module, example_inputs: Inputs, *, ignore: Iterable[str] = ()) -> Graph:
    """Run ``model`` once on ``example_inputs`` (eval mode, no grad) and record its graph.

    Args:
        model: any ``nn.Module``; it is not changed (its train/eval flags are restored).
        example_inputs: a tensor, a tuple of positional tensors or a dict of keyword tensors.
        ignore: qualified module names recorded as opaque nodes (not looked into).

    Returns:
        The :class:`Graph` of the run.

    Raises:
        ShapeError: the model does not run on the example inputs (names the failing layer).

    Example:
        >>> import torch
        >>> g = trace(torch.nn.Linear(4, 3), torch.zeros(2, 4))
        >>> len(g.nodes), g.values[g.outputs[0]].shape
        (2, (2, 3))
    """
    recorder = _Recorder(model, set(ignore))
    with eval_mode(model), torch.no_grad(), _no_mha_fastpath():
        recorder.add_inputs(example_inputs)
        handles = recorder.install_hooks()
        try:
            with recorder.mode:
                out = checked_forward(model, example_inputs)
        finally:
            for h in handles:
                h.remove()
    recorder.graph.outputs = [recorder.ref(t).id for t in _flat_tensors(out)]
    return recorder.graph


class _no_mha_fastpath:
    # The fused encoder / MHA fast path skips the submodules' forward calls (so no hook would
    # fire); run the plain path while tracing.
    def __enter__(self) -> None:
        self._was = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)

    def __exit__(self, *exc: object) -> None:
        torch.backends.mha.set_fastpath_enabled(self._was)


class _Mode(TorchFunctionMode):
    def __init__(self, recorder: _Recorder) -> None:
        super().__init__()
        self.recorder = recorder

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not self.recorder.suppress:
            self.recorder.record_function(_func_name(func), args, kwargs, out)
        return out


class _Recorder:
    def __init__(self, model: nn.Module, ignore: set[str]) -> None:
        self.model = model
        self.ignore = ignore
        self.graph = Graph()
        self.ids: dict[int, int] = {}  # id(tensor) -> value id
        self.alive: list[torch.Tensor] = []  # keeps ids unique for the whole run
        self.names = {id(m): n for n, m in model.named_modules(remove_duplicate=False)}
        self.params = {id(t): n for n, t in model.named_parameters(remove_duplicate=False)}
        self.params.update({id(t): n for n, t in model.named_buffers(remove_duplicate=False)})
        self.stack: list[nn.Module] = []
        self.suppress = 0
        self.pending: dict[int, tuple[tuple[Any, ...], dict[str, Any]]] = {}
        self.mode = _Mode(self)
        unknown = self.ignore - set(self.names.values())
        if unknown:
            from torchshrink.core.errors import ConfigError

            raise ConfigError(f"ignore: no module named {sorted(unknown)} in the model")

    # -- values -------------------------------------------------------------------------
    def _node(self, kind: NodeKind, target: str, **kw: Any) -> Node:
        scope = self.stack[-1] if self.stack else self.model
        node = Node(
            len(self.graph.nodes),
            kind,
            target,
            self.names.get(id(scope), ""),
            type(scope).__name__,
            **kw,
        )
        self.graph.nodes.append(node)
        return node

    def _new_value(self, t: torch.Tensor, producer: int) -> int:
        vid = len(self.graph.values)
        self.graph.values.append(Value(vid, tuple(t.shape), t.dtype, producer))
        self.ids[id(t)] = vid
        self.alive.append(t)
        return vid

    def _leaf(self, t: torch.Tensor, kind: NodeKind, target: str) -> ValueRef:
        index = len(self.graph.nodes)
        vid = self._new_value(t, index)
        self._node(kind, target, outputs=(vid,))
        return ValueRef(vid)

    def ref(self, t: torch.Tensor) -> ValueRef:
        """The value of a tensor, creating a param / constant leaf for tensors seen first."""
        if id(t) in self.ids:
            return ValueRef(self.ids[id(t)])
        if id(t) in self.params and t.is_floating_point():
            return self._leaf(t, "param", self.params[id(t)])
        return self._leaf(t, "constant", "constant")

    def add_inputs(self, inputs: Inputs) -> None:
        for i, t in enumerate(_flat_tensors(inputs)):
            self.graph.inputs.append(self._leaf(t, "input", f"input.{i}").id)

    def _refs(self, obj: Any) -> Any:
        if isinstance(obj, torch.Tensor):
            return self.ref(obj)
        if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
            return type(obj)(self._refs(x) for x in obj)
        if isinstance(obj, Mapping):
            return {k: self._refs(v) for k, v in obj.items()}
        return obj

    def _record(
        self, kind: NodeKind, target: str, args: Any, kwargs: Any, outputs: list[torch.Tensor]
    ) -> None:
        rargs, rkwargs = self._refs(tuple(args)), self._refs(dict(kwargs))
        inputs = tuple(r.id for r in _flat_refs((rargs, rkwargs)))
        index = len(self.graph.nodes)
        outs = tuple(self._new_value(t, index) for t in outputs)
        self._node(kind, target, inputs=inputs, outputs=outs, args=rargs, kwargs=rkwargs)

    def record_function(self, name: str, args: Any, kwargs: Any, out: Any) -> None:
        outputs = _flat_tensors(out)
        if name in _INPLACE_NONE and args and isinstance(args[0], torch.Tensor):
            outputs = [args[0]]
        if outputs:
            self._record("function", name, args, kwargs, outputs)

    # -- modules ------------------------------------------------------------------------
    def install_hooks(self) -> list[Any]:
        handles = []
        for m in self.model.modules():
            handles.append(m.register_forward_pre_hook(self._pre, with_kwargs=True))
            handles.append(m.register_forward_hook(self._post, with_kwargs=True, always_call=True))
        return handles

    def _atomic(self, m: nn.Module) -> bool:
        return self.names.get(id(m)) in self.ignore or get_op_handler(m) is not None

    def _pre(self, m: nn.Module, args: Any, kwargs: Any) -> None:
        if self.suppress:
            self.suppress += 1
            return
        if self._atomic(m):
            # Inputs are resolved now: the module may modify them in place.
            self.pending[id(m)] = (self._refs(tuple(args)), self._refs(dict(kwargs)))
            self.suppress = 1
        self.stack.append(m)

    def _post(self, m: nn.Module, args: Any, kwargs: Any, out: Any) -> None:
        if self.suppress > 1:
            self.suppress -= 1
            return
        self.stack.pop()
        if self.suppress == 1 and id(m) in self.pending:
            self.suppress = 0
            rargs, rkwargs = self.pending.pop(id(m))
            name = self.names.get(id(m), "")
            inputs = tuple(r.id for r in _flat_refs((rargs, rkwargs)))
            index = len(self.graph.nodes)
            outs = tuple(self._new_value(t, index) for t in _flat_tensors(out))
            self.stack.append(m)  # the node's scope is the module itself
            self._node("module", name, inputs=inputs, outputs=outs, args=rargs, kwargs=rkwargs)
            self.stack.pop()


def _func_name(func: Any) -> str:
    name = getattr(func, "__name__", str(func))
    if name == "__get__":  # a tensor property such as .T / .mT / .data
        name = getattr(getattr(func, "__self__", None), "__name__", name)
    return str(name)


def _flat_tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, Mapping):
        return [t for v in obj.values() for t in _flat_tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _flat_tensors(v)]
    return []


def _flat_refs(obj: Any) -> list[ValueRef]:
    if isinstance(obj, ValueRef):
        return [obj]
    if isinstance(obj, Mapping):
        return [r for v in obj.values() for r in _flat_refs(v)]
    if isinstance(obj, (list, tuple)):
        return [r for v in obj for r in _flat_refs(v)]
    return []
