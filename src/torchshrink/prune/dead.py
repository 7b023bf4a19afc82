"""Fold away channels that unstructured pruning left dead: an exact rewrite into a smaller model.

After heavy unstructured pruning some neurons / channels keep no incoming weight at all. Their
output no longer depends on the input: it is a constant (``act(bias)``, through any pooling,
normalization or flattening on the way), which each consumer Linear layer adds as
``W[:, j] * c_j``. :func:`fold_dead_channels` adds that product to the consumer's bias and removes
the channel from its producers and consumers (their weight slices are zero or folded, so the
function is unchanged up to float rounding): fewer parameters, fewer positions to store, and a
smaller dense compute.

A channel is folded only when every producing weight slice of its group is zero, every consumer
is an ``nn.Linear`` with a bias (a convolution would see the constant through zero padding at its
borders, which is not a constant), and its values at the consumers' inputs are measured constant
over two different inputs. The result is checked against the original on the example inputs.

Example:
    >>> import torch
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> with torch.no_grad():
    ...     m[0].weight[1] = 0.0  # neuron 1 has no input left: it outputs relu(bias) always
    >>> small, report = fold_dead_channels(m, torch.randn(2, 4))
    >>> small[0].out_features, small[2].in_features, report.removed
    (2, 2, {'0:out': 1})
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from torchshrink.core.errors import ConfigError
from torchshrink.core.forward import Inputs, batch_size_of, call_model, map_tensors
from torchshrink.graph import Group, dependency_groups
from torchshrink.prune.structured import remove_groups

# Normalizations whose statistics span the channels: a channel cannot leave them exactly.
MIXING_NORMS: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.GroupNorm) + (
    (nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()
)


@dataclass(frozen=True)
class FoldReport:
    """What :func:`fold_dead_channels` did.

    Attributes:
        removed: channels removed per group label (groups with none are left out).
        skipped: why a group with dead channels was left as it is, per group label.
        params_before: parameters of the model given.
        params_after: parameters of the returned model.
        max_abs_diff: largest output difference on the example inputs, returned vs given.
    """

    removed: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    params_before: int = 0
    params_after: int = 0
    max_abs_diff: float = 0.0


def _dead(model: nn.Module, group: Group) -> torch.Tensor:
    """Channels of ``group`` whose every producing weight slice is zero (biases excepted)."""
    alive = torch.zeros(group.size, dtype=torch.bool)
    for e in group.entries:
        if e.role != "out" or e.param == "bias":
            continue
        w = getattr(model.get_submodule(e.module), e.param).detach()
        nonzero = w.movedim(e.dim, 0)[e.index].reshape(len(e.index), -1).ne(0).any(1)
        alive[e.channel[nonzero]] = True
    return ~alive


def _why_not(model: nn.Module, group: Group) -> str | None:
    """Why the channels of ``group`` cannot be folded into its consumers, or ``None``."""
    if not any(e.role == "out" and e.param != "bias" for e in group.entries):
        return "no producing weight"
    for e in group.entries:
        if e.role == "direct":
            return f"'{e.module}.{e.param}' is used directly in forward"
        if e.role == "through" and isinstance(model.get_submodule(e.module), MIXING_NORMS):
            return f"'{e.module}' normalizes the channels together: removing one changes the rest"
        if e.role != "in":
            continue
        m = model.get_submodule(e.module)
        if not isinstance(m, nn.Linear) or e.param != "weight" or e.dim != 1:
            return f"consumer '{e.module}' is a {type(m).__name__}, not a Linear"
        if m.bias is None:
            return f"consumer Linear '{e.module}' has no bias to fold into"
    return None


def _consumer_inputs(model: nn.Module, names: list[str], inputs: Inputs) -> dict[str, torch.Tensor]:
    """Each named Linear's input on ``inputs``, as ``(rows, in_features)``."""
    seen: dict[str, torch.Tensor] = {}

    def hook(name: str):  # type: ignore[no-untyped-def]
        def grab(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            seen[name] = args[0].detach().reshape(-1, args[0].shape[-1])

        return grab

    handles = [model.get_submodule(n).register_forward_pre_hook(hook(n)) for n in names]
    try:
        with torch.no_grad():
            call_model(model, inputs)
    finally:
        for h in handles:
            h.remove()
    return seen


def _perturbed(inputs: Inputs) -> tuple[Inputs, bool]:
    """Other inputs of the same shapes (floating-point tensors get noise), and whether any did."""
    shaken = []

    def shake(x: torch.Tensor) -> torch.Tensor:
        if not x.is_floating_point():
            return x
        shaken.append(True)
        return x + torch.randn_like(x) * (x.std() if x.numel() > 1 else 1.0) + 0.5

    return map_tensors(inputs, shake), bool(shaken)


def _output(model: nn.Module, inputs: Inputs) -> torch.Tensor:
    with torch.no_grad():
        out = call_model(model, inputs)
    if not isinstance(out, torch.Tensor):
        raise ConfigError(f"fold_dead_channels: the model must return a tensor, got {type(out)}")
    return out


def fold_dead_channels(
    model: nn.Module, example_inputs: Inputs, *, rtol: float = 1e-5
) -> tuple[nn.Module, FoldReport]:
    """A copy of ``model`` with its dead channels folded into their consumers' biases.

    Args:
        model: the (pruned) model; it is not changed.
        example_inputs: inputs for tracing the channel dependencies, measuring the dead
            channels' constant values and checking the result (batch of 2+ recommended).
        rtol: largest output difference allowed, relative to the largest output magnitude.

    Returns:
        ``(smaller model in eval mode, FoldReport)``.

    Raises:
        ConfigError: the folded model's output differs from the original by more than
            ``rtol`` (a bug or an unsupported pattern; the original model is untouched).
    """
    other, shaken = _perturbed(example_inputs)
    if not shaken and batch_size_of(example_inputs) < 2:
        raise ConfigError(
            "fold_dead_channels: give a batch of 2+ samples (or floating-point inputs): "
            "a dead channel's constancy is checked on two different inputs"
        )
    model = copy.deepcopy(model).eval()
    before = _output(model, example_inputs)  # also refuses a model that returns no tensor
    n_before = sum(p.numel() for p in model.parameters())
    plan: list[tuple[Group, torch.Tensor]] = []
    removed: dict[str, int] = {}
    skipped: dict[str, str] = {}
    folds: list[tuple[Group, torch.Tensor]] = []
    for group in dependency_groups(model, example_inputs):
        if not group.prunable:
            continue
        dead = _dead(model, group)
        if not dead.any():
            continue
        reason = _why_not(model, group)
        if reason is not None:
            skipped[group.label] = reason
            continue
        if dead.all():  # a layer keeps at least one channel
            dead[0] = False
        folds.append((group, dead))
    if not folds:  # nothing to rewrite: no consumer inputs to measure, no check to run
        return model, FoldReport(removed, skipped, n_before, n_before, 0.0)
    consumers = list(dict.fromkeys(e.module for g, _ in folds for e in g.entries if e.role == "in"))
    seen = _consumer_inputs(model, consumers, example_inputs)
    seen2 = _consumer_inputs(model, consumers, other)
    with torch.no_grad():
        for group, dead in folds:
            ins = [e for e in group.entries if e.role == "in"]
            for e in ins:  # a dead channel must read as one constant everywhere
                x1, x2 = seen[e.module][:, e.index], seen2[e.module][:, e.index]
                ref = x1[:1]
                same = torch.isclose(x1, ref, rtol=1e-6, atol=1e-7).all(0)
                same &= torch.isclose(x2, ref, rtol=1e-6, atol=1e-7).all(0)
                varies = torch.zeros_like(dead)
                varies[e.channel[~same]] = True
                dead &= ~varies
            if not dead.any():
                skipped[group.label] = "its zero-weight channels still vary with the input"
                continue
            for e in ins:
                m = model.get_submodule(e.module)
                pos = e.index[dead[e.channel]]  # consumer input positions of dead channels
                const = seen[e.module][0, pos]  # (positions,)
                m.bias.add_(m.weight[:, pos] @ const.to(m.weight.dtype))  # type: ignore[index, operator, arg-type]
            plan.append((group, torch.nonzero(~dead).reshape(-1)))
            removed[group.label] = int(dead.sum())
    if plan:
        remove_groups(model, plan)
    after = _output(model, example_inputs)
    diff = float((after - before).abs().max()) if before.numel() else 0.0
    scale = float(before.abs().max()) if before.numel() else 0.0
    if diff > rtol * max(scale, 1.0):
        raise ConfigError(
            f"fold_dead_channels: the folded model's output differs by {diff:.3g} (bound "
            f"{rtol * max(scale, 1.0):.3g}); the original model is unchanged"
        )
    n_after = sum(p.numel() for p in model.parameters())
    return model, FoldReport(removed, skipped, n_before, n_after, diff)
