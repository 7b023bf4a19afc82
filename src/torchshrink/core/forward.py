"""Running a model on example inputs, with errors that name the layer where an input did not fit.

The input convention used everywhere in torchshrink (``profile``, ``checked_forward``, the
latency and MAC counters):

* a ``torch.Tensor`` ``x`` is called as ``model(x)``;
* a ``tuple`` or ``list`` is unpacked as positional arguments: ``model(*inputs)``;
* a ``dict`` is passed as keyword arguments: ``model(**inputs)`` (e.g. HF ``input_ids``).

Dimension 0 of the first tensor is the batch dimension.

Example:
    >>> import torch
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    >>> checked_forward(m, torch.zeros(3, 2, 2)).shape
    torch.Size([3, 2])
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from torchshrink.core.errors import ShapeError

Inputs = torch.Tensor | tuple[Any, ...] | list[Any] | Mapping[str, Any]

# Messages of torch / user errors that mean "this input does not fit this layer". Anything else
# (a bug in the model, out of memory, ...) is re-raised unchanged.
_SHAPE_WORDS = re.compile(
    r"shape|size|dimension|\bdims?\b|expected|mismatch|channels|mat1|mat2|must match|"
    r"scalar type|dtype|out of range|index",
    re.IGNORECASE,
)


def call_model(model: nn.Module, inputs: Inputs) -> Any:
    """Call ``model`` on ``inputs`` following the convention of this module.

    Example:
        >>> import torch
        >>> call_model(torch.nn.Identity(), (torch.ones(1),))
        tensor([1.])
    """
    if isinstance(inputs, torch.Tensor):
        return model(inputs)
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    raise TypeError(
        f"example inputs must be a tensor, a tuple of tensors or a dict, got {type(inputs).__name__}"
    )


def _tensors(inputs: Any) -> list[torch.Tensor]:
    if isinstance(inputs, torch.Tensor):
        return [inputs]
    if isinstance(inputs, Mapping):
        inputs = list(inputs.values())
    if isinstance(inputs, (tuple, list)):
        return [t for x in inputs for t in _tensors(x)]
    return []


def batch_size_of(inputs: Inputs) -> int:
    """Size of dimension 0 of the first tensor in ``inputs`` (1 for a 0-d tensor).

    Example:
        >>> import torch
        >>> batch_size_of({"input_ids": torch.zeros(4, 16, dtype=torch.long)})
        4
    """
    tensors = _tensors(inputs)
    if not tensors:
        raise TypeError("example inputs contain no tensor; cannot tell the batch size")
    first = tensors[0]
    return int(first.shape[0]) if first.dim() > 0 else 1


def resize_batch(inputs: Inputs, batch_size: int) -> Inputs:
    """Repeat or cut every tensor along dimension 0 so that the batch has ``batch_size`` rows.

    Example:
        >>> import torch
        >>> resize_batch(torch.zeros(2, 3), 5).shape
        torch.Size([5, 3])
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")

    def fit(x: torch.Tensor) -> torch.Tensor:
        if x.dim() > 0 and x.shape[0] > 0:
            reps = -(-batch_size // x.shape[0])  # ceil division
            return x.repeat(reps, *([1] * (x.dim() - 1)))[:batch_size]
        return x

    return map_tensors(inputs, fit)


def map_tensors(inputs: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``inputs`` with ``fn`` applied to every tensor in it (tuples, lists and dicts rebuilt).

    Example:
        >>> import torch
        >>> map_tensors({"x": (torch.ones(1), 2)}, lambda t: t * 3)
        {'x': (tensor([3.]), 2)}
    """
    if isinstance(inputs, torch.Tensor):
        return fn(inputs)
    if isinstance(inputs, Mapping):
        return {k: map_tensors(v, fn) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return type(inputs)(map_tensors(v, fn) for v in inputs)
    return inputs


def describe_shapes(inputs: Any) -> str:
    """A short text of the tensor shapes in ``inputs``, e.g. ``"(1, 1, 32, 32)"``."""
    shapes = [tuple(t.shape) for t in _tensors(inputs)]
    if not shapes:
        return "(no tensor)"
    return ", ".join(str(s) for s in shapes)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode and restore every submodule's own train/eval flag afterwards.

    ``model.train(was_training)`` alone would flatten mixed modes (e.g. a frozen BN in eval
    inside a training model), so each module's flag is saved and restored.

    Example:
        >>> from torch import nn
        >>> m = nn.Linear(2, 2).train()
        >>> with eval_mode(m):
        ...     m.training
        False
        >>> m.training
        True
    """
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


def checked_forward(model: nn.Module, inputs: Inputs) -> Any:
    """Run ``model`` on ``inputs``; if the input does not fit, say in which layer and why.

    Forward pre-hooks keep a stack of the modules being run; when an error about shapes,
    sizes or dtypes escapes, the innermost module still on the stack is the one that failed.
    All hooks are removed afterwards, whatever happens. The model's mode is not changed.

    Args:
        model: any ``nn.Module``.
        inputs: a tensor, a tuple of positional tensors or a dict of keyword tensors.

    Returns:
        Whatever the model returns.

    Raises:
        ShapeError: the input does not fit; the message names the module's qualified name and
            type, the input shape it got and the original error message.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
        >>> try:
        ...     checked_forward(m, torch.zeros(1, 1, 32, 32))
        ... except ShapeError as exc:
        ...     print(str(exc)[:59])
        input does not fit the model: module '1' (Linear) got input
    """
    names = {id(m): name for name, m in model.named_modules(remove_duplicate=False)}
    # (module, shapes of its inputs) for every module that has been entered but not left.
    stack: list[tuple[nn.Module, str]] = []

    def pre_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        stack.append((module, describe_shapes((args, kwargs))))

    def post_hook(module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
        # Pop down to this module: entries above it are modules whose error was caught inside.
        while stack:
            if stack.pop()[0] is module:
                break

    handles = []
    try:
        for m in model.modules():
            try:
                handles.append(m.register_forward_pre_hook(pre_hook, with_kwargs=True))
                handles.append(m.register_forward_hook(post_hook, with_kwargs=True))
            except (RuntimeError, AttributeError):  # e.g. scripted modules refuse hooks
                continue
        try:
            return call_model(model, inputs)
        except (RuntimeError, ValueError, IndexError) as exc:
            message = " ".join(str(exc).split("\n")[0].split()) or type(exc).__name__
            if not _SHAPE_WORDS.search(str(exc)):
                raise
            failed, got = stack[-1] if stack else (model, describe_shapes(inputs))
            name = names.get(id(failed), "")
            label = f"'{name}'" if name else "(the model itself)"
            raise ShapeError(
                f"input does not fit the model: module {label} ({type(failed).__name__}) got "
                f"input of shape {got} (model input {describe_shapes(inputs)}): {message}"
            ) from exc
    finally:
        for h in handles:
            h.remove()
