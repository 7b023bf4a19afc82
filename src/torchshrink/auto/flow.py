"""The steps both ``auto`` searches take around their trials.

:func:`~torchshrink.auto.run_auto` (per-layer compression) and
:func:`~torchshrink.auto.student.run_student_search` (distillation students) differ in what a
candidate is; around the trials they do the same: load the data and carve the search bundle,
build the start model once (the baseline to compress, or the teacher) and reload it on resume,
score it on the validation part, open or create the study under the folder's lock, recover
trials a killed run left behind, start the workers, and at the end write ``run.json`` (with
its ``search`` section) and the report and return an :class:`AutoResult`.

Example:
    >>> import torchshrink
    >>> digits = torchshrink.load_data("digits")
    >>> zoo_defaults("model.safetensors", digits)
    {}
    >>> sorted(zoo_defaults("zoo:lenet5", digits).items())
    [('in_channels', 1), ('input_size', 8), ('num_classes', 10)]
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchshrink.auto.objective import search_data
from torchshrink.auto.result import AutoResult
from torchshrink.auto.search import (
    WorkerSpec,
    counts,
    open_study,
    recover_stale,
    storage_url,
    study_lock,
)
from torchshrink.auto.settings import SearchSettings
from torchshrink.core.databundle import DataBundle

UNITS = {"size": "bytes", "latency": "ms", "energy": "mJ/sample"}
# the order of the keys of run.json's ``search`` section (either search's own keys included)
SEARCH_KEYS = (
    "mode", "family", "objective", "objective_unit", "budget", "baseline_val_accuracy",
    "trials", "chosen", "chosen_by", "chosen_args", "distill", "promotion", "closest",
    "failed_trials", "failures", "study", "storage", "space", "config",
)  # fmt: skip


@dataclass(frozen=True)
class SearchStart:
    """What :func:`start_search` prepared.

    Attributes:
        out: the run folder.
        data: the whole data bundle (its test split is used once, on the chosen model).
        sdata: the search bundle (``test`` is the validation part of the training split).
        model_path: the start model's file (``search/baseline`` or ``search/teacher``).
        study: the optuna study.
        url: its storage URL.
        base_val: the start model's validation accuracy, as the study first recorded it.
    """

    out: Path
    data: DataBundle
    sdata: DataBundle
    model_path: Path
    study: Any
    url: str
    base_val: float


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with ``threads`` torch threads (``None``: unchanged), then restore."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def zoo_defaults(model_ref: str, data: DataBundle) -> dict[str, Any]:
    """A zoo model's size options from the data (classes, channels, square input), as the CLI
    sets them; ``{}`` for any other reference."""
    if not model_ref.startswith("zoo:"):
        return {}
    out: dict[str, Any] = {"num_classes": data.num_classes} if data.num_classes else {}
    shape = tuple(data.input_shape)
    if len(shape) == 3 and shape[1] == shape[2]:
        out.update(in_channels=shape[0], input_size=shape[1])
    return out


def start_search(
    config: SearchSettings,
    out_dir: str | Path,
    *,
    model_ref: str,
    model_args: dict[str, Any],
    file_stem: str,
    init_study: Callable[[Any, nn.Module, DataBundle], None],
) -> SearchStart:
    """Data, the start model, its validation score and the study, ready for the workers.

    The start model is built (seeded; trained with ``config.train`` on the training split
    without the validation part) and saved as ``search/<file_stem>.safetensors`` once; a
    resumed search reloads that file, so every trial starts from the same model.
    ``init_study(study, model, sdata)`` fills a new study (its ``space`` attribute, seed
    trials). Trials a killed run left RUNNING are failed and enqueued again.
    """
    import torchshrink
    from torchshrink.measure.accuracy import evaluate

    out = Path(out_dir)
    (out / "search").mkdir(parents=True, exist_ok=True)
    data = torchshrink.load_data(config.data, seed=config.seed, limit=config.data_limit)
    sdata = search_data(
        data, val_size=config.val_size, train_size=config.search_train_size, seed=config.seed
    )
    path = out / "search" / f"{file_stem}.safetensors"
    if path.is_file():
        model = torchshrink.load(path)
    else:
        torch.manual_seed(config.seed)
        args = {**zoo_defaults(model_ref, data), **model_args}
        model = torchshrink.load_model(model_ref, model_args=args or None)
        if config.train is not None:  # the validation part stays unseen: it is the reference
            fit = search_data(data, val_size=config.val_size, train_size=None, seed=config.seed)
            torchshrink.train(model, fit, config.train)
        tmp = torchshrink.save(model, out / "search" / f"{file_stem}.tmp.safetensors")
        os.replace(tmp, path)  # a killed run leaves no half-written start model
    base_val = evaluate(model.eval(), sdata.loader("test", batch_size=256)).accuracy
    url = storage_url(config, out)
    with study_lock(out):
        study = open_study(url, config.study_name, seed=config.seed)
        if "space" not in study.user_attrs:
            study.set_user_attr("baseline_val_accuracy", base_val)
            init_study(study, model, sdata)
        # a resumed search keeps the first run's score (the same model, maybe other threads)
        base_val = float(study.user_attrs["baseline_val_accuracy"])
        recover_stale(study, all_running=config.storage is None, stale_after=config.stale_after)
    return SearchStart(out, data, sdata, path, study, url, base_val)


def worker_spec(config: SearchSettings, start: SearchStart) -> WorkerSpec:
    """The spec of worker 0 of ``start``'s study."""
    return WorkerSpec(
        config_json=config.model_dump_json(),
        out_dir=str(start.out),
        storage=start.url,
        study_name=config.study_name,
        model_path=str(start.model_path),
        index=0,
    )


