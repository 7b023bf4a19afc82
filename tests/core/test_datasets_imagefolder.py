"""imagefolder:DIR references on tiny folders of real PNG files written with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from torchshrink.core.data import load_data
from torchshrink.core.errors import DataError, EmptyDataError

Image = pytest.importorskip("PIL.Image")


def _png(path: Path, value: int, *, size: tuple[int, int] = (6, 4), mode: str = "L") -> None:
    """Write a ``size`` (W, H) image whose pixels are all ``value`` (grey or red)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    color = value if mode == "L" else (value, 0, 0)
    Image.new(mode, size, color).save(path)


def _tree(root: Path, classes: dict[str, int], per_class: int, **kw: object) -> None:
    for name, value in classes.items():
        for i in range(per_class):
            _png(root / name / f"{i}.png", value + i, **kw)  # type: ignore[arg-type]


def test_presplit_folder(tmp_path: Path) -> None:
    _tree(tmp_path / "train", {"dog": 200, "cat": 20}, 3)
    _tree(tmp_path / "test", {"dog": 200, "cat": 20}, 2)
    b = load_data(f"imagefolder:{tmp_path}", seed=0)
    assert b.meta["classes"] == ["cat", "dog"]  # sorted -> cat 0, dog 1
    assert b.meta["presplit"] is True
    assert (b.input_shape, b.num_classes) == ((1, 4, 6), 2)  # PIL (W, H) = (6, 4)
    assert (len(b.train), len(b.test)) == (6, 4)
    x, y = b.train.tensors
    raw = x * b.std[0] + b.mean[0]  # back to [0, 1]
    dog_px = raw[y == 1][:, 0, 0, 0]
    assert sorted(torch.round(dog_px * 255).tolist()) == [200.0, 201.0, 202.0]
    assert x.mean().item() == pytest.approx(0.0, abs=1e-5)


def test_single_tree_split_by_seed(tmp_path: Path) -> None:
    _tree(tmp_path, {"a": 10, "b": 100, "c": 150}, 5)
    b0 = load_data(f"imagefolder:{tmp_path}", seed=0)
    b1 = load_data(f"imagefolder:{tmp_path}", seed=1)
    assert b0.meta["presplit"] is False
    assert (len(b0.train), len(b0.test)) == (12, 3)  # 20 % of each class of 5
    assert sorted(b0.test.tensors[1].tolist()) == [0, 1, 2]

    def test_pixels(b: object) -> list[float]:
        x = b.test.tensors[0] * b.std[0] + b.mean[0]  # type: ignore[attr-defined]
        return sorted(torch.round(x[:, 0, 0, 0] * 255).tolist())

    assert test_pixels(load_data(f"imagefolder:{tmp_path}", seed=0)) == test_pixels(b0)
    assert test_pixels(b1) != test_pixels(b0)
    assert len(load_data(str(tmp_path), limit=2).train) == 2  # a bare directory works too


def test_mode_majority_size_and_options(tmp_path: Path) -> None:
    _tree(tmp_path, {"x": 50}, 3, mode="RGB", size=(8, 8))
    _tree(tmp_path, {"y": 90}, 2, mode="L", size=(4, 4))
    b = load_data(f"imagefolder:{tmp_path}", test_fraction=0.4)
    assert b.meta["mode"] == "RGB"  # 3 RGB vs 2 grey
    assert b.input_shape[0] == 3 and len(b.mean) == 3
    resized = load_data(f"imagefolder:{tmp_path}", size=5, mode="L", test_fraction=0.4)
    assert resized.input_shape == (1, 5, 5)
    assert load_data(f"imagefolder:{tmp_path}", size=(3, 7)).input_shape[1:] == (3, 7)
    with pytest.raises(DataError, match="mode must be 'L' or 'RGB', got 'CMYK'"):
        load_data(f"imagefolder:{tmp_path}", mode="CMYK")


def test_rgb_channels_are_normalised_separately(tmp_path: Path) -> None:
    _tree(tmp_path / "train", {"r": 40, "s": 120}, 4, mode="RGB")
    _tree(tmp_path / "test", {"r": 40}, 1, mode="RGB")
    b = load_data(f"imagefolder:{tmp_path}")
    x = b.train.tensors[0]  # (8, 3, 4, 6)
    assert x.mean(dim=(0, 2, 3)).abs().max().item() < 1e-5
    assert b.std[1] == 1.0  # the green channel is constant 0: std reported as 1, no division by 0
    np.testing.assert_allclose(
        b.mean[0], (np.mean([40, 41, 42, 43, 120, 121, 122, 123])) / 255, rtol=1e-6
    )


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"directory not found: '.*nowhere'"):
        load_data(f"imagefolder:{tmp_path / 'nowhere'}")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(EmptyDataError, match=r"data 'imagefolder:.*empty': no images"):
        load_data(f"imagefolder:{tmp_path / 'empty'}")
    bad = tmp_path / "bad"
    _tree(bad, {"a": 1}, 2)
    (bad / "a" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read image '.*broken\.png'"):
        load_data(f"imagefolder:{bad}")
    split = tmp_path / "split"
    _tree(split / "train", {"a": 1}, 2)
    _tree(split / "test", {"zebra": 1}, 1)
    with pytest.raises(DataError, match=r"test classes \['zebra'\] have no train folder"):
        load_data(f"imagefolder:{split}")
