"""The safe torchshrink model file: one safetensors file, no pickle anywhere.

Tensors are the model's ``state_dict`` (plus ``extra/NAME`` tensors a compression stage wants
to keep); the safetensors ``__metadata__`` key ``torchshrink`` holds one JSON document::

    {"format": "torchshrink", "version": 1, "spec": {"ref": ..., "args": ...},
     "modules": {name: {"type": ..., "attrs": ...}}, "ties": {key: canonical_key},
     "extra_tensors": [...], "compression": {...}, "torch": "2.x", "torchshrink": "0.x",
     "hf_config": {...}  # transformers models only}

A *compact* file (``compact=True``, used by the Huffman codec) stores the same document
minified and zlib-deflated in the uint8 tensor :data:`DOC_TENSOR`; the metadata then only holds
``{"format": "torchshrink", "version": 2, "doc": DOC_TENSOR}``, ``"modules": "spec"`` stands for
"exactly as the spec builds them" (version 3: ``"modules": "spec+delta"`` with
``"module_delta": {"changed": {name: record}, "removed": [name, ...]}``, only the modules that
differ from the spec's build, e.g. the shrunk layers of a pruned zoo model, and of a module
of the type built only its changed attributes: ``{"attrs": {"out_features": 60}}``), and state keys named in ``omit`` are not stored at all (the
file's codec restores them). Version 1 files are read as before.

Loading rebuilds the architecture from ``spec`` (a ``hf:`` model from ``hf_config``, so its
folder is not needed), replays ``modules`` (shrunk layers, replaced layers; see
:mod:`.modulestate`) and assigns the tensors. Only safetensors and JSON are parsed. Note that
a ``file.py:factory`` spec imports that Python file, as ``load_model`` does.

Example:
    >>> import torchshrink
    >>> m = torchshrink.load_model("zoo:lenet300")
    >>> path = torchshrink.save(m, "/tmp/lenet300.safetensors")
    >>> torchshrink.load(path).fc1.out_features
    300
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from torch import nn

from torchshrink.core.errors import ConfigError, ModelFileError
from torchshrink.core.modelspec import ModelSpec, attach_spec, get_spec
from torchshrink.core.modulestate import (
    apply_modules,
    expand_delta,
    module_delta,
    record_modules,
)
from torchshrink.core.safeformat import parse_header, read_file_header, refuse_pickled
from torchshrink.core.tensorpack import assign_state, pack_state, restore_ties

FORMAT = "torchshrink"
VERSION = 3  # newest version read; plain files are still written as version 1
META_KEY = "torchshrink"
EXTRA_PREFIX = "extra/"
DOC_TENSOR = "/doc"  # compact files: the deflated JSON document (no state key starts with "/")
MAX_DOC_BYTES = 100_000_000  # an inflated document larger than this is refused


def to_bytes(
    model: nn.Module,
    *,
    spec: ModelSpec | None = None,
    metadata: dict[str, Any] | None = None,
    tensors: dict[str, torch.Tensor] | None = None,
    omit: Iterable[str] = (),
    compact: bool = False,
) -> bytes:
    """Serialise ``model`` into the bytes of a torchshrink model file.

    Args:
        model: the model; its spec (from ``load_model``) says how to rebuild it.
        spec: overrides / supplies the spec when the model has none.
        metadata: JSON-serialisable dict stored under ``"compression"``.
        tensors: extra tensors to store (read back with :func:`read_extra_tensors`).
        omit: ``state_dict`` keys not to store (the codec named in ``metadata`` restores them).
        compact: store the document deflated in a tensor (a version 2 file, for small files).

    Raises:
        ConfigError: no spec, or ``metadata`` / spec args that JSON cannot hold.

    Example:
        >>> from torchshrink.core.modelspec import ModelSpec
        >>> data = to_bytes(nn.Linear(2, 2), spec=ModelSpec(ref="my.py:make"))
        >>> from_bytes(data).out_features  # doctest: +SKIP
        2
    """
    from safetensors.torch import save

    state, meta = _prepare(
        model, spec=spec, metadata=metadata, tensors=tensors, omit=omit, compact=compact
    )
    return save(state, metadata=meta)


def save(
    model: nn.Module,
    path: str | Path,
    *,
    spec: ModelSpec | None = None,
    metadata: dict[str, Any] | None = None,
    tensors: dict[str, torch.Tensor] | None = None,
    omit: Iterable[str] = (),
    compact: bool = False,
) -> Path:
    """Write ``model`` to ``path`` as a torchshrink model file (atomically) and return the path.

    See :func:`to_bytes` for the arguments. Under ``torchrun`` only rank 0 writes: the other
    ranks return ``path`` without writing, so every rank may run the same script.

    Example:
        >>> import torchshrink
        >>> torchshrink.save(torchshrink.load_model("zoo:lenet5"), "/tmp/l5.safetensors").name
        'l5.safetensors'
    """
    from safetensors.torch import save_file

    path = Path(path)
    if _rank() != 0:
        return path
    state, meta = _prepare(
        model, spec=spec, metadata=metadata, tensors=tensors, omit=omit, compact=compact
    )
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, path)
    return path


def _rank() -> int:
    # This process's rank under torchrun, 0 otherwise (what torchshrink.train.distributed.rank
    # says; core cannot import train).
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    value = os.environ.get("RANK", "0").strip()
    return int(value) if value.isdigit() else 0


def read_header(path: str | Path) -> dict[str, Any]:
    """The JSON document of a torchshrink model file, without loading any tensor.

    Example:
        >>> read_header("/tmp/l5.safetensors")["spec"]["ref"]  # doctest: +SKIP
        'zoo:lenet5'
    """
    path = Path(path)
    return _document(read_file_header(path), where=str(path), read=_file_reader(path))


def load(path: str | Path) -> nn.Module:
    """Load a model written by :func:`save` (in eval mode, with its spec attached).

    Raises:
        ModelFileError: missing, truncated, corrupt, plain-weights or malformed-metadata file.
        UnsafeFileError: the file is a pickle or a ``torch.save`` zip (refused, never unpickled).

    Example:
        >>> import torchshrink
        >>> torchshrink.load("/tmp/l5.safetensors").conv1.out_channels  # doctest: +SKIP
        20
    """
    from safetensors.torch import load_file

    path = Path(path)
    doc = _document(read_file_header(path), where=str(path), read=_file_reader(path))
    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own error types
        raise ModelFileError(f"'{path}': cannot read the tensors: {exc}") from exc
    return _rebuild(doc, state, where=str(path))


def from_bytes(data: bytes) -> nn.Module:
    """Load a model from the bytes produced by :func:`to_bytes` (same checks as :func:`load`)."""
    from safetensors.torch import load as st_load

    refuse_pickled(data[:9], where="<bytes>")
    header = parse_header(data, total_size=len(data), where="<bytes>")
    doc = _document(header, where="<bytes>", read=lambda a, b: data[a:b])
    try:
        state = st_load(data)
    except Exception as exc:  # safetensors raises its own error types
        raise ModelFileError(f"<bytes>: cannot read the tensors: {exc}") from exc
    return _rebuild(doc, state, where="<bytes>")


def read_extra_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The extra tensors stored with ``save(..., tensors=...)``, by their original names."""
    from safetensors import safe_open

    path = Path(path)
    doc = _document(read_file_header(path), where=str(path), read=_file_reader(path))
    with safe_open(str(path), framework="pt", device="cpu") as f:
        return {name: f.get_tensor(EXTRA_PREFIX + name) for name in doc.get("extra_tensors", [])}


