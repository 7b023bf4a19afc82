"""Load trained weights into a built architecture, never executing code from the file.

Accepted: a ``.safetensors`` file, or a PyTorch checkpoint read only with
``torch.load(path, map_location="cpu", weights_only=True)`` holding a state_dict directly or
under ``"state_dict"`` / ``"model"`` / ``"model_state_dict"`` (a DDP ``module.`` prefix is
stripped). A checkpoint that the weights-only unpickler refuses (it holds pickled classes or
functions) raises :class:`UnsafeFileError`: torchshrink does not run code from weight files.

Example:
    >>> from torch import nn
    >>> from safetensors.torch import save_file
    >>> save_file(nn.Linear(2, 1).state_dict(), "/tmp/w.safetensors")
    >>> load_weights(nn.Linear(2, 1), "/tmp/w.safetensors").out_features
    1
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchshrink.core.errors import ModelFileError, UnsafeFileError
from torchshrink.core.safeformat import read_file_header, sniff
from torchshrink.core.tensorpack import check_keys

_STATE_KEYS = ("state_dict", "model", "model_state_dict")
_DDP_PREFIX = "module."
# Extra tensors of a torchshrink model file are not weights of the architecture.
_EXTRA_PREFIX = "extra/"


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state_dict stored in a weights file (safetensors or weights-only PyTorch checkpoint).

    Raises:
        ModelFileError: missing, unreadable or unknown-format file, or no tensors in it.
        UnsafeFileError: the checkpoint would need code execution (pickled classes/functions).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"weights file '{path}' does not exist (or is not a file)")
    with path.open("rb") as f:
        kind = sniff(f.read(16))
    if kind in ("pickle", "zip"):
        return _state_from(_torch_load(path), where=str(path))
    if kind == "safetensors" or path.suffix == ".safetensors":
        from safetensors.torch import load_file

        read_file_header(path)  # clear errors for truncated / corrupt files
        try:
            state = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises its own error types
            raise ModelFileError(f"weights file '{path}' cannot be read: {exc}") from exc
        return {k: v for k, v in state.items() if not k.startswith(_EXTRA_PREFIX)}
    raise ModelFileError(
        f"weights file '{path}' is neither safetensors nor a PyTorch checkpoint (torch.save output)"
    )


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "Unsupported" not in text and "GLOBAL" not in text:
            raise ModelFileError(f"weights file '{path}' is corrupt: {text[:200]}") from None
        # Name what the unpickler refused, without the hint to disable weights_only.
        refused = next((line.strip() for line in text.splitlines() if "GLOBAL" in line), "")
        raise UnsafeFileError(
            f"weights file '{path}' holds pickled code ({refused or 'non-tensor objects'}); "
            "loading it would need code execution, so it is refused. Save the weights as "
            "safetensors (safetensors.torch.save_file(model.state_dict(), 'w.safetensors')) "
            "or as a plain state_dict (torch.save(model.state_dict(), path))"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ModelFileError(f"weights file '{path}' cannot be read: {exc}") from exc


def _state_from(obj: Any, *, where: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in _STATE_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    tensors = (
        {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
        if isinstance(obj, dict)
        else {}
    )
    if not tensors:
        raise ModelFileError(
            f"weights file '{where}' holds no state_dict (a {type(obj).__name__} without tensors; "
            f"expected a dict of tensors, or one under {', '.join(_STATE_KEYS)})"
        )
    if all(k.startswith(_DDP_PREFIX) for k in tensors):
        tensors = {k[len(_DDP_PREFIX) :]: v for k, v in tensors.items()}
    return tensors


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load the weights in ``path`` into ``model`` in place (strict) and return ``model``.

    Raises:
        ModelFileError: missing / unexpected keys or shape mismatches (first few named), or an
            unreadable file.
        UnsafeFileError: the file would need code execution.

    Example:
        >>> from torch import nn
        >>> load_weights(nn.Linear(2, 1), "/tmp/w.safetensors").weight.shape  # doctest: +SKIP
        torch.Size([1, 2])
    """
    state = read_weights(path)
    check_keys(model, state, where=str(path), shapes_must_match=True)
    model.load_state_dict(state, strict=True)
    return model
