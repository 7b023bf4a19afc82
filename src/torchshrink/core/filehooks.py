"""Decoders for model files whose tensors are stored in a compressed (coded) form.

A compression family (L2) may store some tensors of a model file coded, e.g. Huffman-coded
cluster indices instead of float weights. :func:`torchshrink.core.modelfile.load` lives in core
(L0) and may not import upwards, so the family registers a decoder here, keyed by the ``codec``
name it writes into the file's ``compression`` dict. When a file names a codec whose decoder is
not registered yet, its module is imported from a fixed allow-list (:data:`DECODER_MODULES`) —
never a module name read from the file — and must register itself on import.

A decoder takes the ``compression`` dict and the file's tensors (``extra/...`` ones included)
and returns the tensors with the coded ones decoded under their ``state_dict`` keys.

Example:
    >>> import torch
    >>> def double(compression, state, *, where):
    ...     return {k: v * 2 for k, v in state.items()}
    >>> _ = register_decoder("doubled", double)
    >>> decode_state({"compression": {"codec": "doubled"}}, {"w": torch.ones(1)}, where="x")
    {'w': tensor([2.])}
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

import torch

from torchshrink.core.errors import ModelFileError

Decoder = Callable[..., dict[str, torch.Tensor]]

# codec name (as written in a file) -> the module that registers its decoder when imported.
DECODER_MODULES: dict[str, str] = {"huffman": "torchshrink.codec.packed"}

CODEC_KEY = "codec"

_DECODERS: dict[str, Decoder] = {}


def register_decoder(kind: str, fn: Decoder) -> Decoder:
    """Register ``fn(compression, state, *, where) -> state`` for files whose codec is ``kind``.

    Registering the same name again replaces the decoder (modules may be reloaded).

    Example:
        >>> register_decoder("identity", lambda compression, state, *, where: dict(state))
        ... # doctest: +ELLIPSIS
        <function <lambda> at ...>
    """
    _DECODERS[kind] = fn
    return fn


def decoder_for(kind: str, *, where: str) -> Decoder:
    """The decoder of codec ``kind``, importing its allow-listed module if needed.

    Raises:
        ModelFileError: ``kind`` is neither registered nor in :data:`DECODER_MODULES`.
    """
    if kind not in _DECODERS and kind in DECODER_MODULES:
        importlib.import_module(DECODER_MODULES[kind])
    if kind not in _DECODERS:
        known = sorted(set(_DECODERS) | set(DECODER_MODULES))
        raise ModelFileError(
            f"'{where}' stores tensors coded with codec {kind!r}, which this torchshrink cannot "
            f"decode (known codecs: {', '.join(known)})"
        )
    return _DECODERS[kind]


def decode_state(
    doc: Mapping[str, Any], state: dict[str, torch.Tensor], *, where: str
) -> dict[str, torch.Tensor]:
    """Decode the coded tensors of a model file; files without a codec are returned unchanged.

    Args:
        doc: the file's torchshrink JSON document (its ``compression`` dict names the codec).
        state: every tensor of the file, by its stored name.
        where: file name for messages.

    Raises:
        ModelFileError: unknown codec, or coded data that is corrupt (any decoder failure is
            reported as this error, never as a crash or a wrong model).
    """
    compression = doc.get("compression")
    if not isinstance(compression, dict) or CODEC_KEY not in compression:
        return state
    kind = compression[CODEC_KEY]
    if not isinstance(kind, str):
        raise ModelFileError(f"'{where}': the codec name must be a string, got {kind!r}")
    decoder = decoder_for(kind, where=where)
    try:
        return decoder(compression, state, where=where)
    except ModelFileError:
        raise
    except Exception as exc:  # a corrupt file must not surface as an arbitrary traceback
        raise ModelFileError(
            f"'{where}': the {kind!r}-coded tensors cannot be decoded ({type(exc).__name__}: "
            f"{exc}); the file is corrupt"
        ) from exc
