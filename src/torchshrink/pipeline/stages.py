"""One function per recipe stage kind: take a model, return the (new) model and a few details.

A stage composes the family's public call; it never measures (the runner profiles after every
stage). Adding a kind means a stage model in :mod:`torchshrink.pipeline.recipe` and an entry in
``_RUNNERS`` here; the runner itself does not change.

Example:
    >>> import torchshrink
    >>> from torchshrink.pipeline.recipe import Recipe
    >>> r = Recipe(model="zoo:lenet300", model_args={"input_size": 8}, data_limit=64,
    ...            stages=[{"kind": "prune", "config": {"ratio": 0.5}}])
    >>> ctx = StageContext(recipe=r, data=torchshrink.load_data("digits", limit=64),
    ...                    out_dir=Path("/tmp"), baseline_path=Path("/tmp/none"))
    >>> m = torchshrink.load_model("zoo:lenet300", model_args={"input_size": 8})
    >>> _, details = run_stage(r.stages[0], m, ctx)
    >>> round(1 - details["nonzero_after"] / details["nonzero_before"], 1)
    0.5
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchshrink.core.databundle import DataBundle
from torchshrink.pipeline.recipe import (
    ClusterStage,
    DistillStage,
    ExportStage,
    FactorizeStage,
    FinetuneStage,
    PruneStage,
    QuantizeStage,
    Recipe,
)
from torchshrink.prune.config import PruneConfig
from torchshrink.train.hooks import TrainHook


@dataclass(frozen=True)
class StageContext:
    """What every stage may use besides the model."""

    recipe: Recipe
    data: DataBundle
    out_dir: Path
    baseline_path: Path

    def example_inputs(self, batch_size: int = 8) -> torch.Tensor:
        return next(iter(self.data.loader("test", batch_size=batch_size)))[0]  # (B, *shape)


def run_stage(stage: Any, model: nn.Module, ctx: StageContext) -> tuple[nn.Module, dict[str, Any]]:
    """Run one stage on ``model`` (possibly in place) and return the model and its details."""
    return _RUNNERS[stage.kind](stage, model, ctx)


def _scalars(obj: Any) -> dict[str, Any]:
    # keep only the JSON-friendly scalars of a result dataclass: run.json stays small
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return {}
    return {
        f.name: getattr(obj, f.name)
        for f in dataclasses.fields(obj)
        if isinstance(getattr(obj, f.name), (int, float, str, bool))
    }


def _prune(stage: PruneStage, model: nn.Module, ctx: StageContext) -> tuple[nn.Module, dict]:
    from torchshrink.prune.pruner import prune

    table = None
    if stage.sensitivity:
        from torchshrink.prune.sensitivity import sensitivity

        cfg = stage.config
        table = sensitivity(
            model, ctx.data, example_inputs=ctx.example_inputs(), ratios=stage.sensitivity,
            granularity=cfg.granularity if cfg.granularity != "nm" else "unstructured",
            method=cfg.method, seed=ctx.recipe.seed,
        )  # fmt: skip
    cfg, terms = (stage.config, []) if stage.distill is None else _distill_terms(stage, model, ctx)
    try:
        result = prune(
            model, cfg, example_inputs=ctx.example_inputs(), data=ctx.data, loss_terms=terms
        )
    finally:
        for term in terms:  # the feature terms hold forward hooks on the model
            getattr(term, "close", lambda: None)()
    details = {**_scalars(result), "sparsity": float(result.sparsity)}
    if stage.distill is not None:
        details["distilled"] = True
    if table is not None:
        details["sensitivity"] = table.to_dict()
    return model, details


def _distill_terms(
    stage: PruneStage, model: nn.Module, ctx: StageContext
) -> tuple[PruneConfig, list[Any]]:
    """The prune config with its hard-label loss weighted ``1 - alpha``, and the loss terms that
    match the baseline's (the model before the first stage) soft targets in its fine-tune."""
    import torchshrink
    from torchshrink.distill.distiller import distill_loss_terms

    assert stage.distill is not None and stage.config.finetune is not None  # the recipe checks
    teacher = torchshrink.load(ctx.baseline_path).eval()
    terms = distill_loss_terms(model, teacher, stage.distill)
    ft = stage.config.finetune
    # the mix distill() trains with: soft targets weighted alpha (inside the kd term), labels 1 - alpha
    ft = ft.model_copy(update={"ce_weight": (1 - stage.distill.alpha) * ft.ce_weight})
    return stage.config.model_copy(update={"finetune": ft}), terms


