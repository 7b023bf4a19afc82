"""Build one candidate from the baseline and measure it: validation accuracy and the objective.

The candidate is built by the recipe stages of :meth:`SearchSpace.stages` through the same
stage functions ``compress`` runs, on a search bundle whose "test" split is a validation
subset of the training split: the real test split is never seen during the search.

With a ``distill`` setting the candidate's pruning fine-tune also learns the dense
baseline's soft targets: the prune stages carry ``distill`` (:func:`with_distill`).

Example:
    >>> import torchshrink
    >>> data = torchshrink.load_data("digits")
    >>> s = search_data(data, val_size=300, train_size=None, seed=0)
    >>> len(s.test), len(s.train) + len(s.test) == len(data.train)
    (300, True)
    >>> val, rest = holdout_split(len(data.train), val_size=300, seed=0)
    >>> sorted(val) == sorted(s.test.indices)
    True
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Subset

from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import DataError
from torchshrink.distill.distiller import DistillConfig


@dataclass(frozen=True)
class CandidateResult:
    """What one candidate measured.

    Attributes:
        accuracy: top-1 accuracy on the validation subset.
        objective_value: bytes (size), median milliseconds (latency) or millijoules per
            sample (energy).
        file_bytes: bytes of the candidate's model file (coded file for ``size``).
        nonzero_params: non-zero parameters.
        macs: multiply-accumulates of one sample (``None`` unless the objective is energy).
        latency_ms: measured median latency (``None`` unless the objective is latency).
        energy_mj: the profile's energy estimate per sample (``None`` unless energy).
        seconds: wall time to build and measure it.
    """

    accuracy: float
    objective_value: float
    file_bytes: int
    nonzero_params: int
    macs: int | None
    latency_ms: float | None
    energy_mj: float | None
    seconds: float


def holdout_split(n: int, *, val_size: int, seed: int) -> tuple[list[int], list[int]]:
    """The training-split indices ``auto`` holds out for validation, and the rest.

    Deterministic in ``(n, val_size, seed)``: the same ``seed`` as :class:`AutoConfig`'s gives
    the validation part of that search, e.g. to train its baseline without it.

    Example:
        >>> val, rest = holdout_split(10, val_size=3, seed=0)
        >>> len(val), len(rest), sorted(val + rest) == list(range(10))
        (3, 7, True)
    """
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return perm[:val_size], perm[val_size:]


def search_data(
    data: DataBundle, *, val_size: int, train_size: int | None, seed: int
) -> DataBundle:
    """A bundle for the search: ``train`` and ``test`` are disjoint parts of ``data.train``.

    The validation part is :func:`holdout_split`'s, so a caller can train a baseline on the
    other samples only (a baseline that saw the validation part would inflate its score).

    Raises:
        DataError: the training split is too small to hold out ``val_size`` samples.
    """
    n = len(data.train)  # type: ignore[arg-type]
    if val_size >= n:
        raise DataError(
            f"auto: val_size={val_size} leaves no training samples (the training split of "
            f"'{data.name}' has {n}); lower --val-size"
        )
    val_idx, train_idx = holdout_split(n, val_size=val_size, seed=seed)
    if train_size is not None:
        train_idx = train_idx[:train_size]
    return replace(
        data,
        name=f"{data.name}[search]",
        train=Subset(data.train, train_idx),
        test=Subset(data.train, val_idx),
        meta={**data.meta, "val_size": len(val_idx), "search_train_size": len(train_idx)},
    )


def with_distill(
    stages: list[dict[str, Any]], distill: DistillConfig | None
) -> list[dict[str, Any]]:
    """``stages`` with ``distill`` set on every prune stage that fine-tunes.

    The pruning fine-tune then also learns the dense baseline's soft targets (the prune stage's
    ``distill``, see :class:`torchshrink.pipeline.recipe.PruneStage`). A one-shot prune
    followed by a plain ``finetune`` stage is left alone, and so is the centroid fine-tune:
    its per-cluster gradient is the *sum* over the cluster's weights (Han et al.), and the soft
    targets' gradient, unlike the labels' once the model is right, does not vanish; summed
    over ~50,000 weights a cluster it wrecked LeNet-5 (3-bit dense fc1: 7.7% after one
    epoch at lr 1e-3 with alpha 0.7, T 4; 99.2% from the labels alone).

    Example:
        >>> s = with_distill([{"kind": "prune", "config": {"ratio": 0.5, "finetune": {}}},
        ...                   {"kind": "export"}], DistillConfig(alpha=0.7))
        >>> s[0]["distill"]["alpha"], "distill" in s[1]
        (0.7, False)
    """
    if distill is None:
        return list(stages)
    doc = distill.model_dump(mode="json")
    return [
        {**s, "distill": doc}
        if s.get("kind") == "prune" and (s.get("config") or {}).get("finetune") is not None
        else s
        for s in stages
    ]


def build_candidate(
    baseline_path: Path,
    stages: list[dict[str, Any]],
    data: DataBundle,
    *,
    work_dir: Path,
    distill: DistillConfig | None = None,
) -> tuple[nn.Module, Path | None, list[dict[str, Any]]]:
    """Run ``stages`` on the baseline model file; return the model, its coded file and details.

    Every stage runs through the recipe stage functions ``compress`` uses; ``distill`` is put
    into the prune stages that fine-tune (:func:`with_distill`), whose teacher is the
    baseline file.

    Example:
        See :func:`evaluate_candidate`.
    """
    import torchshrink
    from torchshrink.pipeline.recipe import recipe_from_dict
    from torchshrink.pipeline.stages import StageContext, run_stage

    work_dir.mkdir(parents=True, exist_ok=True)
    recipe = recipe_from_dict(
        {"model": str(baseline_path), "data": data.name, "stages": with_distill(stages, distill)}
    )
    ctx = StageContext(recipe=recipe, data=data, out_dir=work_dir, baseline_path=baseline_path)
    model = torchshrink.load(baseline_path)
    file_path: Path | None = None
    details_list = []
    for stage in recipe.stages:
        model, details = run_stage(stage, model, ctx)
        details_list.append({"kind": stage.kind, **details})
        if "file_path" in details:
            file_path = Path(details["file_path"])
    return model, file_path, details_list


def evaluate_candidate(
    baseline_path: Path,
    stages: list[dict[str, Any]],
    data: DataBundle,
    *,
    objective: str,
    work_dir: Path,
    latency_repeats: int = 30,
    distill: DistillConfig | None = None,
) -> CandidateResult:
    """Build the candidate from the baseline model file with ``stages`` and measure it.

    Args:
        baseline_path: the trained model file every candidate starts from.
        stages: recipe stage dicts (see :meth:`SearchSpace.stages`).
        data: the search bundle from :func:`search_data` (its ``test`` is the validation part).
        objective: ``"size"``, ``"latency"`` or ``"energy"``.
        work_dir: a folder for this candidate's files (the coded model file).
        latency_repeats: timed forward passes (median reported).
        distill: distil from the baseline during the fine-tunes (see :func:`build_candidate`).

    Example:
        See :func:`torchshrink.auto.run_auto`.
    """
    import torchshrink
    from torchshrink.measure.accuracy import evaluate
    from torchshrink.measure.latency import measure_latency
    from torchshrink.measure.profile import profile

    t0 = time.perf_counter()
    model, file_path, _ = build_candidate(
        baseline_path, stages, data, work_dir=work_dir, distill=distill
    )
    if file_path is None:
        file_path = torchshrink.save(model, work_dir / "model.safetensors")
    acc = evaluate(model, data.loader("test", batch_size=256)).accuracy
    x = data.example_inputs(1)  # (1, *input_shape)
    file_bytes = file_path.stat().st_size
    nonzero = sum(int(torch.count_nonzero(p)) for p in model.parameters())
    latency: float | None = None
    energy: float | None = None
    macs: int | None = None
    # Only what the objective needs: counting MACs traces the model (and imports
    # torch._dynamo, seconds per process), which size and latency do not need.
    if objective == "latency":
        latency = measure_latency(model, x, repeats=latency_repeats).p50_ms
    elif objective == "energy":
        prof = profile(model, x, measure_latency=False, measure_memory=False, file_path=file_path)
        energy, macs = prof.energy_mj_per_sample, prof.macs
    value = {"size": float(file_bytes), "latency": latency, "energy": energy}[objective]
    assert value is not None  # measured just above for this objective
    return CandidateResult(
        accuracy=acc,
        objective_value=float(value),
        file_bytes=file_bytes,
        nonzero_params=nonzero,
        macs=macs,
        latency_ms=latency,
        energy_mj=energy,
        seconds=time.perf_counter() - t0,
    )
