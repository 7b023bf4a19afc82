"""The in-memory form of a data reference: train / test splits plus what a model needs to know.

Example:
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> ds = TensorDataset(torch.zeros(4, 1, 8, 8), torch.zeros(4, dtype=torch.long))
    >>> b = DataBundle("toy", ds, ds, num_classes=10, input_shape=(1, 8, 8))
    >>> b.example_inputs(2).shape
    torch.Size([2, 1, 8, 8])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from torchshrink.core.errors import EmptyDataError, ShapeError


@dataclass(frozen=True)
class DataBundle:
    """Train / test splits of one data reference.

    Attributes:
        name: the reference it came from, e.g. ``"digits"`` or ``"npz:/data/mnist.npz"``.
        train: dataset of ``(x, y)`` pairs (``x`` already normalised, float32) or, for text
            data, of strings.
        test: same form as ``train``.
        num_classes: number of classes for classification data, ``None`` for unlabelled text.
        input_shape: shape of one sample ``x`` without the batch dimension, e.g. ``(1, 28, 28)``;
            ``()`` for text.
        mean: per-channel mean that was subtracted (empty for text).
        std: per-channel std that was divided by (empty for text).
        task: ``"classification"`` or ``"text"``.
        meta: free-form facts about the source (file path, seed, sizes).
    """

    name: str
    train: Dataset[Any]
    test: Dataset[Any]
    num_classes: int | None
    input_shape: tuple[int, ...]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    task: str = "classification"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            if len(getattr(self, split)) == 0:  # type: ignore[arg-type]
                raise EmptyDataError(f"data '{self.name}': the {split} split has no samples")

    def loader(
        self,
        split: str = "train",
        *,
        batch_size: int = 128,
        shuffle: bool | None = None,
        seed: int = 0,
    ) -> DataLoader[Any]:
        """A DataLoader over ``split`` ("train" or "test"); shuffling is seeded for determinism."""
        ds = self.train if split == "train" else self.test
        shuffle = (split == "train") if shuffle is None else shuffle
        gen = torch.Generator().manual_seed(seed)
        return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=gen)

    def calibration(self, n: int, *, seed: int = 0, split: str = "train") -> Dataset[Any]:
        """A deterministic random subset of ``n`` samples (fewer if the split is smaller)."""
        if n <= 0:
            raise EmptyDataError(f"data '{self.name}': calibration size must be positive, got {n}")
        ds = self.train if split == "train" else self.test
        total = len(ds)  # type: ignore[arg-type]
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randperm(total, generator=gen)[: min(n, total)].tolist()
        return Subset(ds, idx)

    def example_inputs(self, batch_size: int = 1, *, split: str = "test") -> torch.Tensor:
        """The first ``batch_size`` inputs of ``split`` stacked into one batch tensor."""
        if self.task != "classification":
            raise ShapeError(
                f"data '{self.name}' holds {self.task} samples, not tensors; give the model's "
                "example inputs explicitly (e.g. tokenise the text, or --input-shape)"
            )
        ds = self.test if split == "test" else self.train
        n = min(batch_size, len(ds))  # type: ignore[arg-type]
        xs = [ds[i][0] for i in range(n)]
        return torch.stack(xs)
