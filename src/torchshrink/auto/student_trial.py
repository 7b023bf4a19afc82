"""One student candidate (built, distilled, measured) and the worker loop that runs them.

A candidate is the student family built with the trial's multipliers (seeded weights),
distilled from the teacher with :func:`torchshrink.distill.distill` (the distill module's
soft-target loss term through the one training loop) on the search-training part, then scored
on the validation part; the objective is the bytes of its saved model file or its measured
median latency. Trials run through :func:`torchshrink.auto.search.trial_loop`, the loop of the
compression search, so counts, resume, duplicates and several workers behave alike.

Example:
    >>> import torchshrink
    >>> from torchshrink.auto.objective import search_data
    >>> data = search_data(torchshrink.load_data("digits"), val_size=100, train_size=200, seed=0)
    >>> teacher = torchshrink.load_model("zoo:lenet300", model_args={"input_size": 8})
    >>> res = evaluate_student(teacher.eval(), "zoo:lenet300", {"input_size": 8, "width": 0.1},
    ...     data, config=StudentConfig(teacher="t", student="zoo:lenet300"), work_dir=Path("/tmp/st"))
    >>> res.num_params < 50610, res.kd_loss is not None
    (True, True)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchshrink.auto.search import WorkerSpec, open_worker, trial_loop
from torchshrink.auto.student_config import StudentConfig
from torchshrink.auto.student_space import StudentSpace
from torchshrink.core.databundle import DataBundle


@dataclass(frozen=True)
class StudentResult:
    """What one student candidate measured.

    Attributes:
        accuracy: top-1 accuracy on the validation part.
        objective_value: bytes of the saved file (size) or median milliseconds (latency).
        file_bytes: bytes of the student's saved model file.
        num_params: parameters of the student.
        latency_ms: measured median latency of one sample (``None`` unless latency).
        kd_loss: mean soft-target (``kd``) loss of the last epoch: the distillation term ran.
        seconds: wall time to build, distil and measure it.
    """

    accuracy: float
    objective_value: float
    file_bytes: int
    num_params: int
    latency_ms: float | None
    kd_loss: float | None
    seconds: float


def evaluate_student(
    teacher: nn.Module,
    family: str,
    model_args: dict[str, Any],
    data: DataBundle,
    *,
    config: StudentConfig,
    work_dir: Path,
    seed: int = 0,
) -> StudentResult:
    """Build ``family(**model_args)``, distil ``teacher`` into it on ``data.train``, measure it.

    Args:
        teacher: the trained teacher, in eval mode.
        family: ``zoo:NAME``.
        model_args: the student's factory options (multipliers included).
        data: the search bundle (its ``test`` split is the validation part).
        config: distillation, training, objective and latency settings.
        work_dir: a folder for the student's model file.
        seed: seeds the student's initial weights.
    """
    import torchshrink
    from torchshrink.distill.distiller import distill
    from torchshrink.measure.accuracy import evaluate
    from torchshrink.measure.latency import measure_latency

    t0 = time.perf_counter()
    work_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    student = torchshrink.load_model(family, model_args=model_args)
    result = distill(student, teacher, data, config.distill, train_config=config.trial_train)
    student.eval()
    acc = evaluate(student, data.loader("test", batch_size=256)).accuracy
    path = torchshrink.save(student, work_dir / "model.safetensors")
    file_bytes = path.stat().st_size
    latency: float | None = None
    if config.objective == "latency":
        x = data.example_inputs(1)  # (1, *input_shape)
        latency = measure_latency(student, x, repeats=config.latency_repeats).p50_ms
    kd = result.history[-1].loss_terms.get("kd") if result.history else None
    return StudentResult(
        accuracy=acc,
        objective_value=float(file_bytes if latency is None else latency),
        file_bytes=file_bytes,
        num_params=sum(p.numel() for p in student.parameters()),
        latency_ms=latency,
        kd_loss=None if kd is None else float(kd),
        seconds=time.perf_counter() - t0,
    )


def student_work(spec: WorkerSpec) -> int:
    """Run student trials until the study has ``trials`` complete ones; return how many ran.

    The worker loop of the student search (``spec.model_path`` is the teacher's file), run by
    :func:`torchshrink.auto.search.run_workers` in this process or in spawned ones.
    """
    import torchshrink

    config = StudentConfig.model_validate_json(spec.config_json)
    out = Path(spec.out_dir)
    study, sdata = open_worker(config, spec.storage, spec.study_name, spec.index)
    space = StudentSpace.from_dict(study.user_attrs["space"])
    fixed = dict(study.user_attrs["student_args"])
    teacher = torchshrink.load(spec.model_path).eval()

    def evaluate(number: int, params: dict[str, Any]) -> StudentResult:
        return evaluate_student(
            teacher,
            space.family,
            {**fixed, **space.model_args(params)},
            sdata,
            config=config,
            work_dir=out / "trials" / f"{number:04d}",
            seed=config.seed,
        )

    return trial_loop(
        study,
        out,
        trials=config.trials,
        suggest=space.suggest,
        evaluate=evaluate,
        attrs=("file_bytes", "num_params", "latency_ms", "kd_loss", "seconds"),
    )
