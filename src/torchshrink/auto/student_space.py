"""The search space of a student search: ``width`` / ``depth`` multipliers of one zoo family.

Which multipliers a family takes is read from its factory's signature (``lenet5``: ``width``;
``lenet300``: ``width`` and ``depth``), so a family gains a searchable axis by growing the
keyword, not by being listed here.

Example:
    >>> space = build_student_space("zoo:lenet300", widths=(0.25, 0.5), depths=(1.0,))
    >>> space.axes
    {'width': (0.25, 0.5), 'depth': (1.0,)}
    >>> space.model_args({"width": 0.5, "depth": 1.0})
    {'width': 0.5, 'depth': 1.0}
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Any

from torchshrink.core.errors import ConfigError

MULTIPLIERS = ("width", "depth")


@dataclass(frozen=True)
class StudentSpace:
    """The multiplier choices of one family.

    Attributes:
        family: the student family, ``zoo:NAME``.
        axes: ``{"width": choices, "depth": choices}``, only the multipliers the family takes.

    Example:
        >>> StudentSpace("zoo:lenet5", {"width": (0.5, 1.0)}).size
        2
    """

    family: str
    axes: dict[str, tuple[float, ...]]

    @property
    def size(self) -> int:
        """Number of distinct candidates."""
        return math.prod(len(v) for v in self.axes.values())

    def suggest(self, trial: Any) -> dict[str, float]:
        """Draw one candidate's multipliers from an optuna trial (parameter names as ``axes``)."""
        return {k: float(trial.suggest_categorical(k, list(v))) for k, v in self.axes.items()}

    def model_args(self, params: dict[str, Any]) -> dict[str, float]:
        """The factory options of the candidate ``params`` describes."""
        return {k: float(params[k]) for k in self.axes}

    def starting_points(self, limit: int) -> list[dict[str, float]]:
        """Up to ``limit`` spread-out candidates to start the study with.

        The middle width, then the smallest, then one about three quarters of the way up, each
        at the depth nearest 1.0: a two- or three-trial search still brackets the answer.

        Example:
            >>> StudentSpace("zoo:lenet5", {"width": (0.125, 0.25, 0.5, 1.0)}).starting_points(3)
            [{'width': 0.25}, {'width': 0.125}, {'width': 1.0}]
        """
        widths = self.axes.get("width", (1.0,))
        n = len(widths)
        picks = dict.fromkeys([widths[(n - 1) // 2], widths[0], widths[(3 * n) // 4]])
        out: list[dict[str, float]] = []
        for w in list(picks)[:limit]:
            point: dict[str, float] = {}
            if "width" in self.axes:
                point["width"] = w
            if "depth" in self.axes:
                point["depth"] = min(self.axes["depth"], key=lambda d: abs(d - 1.0))
            out.append(point)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (stored in the study, so every worker searches the same space)."""
        return {"family": self.family, "axes": {k: list(v) for k, v in self.axes.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudentSpace:
        """Inverse of :meth:`to_dict`."""
        axes = {k: tuple(float(x) for x in v) for k, v in d["axes"].items()}
        return cls(family=d["family"], axes=axes)


def family_multipliers(family: str) -> tuple[str, ...]:
    """The multipliers (``width``, ``depth``) the zoo family's factory takes.

    Raises:
        ConfigError: ``family`` is not ``zoo:NAME``, or the factory takes no multiplier.
        UnknownModelError: no zoo model of that name (the message lists the valid ones).

    Example:
        >>> family_multipliers("zoo:lenet300")
        ('width', 'depth')
    """
    from torchshrink.core.zoo import ZOO, zoo_names

    if not family.startswith("zoo:"):
        raise ConfigError(
            f"auto --student: expected a zoo family such as 'zoo:lenet5', got {family!r}"
        )
    names = zoo_names()  # registers every zoo model
    factory = ZOO.get(family[4:])
    params = inspect.signature(factory).parameters
    found = tuple(m for m in MULTIPLIERS if m in params)
    if not found:
        able = [n for n in names if any(m in inspect.signature(ZOO.get(n)).parameters
                                        for m in MULTIPLIERS)]  # fmt: skip
        raise ConfigError(
            f"auto --student: {family} takes no width / depth multiplier; families that do: "
            f"{', '.join('zoo:' + n for n in able)}"
        )
    return found


def check_multipliers(name: str, values: tuple[float, ...]) -> tuple[float, ...]:
    """Sorted, de-duplicated ``values``; each must be a finite number above 0.

    Raises:
        ConfigError: an empty list, or a value that is 0, negative, not finite or not a number.

    Example:
        >>> check_multipliers("widths", (1.0, 0.5, 0.5))
        (0.5, 1.0)
    """
    if not values:
        raise ConfigError(f"auto --student: '{name}' is empty; give at least one multiplier")
    for v in values:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool)
        if not ok or not math.isfinite(v) or v <= 0:
            raise ConfigError(
                f"auto --student: every multiplier in '{name}' must be a positive number "
                f"(e.g. 0.5), got {v!r}"
            )
    return tuple(sorted({float(v) for v in values}))


def build_student_space(
    family: str, *, widths: tuple[float, ...], depths: tuple[float, ...]
) -> StudentSpace:
    """The space of ``family`` with the given multiplier grids (only the axes it takes).

    Raises:
        ConfigError: a bad multiplier or a family without multipliers.
    """
    grids = {
        "width": check_multipliers("widths", widths),
        "depth": check_multipliers("depths", depths),
    }
    return StudentSpace(family, {m: grids[m] for m in family_multipliers(family)})
