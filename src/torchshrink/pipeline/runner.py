"""The recipe runner: stages in order, a profile and a checkpoint after each, resume, run.json.

Layout of ``out_dir``::

    stages/00-baseline.safetensors   the model before the first stage (after ``recipe.train``)
    stages/NN-kind.safetensors       the model after stage NN (1-based)
    stages/state.json                the recipe and the records of the finished stages
    model.safetensors                the final model (torchshrink.load reads it)
    model.onnx                       when the recipe has an ``export`` stage
    run.json                         recipe, per-stage config, metrics, timings, versions, machine
                                     and per-layer records: ``baseline_layers`` and every
                                     ``stages[i]["layers"]`` (see pipeline.layer_stats; the
                                     histograms of later models reuse the baseline's bins)
    report.html                      rendered from run.json

With ``resume=True`` the runner reloads the last finished stage's checkpoint and runs only the
stages after it; the recipe must be the one the state was written for.

Example:
    >>> from torchshrink.pipeline.recipe import load_recipe
    >>> r = load_recipe("structured-50", overrides=["train.epochs=1", "data_limit=200",
    ...     "stages.0.config.finetune.epochs=1", "profile_repeats=2"])
    >>> rec = run_recipe(r, "/tmp/run_doc", show_progress=False)
    >>> [s.kind for s in rec.stages], rec.model_path.name
    (['prune'], 'model.safetensors')
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchshrink.core.errors import ConfigError
from torchshrink.pipeline.recipe import Recipe, load_recipe
from torchshrink.pipeline.stages import StageContext, run_stage
from torchshrink.train.distributed import barrier, init_distributed, is_main


@dataclass(frozen=True)
class StageRun:
    """What one stage did: its config, wall time, profile after it and its checkpoint."""

    index: int
    kind: str
    name: str
    config: dict[str, Any]
    seconds: float
    metrics: dict[str, Any]
    checkpoint: str
    details: dict[str, Any]
    layers: list[dict[str, Any]] | None = None  # LayerStats dicts; None in older state files


@dataclass(frozen=True)
class RunRecord:
    """The result of :func:`run_recipe` (also written to ``run.json``)."""

    out_dir: Path
    model_path: Path
    run_json: Path
    report_html: Path | None
    baseline: dict[str, Any]
    stages: tuple[StageRun, ...]
    resumed_from: int
    finished: bool
    latency_vs_baseline: dict[str, Any] | None = None


def run_recipe(
    recipe: Recipe | str | Path,
    out_dir: str | Path,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    show_progress: bool = True,
    report: bool = True,
) -> RunRecord:
    """Run ``recipe``'s stages in order, checkpointing and profiling after each.

    Args:
        recipe: a :class:`Recipe`, a recipe file or a built-in recipe name.
        out_dir: the output folder (created).
        resume: continue after the last stage finished in ``out_dir``.
        stop_after: stop after this many stages in total (simulates an interruption; the
            final model, run.json and report are not written).
        show_progress: show a rich progress display.
        report: render ``report.html`` from ``run.json``.

    Raises:
        ConfigError: ``resume`` with a state written for another recipe.

    Example:
        See the module docstring.
    """
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    out = Path(out_dir)
    stages_dir = out / "stages"
    stages_dir.mkdir(parents=True, exist_ok=True)
    state_path = stages_dir / "state.json"
    # Under torchrun every rank runs the recipe (training is data-parallel) but only rank 0
    # writes the state, run.json, report and exported files; the others wait at each checkpoint.
    init_distributed()
    main = is_main()
    recipe_doc = recipe.model_dump(mode="json", by_alias=True)
    started = time.perf_counter()

    import torchshrink

    data = torchshrink.load_data(recipe.data, seed=recipe.seed, limit=recipe.data_limit)
    state = _read_state(state_path, recipe_doc) if resume else None
    done: list[StageRun] = []
    if state is not None:
        model = torchshrink.load(state["checkpoint"])
        baseline = state["baseline"]
        baseline_layers = state.get("baseline_layers")
        done = [StageRun(**s) for s in state["stages"]]
    else:
        torch.manual_seed(recipe.seed)
        model = torchshrink.load_model(recipe.model, model_args=recipe.model_args or None)
        if recipe.train is not None:
            torchshrink.train(model, data, recipe.train)
        ckpt = torchshrink.save(model, stages_dir / "00-baseline.safetensors")
        barrier()
        baseline = _measure(model, data, recipe, ckpt)
        baseline_layers = _layers(model, None)
        _write_state(state_path, recipe_doc, baseline, [], ckpt, baseline_layers)
    resumed_from = len(done)
    ctx = StageContext(
        recipe=recipe, data=data, out_dir=out, baseline_path=stages_dir / "00-baseline.safetensors"
    )

    from rich.progress import Progress

    todo = list(enumerate(recipe.stages))[resumed_from:]
    if stop_after is not None:
        todo = [(i, s) for i, s in todo if i < stop_after]
    with Progress(disable=not show_progress, transient=True) as progress:
        task = progress.add_task("stages", total=len(recipe.stages), completed=resumed_from)
        for i, stage in todo:
            label = stage.name or stage.kind
            progress.update(task, description=f"stage {i + 1}: {label}")
            torch.manual_seed(recipe.seed + i + 1)
            t0 = time.perf_counter()
            if main or stage.kind != "export":
                model, details = run_stage(stage, model, ctx)
            else:  # exporting writes files and changes no weight: rank 0 alone does it
                details = {"skipped": "export runs on rank 0 only"}
            seconds = time.perf_counter() - t0
            ckpt = torchshrink.save(model, stages_dir / f"{i + 1:02d}-{stage.kind}.safetensors")
            barrier()
            done.append(
                StageRun(
                    index=i,
                    kind=stage.kind,
                    name=label,
                    config=stage.model_dump(mode="json", by_alias=True),
                    seconds=seconds,
                    metrics=_measure(model, data, recipe, _written(details.get("file_path", ckpt))),
                    checkpoint=str(ckpt),
                    details=details,
                    layers=_layers(model, baseline_layers),
                )
            )
            _write_state(state_path, recipe_doc, baseline, done, ckpt, baseline_layers)
            progress.advance(task)

    finished = len(done) == len(recipe.stages)
    model_path = out / "model.safetensors"
    run_json = out / "run.json"
    html: Path | None = None
    paired: dict[str, Any] | None = None
    if finished:
        torchshrink.save(model, model_path)
        if recipe.profile_repeats > 0:
            # the saved files, as a user loads them: an in-memory model can carry layouts left by
            # its last stage (e.g. weights rebuilt from cluster indices) that the file does not
            final = torchshrink.load(model_path) if main else model
            paired = _paired_latency(stages_dir / "00-baseline.safetensors", final, data, recipe)
        doc = {
            "recipe": recipe_doc,
            "baseline": baseline,
            "baseline_layers": baseline_layers,
            "stages": [asdict(s) for s in done],
            "final": done[-1].metrics if done else baseline,
            "latency_vs_baseline": paired,
            "model_path": str(model_path),
            "resumed_from": resumed_from,
            "seconds": time.perf_counter() - started,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "versions": _versions(),
            "machine": _machine(),
        }
        if main:
            write_json(run_json, doc)
        if report and main:
            from torchshrink.report.html import render_report

            html = render_report(run_json)
    return RunRecord(
        out_dir=out,
        model_path=model_path,
        run_json=run_json,
        report_html=html,
        baseline=baseline,
        stages=tuple(done),
        resumed_from=resumed_from,
        finished=finished,
        latency_vs_baseline=paired,
    )


def _measure(model: nn.Module, data: Any, recipe: Recipe, file_path: Path | None) -> dict[str, Any]:
    from torchshrink.measure.profile import profile

    x = next(iter(data.loader("test", batch_size=1)))[0]  # (1, *input_shape)
    prof = profile(
        model,
        x,
        data=data,
        batch_size=recipe.profile_batch,
        threads=recipe.profile_threads,
        repeats=max(recipe.profile_repeats, 1),
        measure_latency=recipe.profile_repeats > 0,
        file_path=file_path,
    ).to_dict()
    prof.pop("latency_samples_ms", None)  # keep run.json small; p50 / p90 stay
    return prof


def _written(path: str | Path) -> Path | None:
    """``path`` if it exists; on a non-main rank a file rank 0 alone wrote may not (then the
    profile sizes the model in memory; only rank 0's metrics are ever written)."""
    p = Path(path)
    return p if p.is_file() else None


def _paired_latency(
    baseline_path: Path, model: nn.Module, data: Any, recipe: Recipe
) -> dict[str, Any]:
    """Baseline and final model timed in turns in one loop: their ratio survives a busy machine.

    Each stage's own profile is timed at a different moment, so on a shared machine two stage
    latencies can differ by more than the compression changed them; the gain reported as the
    run's speed-up comes from this paired measurement instead.
    """
    import torchshrink
    from torchshrink.deploy.timing import interleaved_times

    base = torchshrink.load(baseline_path).eval()
    model.eval()
    x = next(iter(data.loader("test", batch_size=recipe.profile_batch)))[0]
    threads = torch.get_num_threads()
    if recipe.profile_threads is not None:
        torch.set_num_threads(recipe.profile_threads)
    try:
        t = interleaved_times(
            {"baseline": lambda: base(x), "final": lambda: model(x)},
            rounds=max(recipe.profile_repeats, 1), warmup=3,
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    b, f = t["baseline"].median_ms, t["final"].median_ms
    return {
        "baseline_ms": b, "final_ms": f, "speedup": b / f if f > 0 else None,
        "batch": int(x.shape[0]), "threads": recipe.profile_threads or threads,
        "rounds": len(t["final"].samples_ms),
    }  # fmt: skip


def _layers(model: nn.Module, baseline_layers: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    from torchshrink.pipeline.layer_stats import hist_ranges, layer_stats

    # the baseline's histogram ranges: before / after histograms share their bins
    ranges = hist_ranges(baseline_layers) if baseline_layers else None
    return [r.to_dict() for r in layer_stats(model, ranges=ranges)]


def _read_state(path: Path, recipe_doc: dict[str, Any]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    state = json.loads(path.read_text(encoding="utf-8"))
    if state.get("recipe") != recipe_doc:
        raise ConfigError(
            f"resume: '{path}' was written for another recipe; use a new --out folder "
            "or run without --resume"
        )
    return state


def _write_state(
    path: Path,
    recipe_doc: dict[str, Any],
    baseline: dict[str, Any],
    done: list[StageRun],
    checkpoint: Path,
    baseline_layers: list[dict[str, Any]] | None = None,
) -> None:
    if not is_main():
        return
    doc = {
        "recipe": recipe_doc,
        "baseline": baseline,
        "baseline_layers": baseline_layers,
        "stages": [asdict(s) for s in done],
        "checkpoint": str(checkpoint),
    }
    # written atomically after the checkpoint: a kill in between leaves the previous state
    write_json(path, doc)


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Write ``doc`` to ``path`` atomically: a reader (or a kill) never sees half a file."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def _versions() -> dict[str, str]:
    import numpy

    import torchshrink

    return {
        "torchshrink": torchshrink.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": sys.version.split()[0],
    }


def _machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
