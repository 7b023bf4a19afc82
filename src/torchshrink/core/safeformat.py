"""Recognise file formats from their first bytes, and read safetensors headers by hand.

Model and weights files are checked here *before* any library parses them: a pickle (first
byte ``0x80``) or a ``torch.save`` zip (``PK``) is never handed to an unpickler by the model
file loader, and a safetensors header is validated (length, JSON, data extent) so that random
bytes, text files and truncated downloads get a clear error instead of a library traceback.

Example:
    >>> sniff(b"PK\\x03\\x04....")
    'zip'
    >>> sniff(b"\\x80\\x04\\x95")
    'pickle'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torchshrink.core.errors import ModelFileError, UnsafeFileError

# A safetensors header larger than this is not a header (safetensors itself caps it at 100 MB).
MAX_HEADER_BYTES = 100_000_000
PICKLE_BYTE = 0x80
ZIP_MAGIC = b"PK"


def sniff(head: bytes) -> str:
    """Classify a file from its first 8+ bytes: ``pickle``, ``zip``, ``safetensors`` or ``unknown``.

    ``safetensors`` means the first 8 bytes are a plausible little-endian header length
    followed by ``{``; the full check is :func:`parse_header`.
    """
    # safetensors first: its 8-byte header length may well start with 0x80 or "PK", and a
    # file misread as safetensors is only parsed as JSON, never unpickled.
    if (
        len(head) >= 9
        and int.from_bytes(head[:8], "little") < MAX_HEADER_BYTES
        and head[8:9] == b"{"
    ):
        return "safetensors"
    if head[:1] == bytes([PICKLE_BYTE]):
        return "pickle"
    if head[:2] == ZIP_MAGIC:
        return "zip"
    return "unknown"


def read_head(path: Path, n: int = 16) -> bytes:
    """The first ``n`` bytes of ``path``; a missing file raises :class:`ModelFileError`."""
    if not path.is_file():
        raise ModelFileError(f"model file '{path}' does not exist (or is not a file)")
    with path.open("rb") as f:
        return f.read(n)


def parse_header(raw: bytes, *, total_size: int, where: str) -> dict[str, Any]:
    """Parse a safetensors container given its first bytes (at least the header).

    Args:
        raw: the file's first bytes, including the 8-byte length and the JSON header.
        total_size: the file's full size in bytes, to detect truncation.
        where: file name for messages.

    Returns:
        The safetensors header dict (tensor entries plus ``__metadata__`` if any).

    Raises:
        ModelFileError: not safetensors, truncated, or a malformed header.
    """
    not_ours = (
        f"'{where}' is not a torchshrink model file: it is not in safetensors format "
        "(or it is truncated inside its header)"
    )
    if len(raw) < 8:
        raise ModelFileError(not_ours)
    n = int.from_bytes(raw[:8], "little")
    if n > MAX_HEADER_BYTES or 8 + n > total_size or len(raw) < 8 + n:
        raise ModelFileError(not_ours)
    try:
        header = json.loads(raw[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelFileError(not_ours) from None
    if not isinstance(header, dict):
        raise ModelFileError(not_ours)
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2):
            raise ModelFileError(f"'{where}': malformed safetensors entry for tensor '{key}'")
        end = max(end, int(offsets[1]))
    expected = 8 + n + end
    if total_size < expected:
        raise ModelFileError(
            f"'{where}' is truncated: its header promises {expected} bytes but the file has "
            f"{total_size}; save it again or copy it completely"
        )
    return header


def read_file_header(path: Path) -> dict[str, Any]:
    """Validate ``path`` as a safetensors file (refusing pickles) and return its header."""
    head = read_head(path, 9)  # length + first JSON byte: enough for sniff() to be sure
    refuse_pickled(head, where=str(path))
    size = path.stat().st_size
    n = int.from_bytes(head[:8], "little") if len(head) >= 8 else 0
    with path.open("rb") as f:
        raw = f.read(8 + min(n, MAX_HEADER_BYTES, max(size - 8, 0)))
    return parse_header(raw, total_size=size, where=str(path))


def refuse_pickled(head: bytes, *, where: str) -> None:
    """Raise :class:`UnsafeFileError` for a pickle or ``torch.save`` zip, before any parsing."""
    kind = sniff(head)
    if kind in ("pickle", "zip"):
        what = "a pickle" if kind == "pickle" else "a torch.save zip archive (pickle inside)"
        raise UnsafeFileError(
            f"'{where}' is {what}; loading it would need code execution, so it is refused. "
            "torchshrink model files are safetensors: save the model with torchshrink.save, or "
            "pass plain weights with --weights (safetensors preferred)"
        )
