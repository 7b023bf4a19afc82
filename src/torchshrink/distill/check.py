"""Check a teacher against its student on one batch, before any training step.

A teacher that predicts other classes than the student (5 logits against 10), or that cannot
take the student's inputs at all, otherwise fails only inside the first training step, after
the optimizer and the data loader have started, with a message about "student logits and
teacher logits" that does not say which model of an ensemble is wrong. :func:`check_teacher`
runs the student and each teacher model once on an example batch (eval mode, no gradients,
nothing changed) and refuses a misfit by name. Both :func:`~torchshrink.distill.distill` and
the Deep Compression pipeline use it.

Example:
    >>> import torch
    >>> from torch import nn
    >>> student = nn.Linear(4, 10)
    >>> len(check_teacher([nn.Linear(4, 10), nn.Linear(4, 10)], student, torch.zeros(2, 4)))
    2
    >>> try:
    ...     check_teacher([nn.Linear(4, 10), nn.Linear(4, 5)], student, torch.zeros(2, 4))
    ... except ConfigError as exc:
    ...     print(str(exc)[:66])
    teacher 1: gives logits of shape (2, 5), the student gives (2, 10)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from torchshrink.core.errors import ConfigError
from torchshrink.core.forward import Inputs, describe_shapes
from torchshrink.distill.teacher import Teacher, as_teacher
from torchshrink.measure.accuracy import _logits
from torchshrink.train.input_check import probe_forward


def check_teacher(
    teacher: Teacher | nn.Module | Sequence[nn.Module],
    student: nn.Module,
    example_inputs: Inputs,
    *,
    cache: bool = False,
    student_name: str = "student",
) -> Teacher:
    """The :class:`Teacher` for ``teacher``, after checking it fits ``student`` on one batch.

    The student and every teacher model (each member of an ensemble on its own, so the faulty
    one is named) run once on ``example_inputs`` in eval mode without gradients; no weight,
    buffer, train / eval flag or random number changes. Loss terms hand the teacher a tensor
    batch, so for non-tensor inputs (a dict of HF inputs) only the identity check is made.

    Args:
        teacher: a :class:`Teacher`, a model, or a sequence of models (an ensemble).
        student: the model that will be trained to imitate it.
        example_inputs: a batch of the training inputs, e.g. ``data.example_inputs(2)``.
        cache: passed to :func:`~torchshrink.distill.teacher.as_teacher`.
        student_name: how messages call the student (e.g. ``"model"`` in a pipeline).

    Returns:
        The checked :class:`Teacher` (``teacher`` itself if it was one).

    Raises:
        ConfigError: a teacher model is the student itself, fails on the inputs (its error
            message is included), or gives logits of another shape than the student's; the
            message names the teacher (its index in an ensemble) and both shapes.
        ShapeError: the student itself does not take ``example_inputs`` (names the layer).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> try:
        ...     check_teacher(nn.Linear(3, 10), nn.Linear(4, 10), torch.zeros(2, 4))
        ... except ConfigError as exc:
        ...     print(str(exc)[:56])
        teacher: does not run on the student's inputs (2, 4): in
    """
    t = as_teacher(teacher, cache=cache)
    label = (lambda i: "teacher") if len(t) == 1 else (lambda i: f"teacher {i}")
    for i, member in enumerate(t.members):
        if member is student:
            raise ConfigError(
                f"{label(i)}: is the {student_name} itself, which changes during training; "
                "distill from a frozen copy of it (copy.deepcopy) instead"
            )
    if not isinstance(example_inputs, torch.Tensor):
        return t
    want = _logits(probe_forward(student, example_inputs)).shape  # (B, K)
    shapes = describe_shapes(example_inputs)
    for i, member in enumerate(t.members):
        try:
            got = _logits(probe_forward(member, example_inputs)).shape  # (B, K')
        except Exception as e:  # any failure here means this teacher does not fit the data
            raise ConfigError(
                f"{label(i)}: does not run on the {student_name}'s inputs {shapes}: {e}"
            ) from e
        if got != want:
            raise ConfigError(
                f"{label(i)}: gives logits of shape {tuple(got)}, the {student_name} gives "
                f"{tuple(want)}; the teacher must predict the same classes"
            )
    return t