def run_chosen(recipe: Any, out: Path, *, show_progress: bool) -> tuple[dict[str, Any], Path]:
    """Build the chosen candidate with the ``compress`` runner; its run.json and model file."""
    from torchshrink.pipeline.runner import run_recipe

    rec = run_recipe(recipe, out, show_progress=show_progress, report=False)
    return json.loads(rec.run_json.read_text(encoding="utf-8")), rec.model_path


def profile_file(path: Path, data: DataBundle, *, repeats: int) -> dict[str, Any]:
    """The test-split profile of the model file ``path`` (without the latency samples)."""
    import torchshrink
    from torchshrink.measure.profile import profile

    x = data.example_inputs(1)  # (1, *input_shape)
    prof = profile(torchshrink.load(path), x, data=data, repeats=repeats, file_path=path)
    doc = prof.to_dict()
    doc.pop("latency_samples_ms", None)
    return doc


def finish_search(
    config: SearchSettings,
    start: SearchStart,
    doc: dict[str, Any],
    *,
    space: Any,
    records: list[dict[str, Any]],
    chosen: dict[str, Any] | None,
    closest: dict[str, Any] | None,
    chosen_by: str | None,
    model_path: Path | None,
    extra: dict[str, Any],
) -> AutoResult:
    """Add the ``search`` section (``extra``: the search's own keys) to ``doc``, write it as
    ``run.json``, render the report and return the result."""
    from torchshrink.pipeline.runner import write_json
    from torchshrink.report.html import render_report

    section = {
        "objective": config.objective,
        "objective_unit": UNITS[config.objective],
        "budget": config.max_accuracy_drop,
        "baseline_val_accuracy": start.base_val,
        "trials": records,
        "chosen": chosen["number"] if chosen else None,
        "chosen_by": chosen_by,
        "closest": closest["number"] if closest else None,
        "failed_trials": counts(start.study).get("FAIL", 0),
        "study": config.study_name,
        "storage": start.url,
        "space": space.to_dict(),
        "config": config.model_dump(mode="json"),
        **extra,
    }
    rank = {k: i for i, k in enumerate(SEARCH_KEYS)}
    doc["search"] = dict(sorted(section.items(), key=lambda kv: rank.get(kv[0], len(rank))))
    run_json = start.out / "run.json"
    write_json(run_json, doc)
    html = render_report(run_json)
    return AutoResult.from_records(
        start.out, start.base_val, records, run_json=run_json, html=html, model_path=model_path,
        final=doc["final"], baseline=doc["baseline"], chosen=chosen, closest=closest,
        chosen_by=chosen_by,
    )  # fmt: skip