def _quantize(stage: QuantizeStage, model: nn.Module, ctx: StageContext) -> tuple[nn.Module, dict]:
    from torchshrink.quantize.ptq import quantize

    return quantize(model, stage.config, calibration=ctx.data), {}


def _distill(stage: DistillStage, model: nn.Module, ctx: StageContext) -> tuple[nn.Module, dict]:
    import torchshrink
    from torchshrink.distill.distiller import distill

    r = ctx.recipe
    if r.teacher is not None:
        teacher = torchshrink.load_model(r.teacher, model_args=r.teacher_args or None)
    else:
        teacher = torchshrink.load(ctx.baseline_path)  # the model before the first stage
    result = distill(model, teacher.eval(), ctx.data, stage.config, train_config=stage.train)
    return model, _scalars(result)


def _factorize(
    stage: FactorizeStage, model: nn.Module, ctx: StageContext
) -> tuple[nn.Module, dict]:
    from torchshrink.lowrank.factorize import factorize

    report = factorize(model, stage.config, example_inputs=ctx.example_inputs())
    return model, _scalars(report)


def _cluster(stage: ClusterStage, model: nn.Module, ctx: StageContext) -> tuple[nn.Module, dict]:
    from torchshrink.cluster.finetune import finetune_centroids
    from torchshrink.cluster.kmeans_share import cluster_weights

    report = cluster_weights(model, stage.bits, ignore=stage.ignore, bias_bits=stage.bias_bits)
    details = _scalars(report)
    if stage.finetune is not None:
        result = finetune_centroids(
            model, ctx.data, stage.finetune, assignments=report, reduce=stage.reduce
        )
        details.update({f"finetune_{k}": v for k, v in _scalars(result).items()})
    return model, details


class _KeepZeros(TrainHook):
    """Re-zero the weights that were zero before training (pruned weights stay pruned)."""

    def __init__(self, model: nn.Module) -> None:
        self.masks = {
            p: p.detach() != 0
            for name, p in model.named_parameters()
            if name.endswith("weight") and p.dim() > 1 and bool((p == 0).any())
        }

    def after_step(self, state: Any) -> None:
        with torch.no_grad():
            for p, mask in self.masks.items():
                p.mul_(mask)


def _finetune(stage: FinetuneStage, model: nn.Module, ctx: StageContext) -> tuple[nn.Module, dict]:
    from torchshrink.train.loop import train

    hooks = [_KeepZeros(model)] if stage.keep_zeros else []
    result = train(model, ctx.data, stage.train, hooks=hooks)
    return model, _scalars(result)


def _export(stage: ExportStage, model: nn.Module, ctx: StageContext) -> tuple[nn.Module, dict]:
    from torchshrink.deploy.onnx_export import export_onnx

    if stage.format == "huffman":
        from torchshrink.codec.save import save_compressed

        report = save_compressed(model, ctx.out_dir / "model.huffman.safetensors")
        # "file_path" makes the runner price this stage by the coded file's bytes
        return model, {**_scalars(report), "file_path": str(report.path)}

    path = ctx.out_dir / "model.onnx"
    result = export_onnx(model, path, example_inputs=ctx.example_inputs(1))
    return model, {"onnx_path": str(path), "onnx_bytes": path.stat().st_size, **_scalars(result)}


_RUNNERS: dict[str, Callable[[Any, nn.Module, StageContext], tuple[nn.Module, dict]]] = {
    "prune": _prune,
    "quantize": _quantize,
    "distill": _distill,
    "factorize": _factorize,
    "cluster": _cluster,
    "finetune": _finetune,
    "export": _export,
}
