"""Turn a ``state_dict`` into safetensors-ready tensors and back, keeping tied weights tied.

safetensors refuses tensors that share storage. Exact aliases (tied weights: the same tensor
under two keys) are stored once and recorded as ``{key: canonical_key}`` ties; on load the
canonical parameter object is put back under the tied name, so the tie is real again. Other
overlapping views are cloned. Loading assigns the file's tensors (``assign=True``), so layers
whose shapes were shrunk take the stored shapes and dtypes.

Example:
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Embedding(5, 3), nn.Linear(3, 5, bias=False))
    >>> m[1].weight = m[0].weight
    >>> state, ties = pack_state(m.state_dict())
    >>> ties
    {'1.weight': '0.weight'}
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from torchshrink.core.errors import ModelFileError

_SHOW = 5  # keys named in a mismatch message


def pack_state(
    state: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Contiguous CPU tensors with no shared storage, plus the ties that were folded away."""
    out: dict[str, torch.Tensor] = {}
    ties: dict[str, str] = {}
    aliases: dict[tuple[object, ...], str] = {}
    storages: set[tuple[str, int]] = set()
    for key, tensor in state.items():
        t = tensor.detach()
        if t.numel() == 0:
            out[key] = t.cpu().clone()
            continue
        storage = (str(t.device), t.untyped_storage().data_ptr())
        alias = (*storage, t.storage_offset(), tuple(t.shape), t.stride(), t.dtype)
        if alias in aliases:
            ties[key] = aliases[alias]
            continue
        aliases[alias] = key
        # A view into storage already stored (or into a larger buffer) must become its own copy.
        whole = t.untyped_storage().nbytes() == t.numel() * t.element_size()
        if storage in storages or not whole or not t.is_contiguous():
            t = t.contiguous().clone()
        storages.add(storage)
        out[key] = t.cpu()
    return out, ties


def _owner(model: nn.Module, key: str) -> tuple[nn.Module, str]:
    module_name, _, attr = key.rpartition(".")
    return model.get_submodule(module_name), attr


def _describe(keys: list[str], shapes: Mapping[str, torch.Tensor]) -> str:
    shown = [f"{k} {tuple(shapes[k].shape)}" if k in shapes else k for k in keys[:_SHOW]]
    more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(shown) + more


def check_keys(
    model: nn.Module, state: Mapping[str, torch.Tensor], *, where: str, shapes_must_match: bool
) -> None:
    """Raise :class:`ModelFileError` naming the first missing / unexpected / mis-shaped keys."""
    current = model.state_dict()
    missing = [k for k in current if k not in state]
    unexpected = [k for k in state if k not in current]
    problems = []
    if missing:
        problems.append(f"missing keys: {_describe(missing, current)}")
    if unexpected:
        problems.append(f"unexpected keys: {_describe(unexpected, state)}")
    if shapes_must_match:
        bad = [k for k in state if k in current and state[k].shape != current[k].shape]
        if bad:
            pairs = [
                f"{k}: file {tuple(state[k].shape)} vs model {tuple(current[k].shape)}"
                for k in bad[:_SHOW]
            ]
            problems.append("shape mismatch: " + ", ".join(pairs))
    if problems:
        raise ModelFileError(f"'{where}' does not fit the model: " + "; ".join(problems))


def assign_state(
    model: nn.Module, state: dict[str, torch.Tensor], *, ties: Mapping[str, str], where: str
) -> None:
    """Load ``state`` into ``model`` by assignment, so recorded new shapes replace old ones."""
    full = dict(state)
    for key, canonical in ties.items():
        if canonical not in full:
            raise ModelFileError(f"'{where}': tied key '{key}' points to missing '{canonical}'")
        full[key] = full[canonical]
    check_keys(model, full, where=where, shapes_must_match=False)
    # load_state_dict checks shapes even with assign=True; swap mis-shaped entries first.
    current = model.state_dict(keep_vars=True)
    for key, tensor in full.items():
        if current[key].shape != tensor.shape:
            owner, attr = _owner(model, key)
            if attr in owner._parameters:
                old = owner._parameters[attr]
                grad = bool(old is not None and old.requires_grad)
                owner._parameters[attr] = nn.Parameter(tensor, requires_grad=grad)
            else:
                owner._buffers[attr] = tensor
    model.load_state_dict(full, strict=True, assign=True)


def restore_ties(model: nn.Module, ties: Mapping[str, str]) -> None:
    """Make every tied key refer to the very same parameter / buffer object as its canonical."""
    for key, canonical in ties.items():
        src_owner, src_attr = _owner(model, canonical)
        dst_owner, dst_attr = _owner(model, key)
        if src_attr in src_owner._parameters:
            dst_owner._parameters[dst_attr] = src_owner._parameters[src_attr]
        else:
            dst_owner._buffers[dst_attr] = src_owner._buffers[src_attr]
