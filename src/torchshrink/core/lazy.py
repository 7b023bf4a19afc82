"""Lazy package attributes and callable packages.

Several families are named by a verb that is also their package: ``torchshrink.train`` is both
the package and the training function, likewise ``prune`` and ``quantize``. Importing any
submodule (``torchshrink.train.config``) rebinds the attribute on the parent package to the
*package*, so the package itself must be callable and forward to the function.

Example:
    >>> import torchshrink
    >>> import torchshrink.train.config
    >>> callable(torchshrink.train)
    True
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable
from typing import Any


def make_callable(package: str, target: str) -> None:
    """Make the (already imported) module ``package`` callable, forwarding to ``target``.

    Args:
        package: the package's ``__name__``.
        target: ``"module.path:function"``, imported on the first call.
    """
    mod_name, func_name = target.split(":")

    def __call__(self: types.ModuleType, *args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(mod_name), func_name)(*args, **kwargs)

    cls = type(f"CallablePackage[{package}]", (types.ModuleType,), {"__call__": __call__})
    sys.modules[package].__class__ = cls


def lazy_exports(
    package: str, names: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a package whose public names load on first use.

    Args:
        package: the package's ``__name__``.
        names: public name -> submodule of ``package`` that defines it.
    """

    def __getattr__(name: str) -> Any:
        sub = names.get(name)
        if sub is None:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        return getattr(importlib.import_module(f"{package}.{sub}"), name)

    def __dir__() -> list[str]:
        return sorted(names)

    return __getattr__, __dir__