def _prepare(
    model: nn.Module,
    *,
    spec: ModelSpec | None,
    metadata: dict[str, Any] | None,
    tensors: dict[str, torch.Tensor] | None,
    omit: Iterable[str] = (),
    compact: bool = False,
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    import torchshrink
    from torchshrink.core.hfmodel import hf_config_dict

    spec = spec or get_spec(model)
    if spec is None:
        raise ConfigError(
            f"cannot save this {type(model).__name__}: it has no architecture spec. Load it with "
            "torchshrink.load_model('zoo:NAME' | 'file.py:factory' | 'hf:DIR'), or pass "
            "spec=ModelSpec(ref=..., args={...}) to save"
        )
    skip = set(omit)
    state, ties = pack_state({k: v for k, v in model.state_dict().items() if k not in skip})
    extras = dict(tensors or {})
    for name, t in extras.items():
        state[EXTRA_PREFIX + name] = t.detach().cpu().contiguous().clone()
    doc: dict[str, Any] = {
        "format": FORMAT,
        "version": 1,  # compact files are version 2; plain ones stay readable by older code
        "spec": spec.model_dump(mode="json"),
        "modules": record_modules(model),
        "ties": ties,
        "extra_tensors": sorted(extras),
        "compression": metadata or {},
        "torch": torch.__version__,
        "torchshrink": torchshrink.__version__,
    }
    if spec.ref.startswith("hf:"):
        doc["hf_config"] = hf_config_dict(model)
    if compact:
        doc["version"] = 2
        if not ties:
            del doc["ties"]
        if not spec.ref.startswith("hf:"):
            _compact_modules(doc, spec)
    try:
        text = json.dumps(doc, allow_nan=True, separators=(",", ":") if compact else None)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model file metadata must be JSON-serialisable: {exc}") from exc
    if not compact:
        return state, {META_KEY: text}
    state[DOC_TENSOR] = torch.frombuffer(
        bytearray(zlib.compress(text.encode(), 9)), dtype=torch.uint8
    )
    pointer = {"format": FORMAT, "version": 2, "doc": DOC_TENSOR}
    return state, {META_KEY: json.dumps(pointer, separators=(",", ":"))}


def _compact_modules(doc: dict[str, Any], spec: ModelSpec) -> None:
    # The shortest module record that rebuilds the model: "spec" when the spec alone builds
    # exactly these modules, else (version 3) only the modules that differ from a fresh build
    # when replaying that difference was checked to give the full record back.
    from torchshrink.core.modelref import build_from_spec

    modules = doc["modules"]
    try:
        fresh = build_from_spec(spec)
        built = record_modules(fresh)
        if built == modules:
            doc["modules"] = "spec"
            return
        delta = module_delta(built, modules)
        # replayed onto the same fresh build, as loading does (its records are taken already)
        apply_modules(fresh, expand_delta(built, delta["changed"]), removed=delta["removed"])
        if record_modules(fresh) != modules:
            return
    except Exception:  # a spec that cannot be rebuilt (or replayed) here keeps its full record
        return
    doc["version"] = 3
    doc["modules"] = "spec+delta"
    doc["module_delta"] = delta


def _file_reader(path: Path) -> Callable[[int, int], bytes]:
    def read(start: int, stop: int) -> bytes:
        with path.open("rb") as f:
            f.seek(start)
            return f.read(stop - start)

    return read


def _inflate_document(
    header: dict[str, Any],
    pointer: dict[str, Any],
    *,
    where: str,
    read: Callable[[int, int], bytes],
) -> Any:
    # A compact file: the document is the deflated bytes of the tensor the pointer names.
    entry = header.get(str(pointer.get("doc")))
    if not isinstance(entry, dict) or entry.get("dtype") != "U8":
        entry = {}
    offsets = entry.get("data_offsets")
    if not isinstance(offsets, list) or len(offsets) != 2:
        raise ModelFileError(f"'{where}': the compact model file has no document tensor")
    start = 8 + int.from_bytes(read(0, 8), "little")  # the tensor data follows the header
    raw = read(start + int(offsets[0]), start + int(offsets[1]))
    try:
        inflater = zlib.decompressobj()
        text = inflater.decompress(raw, MAX_DOC_BYTES)
        if inflater.unconsumed_tail or not inflater.eof:
            raise zlib.error("incomplete or oversized document")
        return json.loads(text.decode("utf-8"))
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(
            f"'{where}': the compact model file's document is corrupt ({exc})"
        ) from None


def _document(
    header: dict[str, Any], *, where: str, read: Callable[[int, int], bytes]
) -> dict[str, Any]:
    meta = header.get("__metadata__") or {}
    if META_KEY not in meta:
        raise ModelFileError(
            f"'{where}' is a plain safetensors weights file (no torchshrink metadata); use it as "
            "weights for an architecture: --weights FILE on the command line, or "
            "torchshrink.load_model('zoo:NAME', weights=FILE)"
        )
    try:
        doc = json.loads(meta[META_KEY])
    except json.JSONDecodeError as exc:
        raise ModelFileError(
            f"'{where}': the torchshrink metadata is not valid JSON: {exc}"
        ) from None
    if isinstance(doc, dict) and doc.get("format") == FORMAT and "doc" in doc:
        doc = _inflate_document(header, doc, where=where, read=read)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ModelFileError(f"'{where}': the torchshrink metadata is malformed (no format field)")
    version = doc.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise ModelFileError(
            f"'{where}' has model file version {version!r}; this torchshrink reads version "
            f"{VERSION} or older (upgrade torchshrink)"
        )
    modules = doc.get("modules")
    if not isinstance(modules, dict) and not (
        (version >= 2 and modules == "spec") or (version >= 3 and modules == "spec+delta")
    ):
        raise ModelFileError(f"'{where}': the torchshrink metadata is malformed (no modules)")
    if modules == "spec+delta":
        delta = doc.get("module_delta")
        if not (
            isinstance(delta, dict)
            and isinstance(delta.get("changed"), dict)
            and all(
                isinstance(r, dict) and ("type" in r or isinstance(r.get("attrs"), dict))
                for r in delta["changed"].values()
            )
            and isinstance(delta.get("removed"), list)
            and all(isinstance(n, str) for n in delta["removed"])
        ):
            raise ModelFileError(
                f"'{where}': the torchshrink metadata is malformed (module_delta must hold "
                "'changed' module records or attribute changes and a 'removed' list of names)"
            )
    return doc


def _rebuild(doc: dict[str, Any], state: dict[str, torch.Tensor], *, where: str) -> nn.Module:
    from torchshrink.core.filehooks import decode_state

    # Coded tensors (e.g. Huffman-coded weights) are decoded by the codec named in the file.
    state = decode_state(doc, state, where=where)
    try:
        spec = ModelSpec.model_validate(doc.get("spec"))
    except ValidationError as exc:
        raise ModelFileError(f"'{where}': the stored model spec is malformed: {exc}") from None
    if doc.get("hf_config"):
        from torchshrink.core.hfmodel import hf_from_config

        model = hf_from_config(doc["hf_config"], spec.args)
    else:
        from torchshrink.core.modelref import build_from_spec

        model = build_from_spec(spec)
    if doc["modules"] == "spec+delta":  # only the modules that differ from the spec's build
        delta = doc["module_delta"]
        records = expand_delta(record_modules(model), delta["changed"])
        apply_modules(model, records, removed=delta["removed"])
    elif doc["modules"] != "spec":  # "spec": the modules are exactly as the spec builds them
        apply_modules(model, doc["modules"])
    weights = {k: v for k, v in state.items() if not k.startswith(EXTRA_PREFIX) and k != DOC_TENSOR}
    ties = dict(doc.get("ties") or {})
    assign_state(model, weights, ties=ties, where=where)
    restore_ties(model, ties)
    attach_spec(model, spec)
    return model.eval()
