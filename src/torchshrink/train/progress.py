"""The training progress bar: epoch, step, running loss and accuracy, via rich.progress.

It draws only when ``TrainConfig.show_progress`` is true and the console is a terminal, so
logs, CI and ``--json`` output stay clean, and under ``torchrun`` only on rank 0.

Example:
    >>> from torchshrink.train.config import TrainConfig
    >>> with EpochProgress(TrainConfig(show_progress=False), steps_per_epoch=10) as bar:
    ...     bar.enabled
    False
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from torchshrink.train.config import TrainConfig
from torchshrink.train.distributed import is_main


class EpochProgress:
    """One progress task per epoch, with the loss, accuracy and loss terms as they go.

    Example:
        >>> bar = EpochProgress(TrainConfig(show_progress=False), steps_per_epoch=3)
        >>> with bar:
        ...     bar.start_epoch(0); bar.advance(0.5, 0.9, {})
    """

    def __init__(
        self, config: TrainConfig, steps_per_epoch: int, *, console: Console | None = None
    ) -> None:
        self.config = config
        self.steps_per_epoch = steps_per_epoch
        self.console = console or Console(stderr=True)
        self.enabled = config.show_progress and self.console.is_terminal and is_main()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[stats]}"),
            console=self.console,
            disable=not self.enabled,
        )
        self._task: Any = None

    def __enter__(self) -> EpochProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)  # type: ignore[arg-type]

    def start_epoch(self, epoch: int) -> None:
        """Open the bar of ``epoch`` (0-based)."""
        if not self.enabled:
            return
        self._task = self._progress.add_task(
            f"epoch {epoch + 1}/{self.config.epochs}", total=self.steps_per_epoch, stats=""
        )

    def advance(self, loss: float, accuracy: float, terms: dict[str, float]) -> None:
        """One optimizer step done, with its loss and the running training accuracy."""
        if not self.enabled or self._task is None:
            return
        extra = "".join(f" {k} {v:.4f}" for k, v in terms.items())
        stats = f"loss {loss:.4f} acc {100 * accuracy:.2f}%{extra}"
        self._progress.update(self._task, advance=1, stats=stats)

    def end_epoch(self, record: Any) -> None:
        """Show the epoch's summary (mean loss, train / test accuracy) on its finished bar."""
        if not self.enabled or self._task is None:
            return
        test = "" if record.test_accuracy is None else f" test {100 * record.test_accuracy:.2f}%"
        stats = (
            f"loss {record.train_loss:.4f} acc {100 * record.train_accuracy:.2f}%{test} "
            f"lr {record.lr:.3g}"
        )
        self._progress.update(self._task, stats=stats)
