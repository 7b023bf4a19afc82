"""Save a pruned and / or weight-shared model as a Huffman-coded torchshrink model file.

Every floating-point tensor of the ``state_dict`` with few distinct values and / or many zeros
is coded (:mod:`.packed`); the other floating-point tensors (biases, norms) are kept raw, bit
for bit. All their bytes go into the ordinary model file as **one** uint8 extra tensor (codec
version 2), their layout and one CRC-32 into its ``compression`` dict; the state keys
themselves are not stored, and the file is *compact* (its JSON document minified and deflated,
the module record left out when the spec rebuilds it; :mod:`torchshrink.core.modelfile`), so
that a small model's file is not mostly header. :func:`torchshrink.load` decodes it (the
``huffman`` decoder is found through :mod:`torchshrink.core.filehooks`), and still reads
version 1 files (one extra tensor and one placeholder per coded tensor, byte tables).

Example:
    >>> import torch, torchshrink
    >>> m = torchshrink.load_model("zoo:lenet300")
    >>> with torch.no_grad():
    ...     for p in m.parameters():
    ...         _ = p.copy_(torch.round(p * 64) / 64)  # few distinct values, many zeros
    >>> report = save_compressed(m, "/tmp/l300.safetensors")
    >>> report.ratio > 10
    True
    >>> torch.equal(torchshrink.load("/tmp/l300.safetensors").fc1.weight, m.fc1.weight)
    True
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchshrink.codec import huffman, sparse
from torchshrink.codec.packed import CODEC, CODEC_VERSION, DTYPES, encode_tensor, raw_tensor
from torchshrink.codec.report import CompressedReport, inspect_compressed
from torchshrink.core.errors import ConfigError
from torchshrink.core.modelfile import load, save
from torchshrink.core.modelspec import ModelSpec

IndexBits = int | Mapping[str, int] | None


def _matches(name: str, pattern: str) -> bool:
    return name == pattern or re.fullmatch(pattern, name) is not None


def _names(key: str) -> tuple[str, str]:
    return key, key.rpartition(".")[0]  # the tensor key and its module's name


def _bits_for(key: str, index_bits: IndexBits) -> int | None:
    if index_bits is None or isinstance(index_bits, int):
        return index_bits
    for pattern, bits in index_bits.items():
        if any(_matches(n, pattern) for n in _names(key)):
            return bits
    return None


def save_compressed(
    model: nn.Module,
    path: str | Path,
    *,
    index_bits: IndexBits = None,
    ignore: Iterable[str] = (),
    max_codebook: int = 4096,
    max_code_length: int = huffman.MAX_LENGTH,
    spec: ModelSpec | None = None,
    metadata: dict[str, Any] | None = None,
) -> CompressedReport:
    """Write ``model`` as a Huffman-coded model file and return its size breakdown.

    The model is not changed. Values are stored bit for bit: ``torchshrink.load(path)`` restores
    tensors that are ``torch.equal`` to the model's.

    Args:
        model: the model; it needs a spec (from ``load_model``) or ``spec=``.
        path: the file to write.
        index_bits: bits per relative index of sparse tensors: one width for all, a
            ``{name_or_regex: bits}`` map (matched against the tensor key or its module's name;
            unmatched tensors choose), or ``None`` to choose per tensor the width that gives
            the smallest file (Deep Compression used 5 bits for fc and 8 for conv layers).
        ignore: tensor keys or module names (or regexes) to keep plain.
        max_codebook: most distinct non-zero values coded with a codebook.
        max_code_length: Huffman code length limit in bits (1..32).
        spec: the architecture spec, when the model carries none.
        metadata: more JSON to keep in the file's ``compression`` dict.

    Raises:
        ConfigError: bad ``index_bits`` / ``max_code_length``, ``metadata`` using the codec's
            keys, or a model without a spec.

    Example:
        >>> import torchshrink
        >>> m = torchshrink.load_model("zoo:lenet300")
        >>> _ = m.fc1.weight.data.mul_(m.fc1.weight.abs() > 0.03)  # about 84% zeros
        >>> report = save_compressed(m, "/tmp/l300.safetensors", index_bits={"fc1": 4})
        >>> [(t.mode, t.index_bits) for t in report.tensors if t.key == "fc1.weight"]
        [('sparse_raw', 4)]
    """
    metadata = dict(metadata or {})
    if {"codec", "codec_version", "tensors", "crc32"} & set(metadata):
        raise ConfigError(
            "metadata may not use the keys 'codec', 'codec_version', 'tensors', 'crc32'"
        )
    if not 1 <= max_code_length <= huffman.HARD_MAX_LENGTH:
        raise ConfigError(
            f"max_code_length must be in 1..{huffman.HARD_MAX_LENGTH}, got {max_code_length}"
        )
    for bits in [index_bits] if not isinstance(index_bits, Mapping) else index_bits.values():
        if bits is not None and not (isinstance(bits, int) and 1 <= bits <= sparse.MAX_INDEX_BITS):
            raise ConfigError(f"index_bits must be in 1..{sparse.MAX_INDEX_BITS}, got {bits!r}")
    ignore = tuple(ignore)
    state = model.state_dict(keep_vars=True)
    shared = _shared_keys(state)
    coded: dict[str, Any] = {}
    blobs: list[torch.Tensor] = []
    for key, tensor in state.items():
        if key in shared or any(_matches(n, p) for n in _names(key) for p in ignore):
            continue
        if str(tensor.dtype).removeprefix("torch.") not in DTYPES or tensor.numel() == 0:
            continue  # integer buffers and empty tensors stay plain file entries
        result = encode_tensor(
            tensor.detach(),
            index_bits=_bits_for(key, index_bits),
            max_codebook=max_codebook,
            max_code_length=max_code_length,
        ) or raw_tensor(tensor)
        coded[key] = result.meta()
        blobs.append(result.blob)
    blob = torch.cat(blobs) if blobs else torch.zeros(0, dtype=torch.uint8)
    compression = {
        **metadata,
        "codec": CODEC,
        "codec_version": CODEC_VERSION,
        "crc32": zlib.crc32(blob.numpy().tobytes()),
        "tensors": coded,
    }
    written = save(
        model,
        path,
        spec=spec,
        metadata=compression,
        tensors={CODEC: blob},
        omit=coded,
        compact=True,
    )
    return inspect_compressed(written)


def load_compressed(path: str | Path) -> nn.Module:
    """Load a file written by :func:`save_compressed` (the same as :func:`torchshrink.load`).

    Example:
        >>> load_compressed("/tmp/l300.safetensors").fc2.out_features
        100
    """
    return load(path)


def _shared_keys(state: Mapping[str, torch.Tensor]) -> set[str]:
    # Tied / overlapping tensors stay plain: the model file keeps their ties.
    seen: dict[int, str] = {}
    shared: set[str] = set()
    for key, t in state.items():
        if t.numel() == 0:
            continue
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen:
            shared.update((key, seen[ptr]))
        seen[ptr] = key
    return shared
