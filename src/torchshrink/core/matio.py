"""Octave / MATLAB interchange: weights by parameter name to and from ``.mat`` files.

Names. MATLAB variable names cannot contain dots and must start with a letter, so a
state-dict key maps to a variable by replacing every ``.`` with ``_`` and prefixing ``p_``
when the result does not start with a letter: ``fc1.weight`` <-> ``fc1_weight``,
``0.weight`` <-> ``p_0_weight``. Two keys that map to the same variable are an error, never
a silent overwrite. Names longer than MATLAB's 63 characters are refused.

Shapes must match exactly, with only what MATLAB cannot store forgiven: a 1-D tensor of ``n``
values is a ``1 x n`` (or ``n x 1``) matrix, a scalar is ``1 x 1``, and trailing singleton
dimensions may be missing (Octave drops them: a ``(64, 32, 1, 1)`` conv weight saved there
reads back as ``64 x 32``). A transposed matrix is refused (the message says so): transpose
it in Octave before saving.

Extras written by :func:`export_mat` sit in structs whose fields are the weights' variable
names: ``masks`` (logical keep-masks), ``codebooks`` (cluster centroids), ``indices``
(1-based cluster index per weight, ``0`` for a pruned zero, so in Octave
``W(idx > 0) = cb(idx(idx > 0))``) and ``scales`` (quantization scales); the char variable
``torchshrink`` holds JSON with the format version and the name map. :func:`import_mat` reads
only numeric arrays (and the reserved structs it wrote): MATLAB objects, cells, function
handles or unexpected structs are refused. ``scipy.io.loadmat`` itself never runs code.

``scipy`` is imported lazily (the ``mat`` extra).

Example:
    >>> from torch import nn
    >>> m = nn.Linear(3, 2)
    >>> export_mat(m, "/tmp/lin.mat").variables
    ('weight', 'bias')
    >>> import_mat(nn.Linear(3, 2), "/tmp/lin.mat").loaded
    ('weight', 'bias')
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from torchshrink.core.errors import ConfigError, ModelFileError, ShapeError, require

FORMAT_VERSION = 1
EXTRAS = ("masks", "codebooks", "indices", "scales")
META = "torchshrink"
RESERVED = (*EXTRAS, META)
MAX_NAME = 63  # MATLAB's namelengthmax
_VALID = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def mat_name(key: str) -> str:
    """The MATLAB variable name of a state-dict key.

    Example:
        >>> mat_name("fc1.weight"), mat_name("0.bias")
        ('fc1_weight', 'p_0_bias')
    """
    name = key.replace(".", "_")
    return name if name[:1].isalpha() else f"p_{name}"


def _name_map(keys: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    seen: dict[str, str] = {}
    for key in keys:
        name = mat_name(key)
        if not _VALID.fullmatch(name) or len(name) > MAX_NAME:
            raise ConfigError(
                f"tensor '{key}' maps to the MATLAB name '{name}', which is not a valid "
                f"variable name (letters, digits, '_', at most {MAX_NAME} characters)"
            )
        if name in RESERVED:
            raise ConfigError(f"tensor '{key}' maps to '{name}', a name reserved for extras")
        if name in seen:
            raise ConfigError(
                f"tensors '{seen[name]}' and '{key}' both map to the MATLAB name '{name}'"
            )
        seen[name] = key
        out[key] = name
    return out


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    # Floating-point parameters and buffers: what a MATLAB user trains (not counters).
    return {k: v for k, v in model.state_dict().items() if v.is_floating_point()}


@dataclass(frozen=True)
class MatExport:
    """What :func:`export_mat` wrote.

    Attributes:
        path: the file.
        variables: the weights' variable names, in state-dict order.
        extras: the extra structs written (``masks``, ``codebooks``, ``indices``, ``scales``).
        names: state-dict key -> variable name.
    """

    path: Path
    variables: tuple[str, ...]
    extras: tuple[str, ...]
    names: dict[str, str]


def _np(t: Any) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu()
        return (t.float() if t.dtype in (torch.float16, torch.bfloat16) else t).numpy()
    return np.asarray(t)


def _struct(
    what: str, values: Mapping[str, Any], names: Mapping[str, str]
) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"{what}: '{key}' is not a floating-point tensor of the model")
        out[names[key]] = _np(value)
    return out


def export_mat(
    model: nn.Module,
    path: str | Path,
    *,
    masks: Mapping[str, torch.Tensor] | None = None,
    codebooks: Mapping[str, Any] | None = None,
    scales: Mapping[str, torch.Tensor | float] | None = None,
) -> MatExport:
    """Write the model's floating-point tensors (and optional extras) to a ``.mat`` file.

    Args:
        model: the model (not changed).
        path: the ``.mat`` file to write (MATLAB v5 format, readable by Octave and MATLAB).
        masks: ``{key: bool keep-mask}``, saved as logical arrays.
        codebooks: ``{key: assignment}`` where an assignment has ``codebook`` ``(k,)`` and
            ``labels`` (0-based, ``-1`` for pruned) attributes (what
            :func:`torchshrink.cluster.finetune.assignments_from_model` returns) or is a
            ``(codebook, labels)`` pair; saved as ``codebooks`` and 1-based ``indices``.
        scales: ``{key: scale tensor or float}`` quantization scales.

    Raises:
        ConfigError: a key that is not a floating-point tensor of the model, or a name that
            cannot be a MATLAB variable.
        MissingDependencyError: scipy is not installed.

    Example:
        >>> m = nn.Linear(2, 1)
        >>> export_mat(m, "/tmp/m.mat", masks={"weight": m.weight != 0}).extras
        ('masks',)
    """
    sio: Any = require("scipy.io", "mat")
    tensors = _tensors(model)
    names = _name_map(list(tensors))
    doc: dict[str, Any] = {n: _np(tensors[k]) for k, n in names.items()}
    extras: list[str] = []
    if masks:
        doc["masks"] = {n: v.astype(bool) for n, v in _struct("masks", masks, names).items()}
        extras.append("masks")
    if codebooks:
        books: dict[str, Any] = {}
        idx: dict[str, Any] = {}
        for key, a in codebooks.items():
            cb, labels = (a.codebook, a.labels) if hasattr(a, "codebook") else a
            lab = _np(labels).astype(np.int64) + 1  # MATLAB indexes from 1; 0 = pruned
            books[key] = cb
            idx[key] = lab.astype(np.uint8 if lab.max(initial=0) < 256 else np.uint32)
        doc["codebooks"] = _struct("codebooks", books, names)
        doc["indices"] = _struct("indices", idx, names)
        extras += ["codebooks", "indices"]
    if scales:
        doc["scales"] = _struct("scales", scales, names)
        extras.append("scales")
    doc[META] = json.dumps(
        {
            "format": FORMAT_VERSION,
            "names": {n: k for k, n in names.items()},
            "shapes": {k: list(tensors[k].shape) for k in names},
        }
    )
    path = Path(path)
    try:
        sio.savemat(path, doc, long_field_names=True, do_compression=True, oned_as="row")
    except OSError as exc:
        raise ModelFileError(f"cannot write '{path}': {exc}") from None
    return MatExport(path, tuple(names.values()), tuple(extras), names)


def _read(path: Path) -> dict[str, Any]:
    sio: Any = require("scipy.io", "mat")
    if not path.is_file():
        raise ModelFileError(f"no .mat file at '{path}'")
    try:
        # No squeeze_me / simplify_cells: keep every array as MATLAB stored it (>= 2-D).
        return dict(sio.loadmat(path, struct_as_record=True, mat_dtype=False))
    except NotImplementedError:
        raise ModelFileError(
            f"'{path}' is a MATLAB v7.3 (HDF5) file; save it with -v7 (or -v6) in Octave/MATLAB"
        ) from None
    except (ValueError, TypeError, OSError) as exc:
        raise ModelFileError(f"'{path}' is not a readable .mat file: {exc}") from None


def _numeric(path: Path, name: str, value: Any) -> np.ndarray:
    kind = getattr(getattr(value, "dtype", None), "kind", "O")
    if not isinstance(value, np.ndarray) or kind not in "biuf":
        what = {"O": "a cell, object or function handle", "V": "a struct"}.get(kind, kind)
        raise ModelFileError(
            f"'{path}': variable '{name}' is {what}, expected a real numeric array"
        )
    return value


def _fits(value_shape: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    if value_shape == shape:
        return True
    if len(shape) <= 1:  # MATLAB stores vectors and scalars as 1 x n / n x 1 matrices
        n = shape[0] if shape else 1
        return value_shape in ((1, n), (n, 1))

    def strip(s: tuple[int, ...]) -> tuple[int, ...]:
        while len(s) > 2 and s[-1] == 1:
            s = s[:-1]
        return s

    return strip(value_shape) == strip(shape)


@dataclass(frozen=True)
class MatImport:
    """What :func:`import_mat` did.

    Attributes:
        loaded: state-dict keys whose values came from the file.
        missing: floating-point tensors of the model the file lacks (only when not strict).
        unexpected: variables of the file that match no tensor (only when not strict).
    """

    loaded: tuple[str, ...]
    missing: tuple[str, ...]
    unexpected: tuple[str, ...]


@torch.no_grad()
def import_mat(model: nn.Module, path: str | Path, *, strict: bool = True) -> MatImport:
    """Load weights from a ``.mat`` file into ``model`` **in place**, by parameter name.

    Args:
        model: the model; its floating-point parameters and buffers are overwritten.
        path: a MATLAB v5 / v7 ``.mat`` file (Octave: ``save -v7``).
        strict: every floating-point tensor of the model must be in the file and every
            variable of the file must match one (reserved extras aside); with ``False``
            missing and unexpected names are reported instead.

    Raises:
        ModelFileError: no such file, unreadable or v7.3, or a weight variable that is not a
            real numeric array.
        ShapeError: shape mismatches (all listed), or, when strict, missing / unexpected names.
        ConfigError: two tensors of the model map to the same variable name.
        MissingDependencyError: scipy is not installed.

    Example:
        >>> m = nn.Linear(3, 2)
        >>> _ = export_mat(m, "/tmp/lin.mat")
        >>> import_mat(nn.Linear(3, 3), "/tmp/lin.mat")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        torchshrink.core.errors.ShapeError: ...: 'weight' (variable 'weight') has shape (2, 3), expected (3, 3)...
    """
    path = Path(path)
    raw = _read(path)
    variables = {k: v for k, v in raw.items() if not k.startswith("__")}
    tensors = _tensors(model)
    names = _name_map(list(tensors))
    for extra in RESERVED:
        value = variables.pop(extra, None)
        if value is not None and extra in EXTRAS and getattr(value.dtype, "names", None) is None:
            raise ModelFileError(f"'{path}': variable '{extra}' must be a struct of arrays")
    missing = [k for k, n in names.items() if n not in variables]
    unexpected = sorted(set(variables) - set(names.values()))
    problems: list[str] = []
    values: dict[str, np.ndarray] = {}
    for key, name in names.items():
        if name not in variables:
            continue
        value = _numeric(path, name, variables[name])
        shape = tuple(tensors[key].shape)
        if not _fits(tuple(value.shape), shape):
            hint = " (its transpose: transpose it before saving)" if value.T.shape == shape else ""
            problems.append(
                f"'{key}' (variable '{name}') has shape {tuple(value.shape)}, expected {shape}{hint}"
            )
        values[key] = value
    if strict and missing:
        listed = ", ".join(f"'{k}' (variable '{names[k]}')" for k in missing)
        problems.append(f"missing from the file: {listed}")
    if strict and unexpected:
        problems.append(f"variables matching no tensor: {', '.join(unexpected)}")
    if problems:
        raise ShapeError(
            f"cannot import '{path}' into {type(model).__name__}: " + "; ".join(problems)
        )
    state = model.state_dict()
    for key, value in values.items():
        target = state[key]
        target.copy_(torch.from_numpy(np.ascontiguousarray(value)).reshape(target.shape))
    return MatImport(tuple(values), tuple(missing), tuple(unexpected))


@dataclass(frozen=True)
class MatContents:
    """Everything in a ``.mat`` file written by :func:`export_mat`, keyed by state-dict key.

    Attributes:
        weights: the tensors.
        masks / codebooks / indices / scales: the extras (indices 0-based again, ``-1`` for
            a pruned zero), empty when absent.
    """

    weights: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    codebooks: dict[str, torch.Tensor]
    indices: dict[str, torch.Tensor]
    scales: dict[str, torch.Tensor]


def read_mat(path: str | Path) -> MatContents:
    """Read weights and extras of a ``.mat`` file without a model.

    Names are mapped back through the file's ``torchshrink`` name map; variables of a file
    written elsewhere keep their MATLAB names.

    Raises:
        ModelFileError: see :func:`import_mat`.

    Example:
        >>> _ = export_mat(nn.Linear(3, 2), "/tmp/lin.mat")
        >>> sorted(read_mat("/tmp/lin.mat").weights)
        ['bias', 'weight']
    """
    path = Path(path)
    raw = _read(path)
    back: dict[str, str] = {}
    shapes: dict[str, list[int]] = {}
    meta = raw.get(META)
    if isinstance(meta, np.ndarray) and meta.dtype.kind == "U" and meta.size:
        try:
            doc = json.loads(str(meta.reshape(-1)[0]))
            back, shapes = dict(doc.get("names", {})), dict(doc.get("shapes", {}))
        except (ValueError, AttributeError):
            raise ModelFileError(f"'{path}': the '{META}' variable is not valid JSON") from None

    def tensor(name: str, value: Any) -> torch.Tensor:
        t = torch.from_numpy(np.array(_numeric(path, name, value)))
        shape = shapes.get(back.get(name, name))
        # The stored shapes undo MATLAB's 1 x n vectors and dropped trailing singletons.
        return t.reshape(shape) if shape is not None and t.numel() == np.prod(shape) else t

    weights = {
        back.get(n, n): tensor(n, v)
        for n, v in raw.items()
        if not n.startswith("__") and n not in RESERVED
    }
    extras: dict[str, dict[str, torch.Tensor]] = {e: {} for e in EXTRAS}
    for extra in EXTRAS:
        value = raw.get(extra)
        if value is None:
            continue
        if getattr(value.dtype, "names", None) is None or value.size != 1:
            raise ModelFileError(f"'{path}': variable '{extra}' must be a struct of arrays")
        for field in value.dtype.names:
            t = tensor(field, value[field].reshape(-1)[0])
            if extra == "indices":
                t = t.long() - 1
            elif extra == "masks":
                t = t.bool()
            elif extra in ("codebooks", "scales"):
                t = t.reshape(-1) if t.dim() == 2 and 1 in t.shape else t
            extras[extra][back.get(field, field)] = t
    return MatContents(weights, **extras)
