"""torchshrink.codec: entropy-coded (Huffman) model files, the last stage of Deep Compression.

A pruned and / or weight-shared model is stored as cluster indices plus codebooks, with the
positions of the non-zeros as relative indices (Deep Compression's filler trick), all
Huffman-coded (canonical codes, vectorised with numpy), inside the ordinary torchshrink model
file. :func:`torchshrink.load` restores it bit-exactly without any other file.

Codec version 2 keeps the fixed overhead small: one blob for all tensors, packed code-length
tables (:mod:`.tables`), a table-free Rice code or a transposed scan for positions where that
is smaller, and a compact container (deflated JSON document). Version 1 files still load.

The codec works on any model whose tensors have few distinct values and / or many zeros; it
does not depend on how they got that way (:mod:`torchshrink.cluster`, pruning, quantization).

Example:
    >>> import torch, torchshrink
    >>> from torchshrink.codec import save_compressed
    >>> m = torchshrink.load_model("zoo:lenet300")
    >>> with torch.no_grad():
    ...     for p in m.parameters():
    ...         _ = p.copy_(torch.round(p * 64) / 64)  # few distinct values, many zeros
    >>> report = save_compressed(m, "/tmp/l300_coded.safetensors")
    >>> report.ratio > 10
    True
    >>> torch.equal(torchshrink.load(report.path).fc1.weight, m.fc1.weight)
    True
"""

from __future__ import annotations

from torchshrink.codec.huffman import canonical_codes, code_lengths, decode, encode, kraft_sum
from torchshrink.codec.packed import CodedTensor, decode_tensor, encode_tensor, raw_tensor
from torchshrink.codec.report import CompressedReport, TensorCoding, inspect_compressed
from torchshrink.codec.save import load_compressed, save_compressed
from torchshrink.codec.sparse import absolute_positions, choose_index_bits, relative_indices

__all__ = [
    "CodedTensor",
    "CompressedReport",
    "TensorCoding",
    "absolute_positions",
    "canonical_codes",
    "choose_index_bits",
    "code_lengths",
    "decode",
    "decode_tensor",
    "encode",
    "encode_tensor",
    "inspect_compressed",
    "kraft_sum",
    "load_compressed",
    "raw_tensor",
    "relative_indices",
    "save_compressed",
]
