"""Serialized size of a model, and the same bytes after a generic compressor (zstd).

``file_bytes`` is what a user ships: the size of the torchshrink model file. If a path is given
it is the file's size on disk; otherwise the model is serialized in memory with
:func:`torchshrink.core.modelfile.to_bytes` when it carries a :class:`ModelSpec`, or with
``safetensors.torch.save(state_dict)`` when it does not (said in ``note``).

``zstd_bytes`` is the same bytes compressed by zstd (level 19 up to 32 MiB of input, level 9
above that to keep the measurement to seconds; on weight data the two differ by well under 1%).
It is the honest reference a custom entropy coder has to beat: a 90%-zero model
compresses a lot with zstd alone.

Example:
    >>> from torch import nn
    >>> s = model_size(nn.Linear(100, 10))
    >>> s.file_bytes > 4 * 1010, s.source
    (True, 'safetensors')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from torchshrink.core.errors import ModelFileError
from torchshrink.core.modelspec import get_spec

_BIG_INPUT = 32 * 1024 * 1024


@dataclass(frozen=True)
class SizeStats:
    """Serialized bytes of a model.

    Attributes:
        file_bytes: bytes of the model file (or of its in-memory serialization).
        zstd_bytes: ``file_bytes`` after zstd at ``zstd_level``.
        zstd_level: the zstd level used.
        source: ``"file"`` (size on disk), ``"modelfile"`` (torchshrink format in memory) or
            ``"safetensors"`` (plain state dict, the model carries no spec).
        note: why a fallback was used, or ``""``.
    """

    file_bytes: int
    zstd_bytes: int
    zstd_level: int
    source: str
    note: str = ""

    @property
    def zstd_ratio(self) -> float:
        """``file_bytes / zstd_bytes`` (how much zstd alone shrinks the file)."""
        return self.file_bytes / self.zstd_bytes if self.zstd_bytes else float("inf")


def zstd_size(data: bytes, *, level: int | None = None) -> tuple[int, int]:
    """``(compressed bytes, level used)`` of ``data`` under zstd.

    Args:
        data: the bytes to compress.
        level: zstd level; ``None`` picks 19, or 9 for inputs over 32 MiB.

    Example:
        >>> zstd_size(bytes(10_000))[0] < 100
        True
    """
    import zstandard

    if level is None:
        level = 19 if len(data) <= _BIG_INPUT else 9
    return len(zstandard.ZstdCompressor(level=level).compress(data)), level


def state_dict_bytes(model: nn.Module) -> bytes:
    """The model's state dict as safetensors bytes (tied tensors stored once).

    Example:
        >>> from torch import nn
        >>> len(state_dict_bytes(nn.Linear(2, 2))) > 24
        True
    """
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, tuple[int, ...], torch.dtype]] = set()
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), tuple(t.shape), t.dtype)
        if t.numel() and key in seen:  # a tied weight: a real file would store it once
            continue
        seen.add(key)
        # clone(): safetensors refuses tensors that share storage or are not contiguous.
        tensors[name] = t.detach().to("cpu").contiguous().clone()
    return save(tensors)


def serialize(model: nn.Module) -> tuple[bytes, str, str]:
    """``(bytes, source, note)``: the torchshrink file in memory, or a safetensors fallback."""
    if get_spec(model) is None:
        note = "the model carries no ModelSpec"
    else:
        try:
            from torchshrink.core.modelfile import to_bytes
        except ImportError:
            note = "torchshrink.core.modelfile is not available"
        else:
            return to_bytes(model), "modelfile", ""
    note = f"file_bytes: {note}, so it was measured as a plain safetensors state dict"
    return state_dict_bytes(model), "safetensors", note


def model_size(
    model: nn.Module, *, file_path: str | Path | None = None, zstd_level: int | None = None
) -> SizeStats:
    """Measure the serialized size of ``model`` (or of the file it was saved to).

    Args:
        model: the model; only read when ``file_path`` is ``None``.
        file_path: a saved model file; its size on disk and its zstd size are reported.
        zstd_level: zstd level, ``None`` for the default (19, or 9 above 32 MiB).

    Raises:
        ModelFileError: ``file_path`` does not exist or is not a file.

    Example:
        >>> from torch import nn
        >>> model_size(nn.Linear(10, 10)).zstd_bytes > 0
        True
    """
    if file_path is not None:
        path = Path(file_path)
        if not path.is_file():
            raise ModelFileError(f"model file '{path}' does not exist or is not a file")
        data, source, note = path.read_bytes(), "file", ""
    else:
        data, source, note = serialize(model)
    compressed, level = zstd_size(data, level=zstd_level)
    return SizeStats(
        file_bytes=len(data), zstd_bytes=compressed, zstd_level=level, source=source, note=note
    )
