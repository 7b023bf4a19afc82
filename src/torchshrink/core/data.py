"""Data references: one string (``"digits"``, ``"npz:mnist.npz"``, ...) -> a :class:`DataBundle`.

A reference is ``KIND`` or ``KIND:PATH``. Built-in kinds:

==================  ==========================================================================
``digits``          scikit-learn's bundled 8x8 digits (1797 images, 10 classes); the default
``mnist1d``         MNIST-1D generated locally by the ``mnist1d`` package (``(1, 40)`` signals)
``npz:PATH``        a ``.npz`` with ``x_train, y_train, x_test, y_test`` (never unpickled)
``imagefolder:DIR`` ``DIR/train/<class>/*`` + ``DIR/test/<class>/*``, or ``DIR/<class>/*``
``text:PATH``       one sentence per line, for text models
==================  ==========================================================================

A bare path with no kind is accepted too: ``*.npz`` -> ``npz``, ``*.txt`` -> ``text``, an
existing directory -> ``imagefolder``. New kinds are added with :func:`register_data`.

Example:
    >>> from torchshrink.core.data import load_data
    >>> b = load_data("digits", seed=0, limit=100)
    >>> b.input_shape, b.num_classes, len(b.train)
    ((1, 8, 8), 10, 100)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torchshrink.core.databundle import DataBundle
from torchshrink.core.datasets.digits import load_digits_data
from torchshrink.core.datasets.imagefolder import load_imagefolder_data
from torchshrink.core.datasets.mnist1d import load_mnist1d_data
from torchshrink.core.datasets.npz import load_npz_data
from torchshrink.core.datasets.text import load_text_data
from torchshrink.core.errors import DataError
from torchshrink.core.registry import Registry

# Keyword arguments every loader receives from load_data; everything else is a user option.
_STANDARD = ("ref", "seed", "limit")


@dataclass(frozen=True)
class DataKind:
    """One registered kind of data reference.

    Attributes:
        name: the prefix before ``:`` (or the whole reference when ``takes_path`` is False).
        loader: called as ``loader(path, ref=, seed=, limit=, **options)`` when ``takes_path``,
            else ``loader(ref=, seed=, limit=, **options)``; returns a :class:`DataBundle`.
        takes_path: whether the reference is ``name:PATH`` (True) or just ``name`` (False).
        summary: one line shown in help texts.
    """

    name: str
    loader: Callable[..., DataBundle]
    takes_path: bool
    summary: str

    def options(self) -> list[str] | None:
        """Names of the extra keyword options the loader takes (None: it accepts any)."""
        params = inspect.signature(self.loader).parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        return [
            p.name
            for p in params
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in _STANDARD
        ]


DATA_KINDS: Registry[DataKind] = Registry("data kind", error=DataError)


def register_data(
    name: str, *, takes_path: bool, summary: str = ""
) -> Callable[[Callable[..., DataBundle]], Callable[..., DataBundle]]:
    """Decorator that registers a loader as a new kind of data reference.

    Args:
        name: the kind, used as ``name`` or ``name:PATH`` in references.
        takes_path: whether references of this kind carry a path after the colon.
        summary: one line for help texts.

    Example:
        >>> @register_data("toy-doc", takes_path=False, summary="four zero images")
        ... def _toy(*, ref, seed, limit):
        ...     import torch
        ...     from torch.utils.data import TensorDataset
        ...     ds = TensorDataset(torch.zeros(4, 1, 2, 2), torch.zeros(4, dtype=torch.long))
        ...     return DataBundle(ref, ds, ds, num_classes=1, input_shape=(1, 2, 2))
        >>> load_data("toy-doc").input_shape
        (1, 2, 2)
    """

    def deco(loader: Callable[..., DataBundle]) -> Callable[..., DataBundle]:
        DATA_KINDS.register(name)(DataKind(name.lower(), loader, takes_path, summary))
        return loader

    return deco


def data_names() -> list[str]:
    """The registered kinds of data reference, sorted.

    Example:
        >>> {"digits", "npz", "text"} <= set(data_names())
        True
    """
    return DATA_KINDS.names()


def parse_data_ref(ref: str) -> tuple[str, str | None]:
    """Split a reference into ``(kind, path or None)``, inferring the kind of a bare path.

    Example:
        >>> parse_data_ref("npz:/data/a:b.npz"), parse_data_ref("digits"), parse_data_ref("x.txt")
        (('npz', '/data/a:b.npz'), ('digits', None), ('text', 'x.txt'))
    """
    text = ref.strip()
    if not text:
        raise DataError(f"empty data reference; valid kinds: {', '.join(data_names())}")
    kind, sep, rest = text.partition(":")
    if sep and kind.lower() in DATA_KINDS:
        return kind.lower(), rest.strip()
    if not sep and text.lower() in DATA_KINDS:
        return text.lower(), None
    suffix = Path(text).suffix.lower()
    if suffix == ".npz":
        return "npz", text
    if suffix == ".txt":
        return "text", text
    if Path(text).expanduser().is_dir():
        return "imagefolder", text
    return kind.lower(), rest if sep else None  # DATA_KINDS.get will list the valid kinds


def load_data(ref: str, *, seed: int = 0, limit: int | None = None, **options: Any) -> DataBundle:
    """Resolve a data reference into a :class:`DataBundle` of train / test splits.

    Args:
        ref: ``"digits"``, ``"mnist1d"``, ``"npz:PATH"``, ``"imagefolder:DIR"``, ``"text:PATH"``,
            a kind added with :func:`register_data`, or a bare ``.npz`` / ``.txt`` / folder path.
        seed: fixes every random choice (split, shuffle); the same seed gives the same data.
        limit: keep only the first ``limit`` samples of each split after the seeded shuffle.
        **options: source-specific options, e.g. ``num_samples`` (mnist1d), ``layout`` (npz),
            ``size`` / ``mode`` (imagefolder), ``test_fraction`` (digits, imagefolder, text).

    Returns:
        The bundle; ``bundle.name`` is ``ref``.

    Raises:
        DataError: unknown kind (the message lists the valid ones), missing file, bad option,
            unreadable or malformed data. EmptyDataError (a DataError) for data with no samples.

    Example:
        >>> b = load_data("mnist1d", num_samples=100, seed=1)
        >>> b.input_shape, len(b.train), len(b.test)
        ((1, 40), 80, 20)
    """
    kind_name, path = parse_data_ref(ref)
    kind = DATA_KINDS.get(kind_name)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DataError(f"data '{ref}': limit must be a positive integer, got {limit!r}")
    valid = kind.options()
    if valid is not None:
        unknown = sorted(set(options) - set(valid))
        if unknown:
            raise DataError(
                f"data '{ref}': unknown option '{unknown[0]}' for kind '{kind.name}'; "
                f"valid options: {', '.join(valid) or 'none'}"
            )
    if kind.takes_path:
        if not path:
            raise DataError(f"data '{ref}': kind '{kind.name}' needs a path: '{kind.name}:PATH'")
        return kind.loader(path, ref=ref, seed=seed, limit=limit, **options)
    if path is not None:
        raise DataError(f"data '{ref}': kind '{kind.name}' takes no path; use '{kind.name}'")
    return kind.loader(ref=ref, seed=seed, limit=limit, **options)


register_data("digits", takes_path=False, summary="scikit-learn's 8x8 digits (1797 images)")(
    load_digits_data
)
register_data("mnist1d", takes_path=False, summary="MNIST-1D generated locally, (1, 40) signals")(
    load_mnist1d_data
)
register_data("npz", takes_path=True, summary="npz:PATH with x_train, y_train, x_test, y_test")(
    load_npz_data
)
register_data("imagefolder", takes_path=True, summary="imagefolder:DIR of class folders")(
    load_imagefolder_data
)
register_data("text", takes_path=True, summary="text:PATH, one sentence per line")(load_text_data)
