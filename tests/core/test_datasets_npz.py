"""npz:PATH references: every input layout, uint8 / float, real MNIST, and every error."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from torchshrink.core.data import load_data
from torchshrink.core.datasets.npz import detect_layout
from torchshrink.core.errors import DataError, EmptyDataError


def _save(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)
    return f"npz:{path}"


def _splits(x: np.ndarray, n_train: int = 12) -> dict[str, np.ndarray]:
    y = np.arange(len(x)) % 3
    return {
        "x_train": x[:n_train],
        "y_train": y[:n_train],
        "x_test": x[n_train:],
        "y_test": y[n_train:],
    }


@pytest.mark.parametrize(
    ("shape", "channels_last", "expected"),
    [
        ((16, 6, 5), False, (1, 6, 5)),  # NHW
        ((16, 1, 6, 5), False, (1, 6, 5)),  # NCHW grey
        ((16, 3, 6, 5), False, (3, 6, 5)),  # NCHW colour
        ((16, 6, 5, 3), True, (3, 6, 5)),  # NHWC colour
        ((16, 6, 5, 1), True, (1, 6, 5)),  # NHWC grey
        ((16, 40), False, (1, 40)),  # 1-D signals
    ],
)
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_layouts_and_dtypes(
    tmp_path: Path,
    shape: tuple[int, ...],
    channels_last: bool,
    expected: tuple[int, ...],
    dtype: type,
) -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=shape).astype(dtype)
    if dtype is np.float32:
        x = x / 255.0 * 4.0 + 2.0  # float data is used as is: mean ~4, std ~1.15
    b = load_data(_save(tmp_path / "d.npz", **_splits(x)), seed=0)
    assert b.input_shape == expected
    assert (len(b.train), len(b.test), b.num_classes) == (12, 4, 3)
    xt = b.train.tensors[0]  # (12, C, ...)
    assert xt.dtype == torch.float32
    dims = [0, *range(2, xt.dim())]
    assert xt.mean(dim=dims).abs().max().item() < 1e-5  # per-channel mean 0
    assert (xt.std(dim=dims, unbiased=False) - 1).abs().max().item() < 1e-4  # per-channel std 1
    assert len(b.mean) == expected[0]
    # the channel statistics are those of the raw train data (scaled by 1/255 for uint8)
    raw = x[:12].astype(np.float64) * (1 / 255 if dtype is np.uint8 else 1.0)
    if channels_last:
        raw = np.moveaxis(raw, -1, 1)
    elif raw.ndim < 4:
        raw = raw[:, None]
    axes = tuple(a for a in range(raw.ndim) if a != 1)
    np.testing.assert_allclose(b.mean, raw.mean(axis=axes), rtol=1e-6)
    np.testing.assert_allclose(b.std, raw.std(axis=axes), rtol=1e-6)


def test_layout_detection_and_override(tmp_path: Path) -> None:
    assert detect_layout((5, 8, 8, 3)) == "nhwc"
    assert detect_layout((5, 3, 8, 3)) == "nchw"  # second dim 1/3 wins
    assert detect_layout((5, 2, 8, 8)) == "nchw"
    x = np.zeros((16, 3, 8, 3), np.uint8)
    ref = _save(tmp_path / "amb.npz", **_splits(x))
    assert load_data(ref).input_shape == (3, 8, 3)
    assert load_data(ref, layout="nhwc").input_shape == (3, 3, 8)
    with pytest.raises(DataError, match="layout must be one of nchw, nhwc, nhw, nl, got 'hwc'"):
        load_data(ref, layout="hwc")


def test_seed_shuffles_and_limit_truncates(tmp_path: Path) -> None:
    x = np.arange(16 * 4, dtype=np.float32).reshape(16, 2, 2)
    ref = _save(tmp_path / "s.npz", **_splits(x))
    a, b, c = load_data(ref, seed=0), load_data(ref, seed=0), load_data(ref, seed=1)
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    assert not torch.equal(a.train.tensors[0], c.train.tensors[0])
    small = load_data(ref, seed=0, limit=5)
    assert (len(small.train), len(small.test)) == (5, 4)
    assert torch.equal(small.train.tensors[0], a.train.tensors[0][:5])


def test_real_mnist(mnist_path: Path) -> None:
    b = load_data(f"npz:{mnist_path}", seed=0, limit=2000)
    assert b.input_shape == (1, 28, 28)
    assert b.num_classes == 10
    assert (len(b.train), len(b.test)) == (2000, 2000)
    assert b.mean[0] == pytest.approx(0.1307, abs=1e-3)  # the well-known MNIST statistics
    assert b.std[0] == pytest.approx(0.3081, abs=1e-3)
    assert sorted(b.train.tensors[1].unique().tolist()) == list(range(10))
    with np.load(mnist_path) as f:
        assert (len(f["x_train"]), len(f["x_test"])) == (60000, 10000)


@pytest.mark.slow
def test_real_mnist_full(mnist_path: Path) -> None:
    b = load_data(f"npz:{mnist_path}")
    assert (len(b.train), len(b.test)) == (60000, 10000)
    assert b.train.tensors[0].mean().item() == pytest.approx(0.0, abs=1e-4)


def test_missing_file_and_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"file not found: '.*nothere\.npz'"):
        load_data(f"npz:{tmp_path / 'nothere.npz'}")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip archive at all")
    with pytest.raises(DataError, match=r"cannot read '.*junk\.npz' as a \.npz archive"):
        load_data(f"npz:{junk}")
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(DataError, match=r"holds a single array, expected a \.npz archive"):
        load_data(f"npz:{single}")


def test_missing_key_names_key_and_keys_found(tmp_path: Path) -> None:
    x = np.zeros((4, 2, 2), np.uint8)
    ref = _save(tmp_path / "k.npz", x_train=x, y_train=np.zeros(4, int), images=x)
    with pytest.raises(DataError, match=r"no key 'x_test' \(keys found: images, x_train, y_train"):
        load_data(ref)


def test_mismatched_lengths_and_bad_labels(tmp_path: Path) -> None:
    x = np.zeros((6, 2, 2), np.uint8)
    ref = _save(
        tmp_path / "m.npz", x_train=x, y_train=np.zeros(5, int), x_test=x, y_test=np.zeros(6, int)
    )
    with pytest.raises(DataError, match="train has 6 inputs but 5 labels"):
        load_data(ref)
    ref = _save(
        tmp_path / "f.npz", x_train=x, y_train=np.full(6, 0.5), x_test=x, y_test=np.zeros(6, int)
    )
    with pytest.raises(DataError, match="train labels must be integers, got dtype float64"):
        load_data(ref)
    ref = _save(
        tmp_path / "s.npz",
        x_train=x,
        y_train=np.array(list("abcdef")),
        x_test=x,
        y_test=np.zeros(6, int),
    )
    with pytest.raises(DataError, match="train labels must be integers, got dtype <U1"):
        load_data(ref)
    whole = np.arange(6, dtype=np.float32)  # whole-number float labels are accepted
    ref = _save(tmp_path / "w.npz", x_train=x, y_train=whole, x_test=x, y_test=whole)
    assert load_data(ref).num_classes == 6


def test_zero_samples_is_empty_data(tmp_path: Path) -> None:
    x = np.zeros((0, 4, 4), np.uint8)
    ref = _save(
        tmp_path / "e.npz", x_train=x, y_train=np.zeros(0, int), x_test=x, y_test=np.zeros(0, int)
    )
    with pytest.raises(
        EmptyDataError, match=r"data 'npz:.*e\.npz': the train split has no samples"
    ):
        load_data(ref)


def test_object_arrays_are_refused_not_unpickled(tmp_path: Path) -> None:
    obj = np.empty(4, dtype=object)
    obj[:] = [np.zeros(2)] * 4
    ref = _save(
        tmp_path / "o.npz",
        x_train=obj,
        y_train=np.zeros(4, int),
        x_test=obj,
        y_test=np.zeros(4, int),
    )
    with pytest.raises(
        DataError, match=r"array 'x_train' .* holds Python objects; .*pickle, which is refused"
    ):
        load_data(ref)


class _Touch:
    """Unpickling this creates ``marker``: proof of whether a pickle was executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[Path]]:
        return (Path.touch, (self.marker,))


def test_pickle_file_is_refused_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    evil = tmp_path / "evil.npz"
    evil.write_bytes(pickle.dumps(_Touch(marker)))
    with pytest.raises(
        DataError, match=r"cannot read '.*evil\.npz' as a \.npz archive .*pickle files are refused"
    ):
        load_data(f"npz:{evil}")
    assert not marker.exists()
