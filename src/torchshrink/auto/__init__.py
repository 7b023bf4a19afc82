"""Automatic compression under an accuracy budget: a per-layer search with optuna.

Example:
    >>> from torchshrink.auto import AutoConfig
    >>> AutoConfig(model="zoo:lenet5", data="digits").objective
    'size'
"""

from torchshrink.auto.config import AutoConfig
from torchshrink.auto.result import AutoResult
from torchshrink.auto.run import BudgetNotMetError, run_auto
from torchshrink.auto.search import pareto_front
from torchshrink.auto.space import SearchSpace, build_space

__all__ = [
    "AutoConfig",
    "AutoResult",
    "BudgetNotMetError",
    "SearchSpace",
    "build_space",
    "pareto_front",
    "run_auto",
]
