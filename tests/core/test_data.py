"""load_data: reference parsing, the kind registry, digits, mnist1d, text and calibration."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from torchshrink.core.data import (
    DATA_KINDS,
    data_names,
    load_data,
    parse_data_ref,
    register_data,
)
from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import DataError, EmptyDataError


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return load_data("digits", seed=0)


def _pixel_rows(b: DataBundle) -> Counter[tuple[int, ...]]:
    """The test images as raw 0..16 digit pixels (undoing the seed-dependent normalisation)."""
    x = b.test.tensors[0] * b.std[0] + b.mean[0]  # (N, 1, 8, 8) in [0, 1]
    return Counter(tuple(r) for r in torch.round(x * 16).to(torch.int64).flatten(1).tolist())


# --- references and registry ---------------------------------------------------------------


def test_data_names_lists_builtin_kinds() -> None:
    assert data_names() == sorted(data_names())
    assert {"digits", "mnist1d", "npz", "imagefolder", "text"} <= set(data_names())


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("digits", ("digits", None)),
        ("  MNIST1D ", ("mnist1d", None)),
        ("npz:/d/a:b.npz", ("npz", "/d/a:b.npz")),
        ("data/x.npz", ("npz", "data/x.npz")),
        ("lines.TXT", ("text", "lines.TXT")),
        ("text:s.txt", ("text", "s.txt")),
    ],
)
def test_parse_data_ref(ref: str, expected: tuple[str, str | None]) -> None:
    assert parse_data_ref(ref) == expected


def test_bare_directory_means_imagefolder(tmp_path: Path) -> None:
    assert parse_data_ref(str(tmp_path)) == ("imagefolder", str(tmp_path))


@pytest.mark.parametrize("ref", ["foo:bar", "nope"])
def test_unknown_kind_lists_valid_kinds(ref: str) -> None:
    with pytest.raises(
        DataError, match=r"unknown data kind '(foo|nope)'; valid names: digits, .*npz"
    ):
        load_data(ref)


def test_empty_reference() -> None:
    with pytest.raises(DataError, match="empty data reference; valid kinds: digits"):
        load_data("  ")


def test_path_kind_without_path_and_plain_kind_with_path() -> None:
    with pytest.raises(DataError, match="kind 'npz' needs a path"):
        load_data("npz:")
    with pytest.raises(DataError, match="kind 'digits' takes no path"):
        load_data("digits:/tmp/x")


def test_unknown_option_and_bad_limit() -> None:
    with pytest.raises(
        DataError, match="unknown option 'colour' for kind 'digits'; valid options: test_fraction"
    ):
        load_data("digits", colour=True)
    with pytest.raises(DataError, match="limit must be a positive integer, got 0"):
        load_data("digits", limit=0)


def test_register_data_adds_a_kind() -> None:
    def toy(*, ref: str, seed: int, limit: int | None, n: int = 3) -> DataBundle:
        ds = TensorDataset(torch.full((n, 2), float(seed)), torch.zeros(n, dtype=torch.long))
        return DataBundle(ref, ds, ds, num_classes=1, input_shape=(2,))

    register_data("toy-test-kind", takes_path=False, summary="toy")(toy)
    try:
        b = load_data("toy-test-kind", seed=7, n=5)
        assert (len(b.train), b.train[0][0][0].item()) == (5, 7.0)
        assert "toy-test-kind" in data_names()
        with pytest.raises(ValueError, match="already registered"):
            register_data("toy-test-kind", takes_path=False)(toy)
    finally:
        DATA_KINDS._items.pop("toy-test-kind")


# --- digits ---------------------------------------------------------------------------------


def test_digits_shapes_split_and_classes(digits: DataBundle) -> None:
    assert digits.input_shape == (1, 8, 8)
    assert digits.num_classes == 10
    assert len(digits.train) + len(digits.test) == 1797
    assert len(digits.test) == pytest.approx(0.2 * 1797, abs=10)
    x, y = digits.train[0]
    assert (x.shape, x.dtype, y.dtype) == (torch.Size([1, 8, 8]), torch.float32, torch.int64)
    assert sorted(digits.test.tensors[1].unique().tolist()) == list(range(10))
    # stratified: every class has about 20 % of its samples in test
    counts = torch.bincount(digits.test.tensors[1], minlength=10)
    assert counts.min().item() >= 34 and counts.max().item() <= 38


def test_digits_normalised_with_train_stats(digits: DataBundle) -> None:
    x = digits.train.tensors[0]
    assert x.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert x.std().item() == pytest.approx(1.0, abs=1e-3)
    assert digits.mean[0] == pytest.approx(0.305, abs=0.01)  # pixels scaled to [0, 1] first
    raw = x * digits.std[0] + digits.mean[0]
    assert raw.min().item() == pytest.approx(0.0, abs=1e-5)
    assert raw.max().item() == pytest.approx(1.0, abs=1e-5)


def test_digits_seed_fixes_the_split(digits: DataBundle) -> None:
    again = load_data("digits", seed=0)
    other = load_data("digits", seed=1)
    assert torch.equal(again.test.tensors[0], digits.test.tensors[0])
    assert torch.equal(again.train.tensors[1], digits.train.tensors[1])
    assert _pixel_rows(again) == _pixel_rows(digits)
    assert _pixel_rows(other) != _pixel_rows(digits)  # a different set of test images


def test_limit_keeps_a_prefix_of_the_seeded_shuffle(digits: DataBundle) -> None:
    small = load_data("digits", seed=0, limit=50)
    assert (len(small.train), len(small.test)) == (50, 50)
    assert torch.equal(small.train.tensors[0], digits.train.tensors[0][:50])
    assert small.mean == digits.mean  # statistics come from the whole train split
    assert small.meta["train_size"] == 50


def test_calibration_is_deterministic(digits: DataBundle) -> None:
    a = digits.calibration(16, seed=3)
    b = digits.calibration(16, seed=3)
    c = digits.calibration(16, seed=4)
    assert len(a) == 16
    assert a.indices == b.indices
    assert a.indices != c.indices
    assert len(digits.calibration(10_000)) == len(digits.train)


# --- mnist1d --------------------------------------------------------------------------------


def test_mnist1d_generated_locally() -> None:
    random.seed(123)
    np.random.seed(123)
    before = (random.random(), np.random.rand())
    random.seed(123)
    np.random.seed(123)
    b = load_data("mnist1d", num_samples=200, seed=0)
    assert (random.random(), np.random.rand()) == before  # global RNG states left untouched
    assert b.input_shape == (1, 40)
    assert (b.num_classes, len(b.train), len(b.test)) == (10, 160, 40)
    assert b.train.tensors[0].shape == (160, 1, 40)
    assert b.train.tensors[0].mean().item() == pytest.approx(0.0, abs=1e-5)
    assert torch.bincount(torch.cat([b.train.tensors[1], b.test.tensors[1]])).tolist() == [20] * 10


def test_mnist1d_same_generator_seed_same_samples(tmp_path: Path) -> None:
    a = load_data("mnist1d", num_samples=100, limit=8)
    b = load_data("mnist1d", num_samples=100, limit=8, cache_dir=tmp_path)
    c = load_data("mnist1d", num_samples=100, limit=8, cache_dir=tmp_path)  # read from the cache
    assert torch.equal(a.train.tensors[0], b.train.tensors[0])
    assert torch.equal(b.train.tensors[0], c.train.tensors[0])
    assert len(list(tmp_path.glob("mnist1d_*.npz"))) == 1
    with pytest.raises(DataError, match="num_samples must be at least 20, got 5"):
        load_data("mnist1d", num_samples=5)


# --- text -----------------------------------------------------------------------------------


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_text_split_is_disjoint_and_seeded(tmp_path: Path) -> None:
    lines = [f"sentence number {i}" for i in range(40)]
    path = _write(tmp_path / "s.txt", [*lines[:20], "", "   ", *lines[20:]])
    b = load_data(f"text:{path}", seed=0)
    assert (b.task, b.num_classes, b.input_shape) == ("text", None, ())
    assert (len(b.train), len(b.test)) == (36, 4)
    assert set(b.train) | set(b.test) == set(lines)
    assert set(b.train).isdisjoint(b.test)
    assert b.meta["overlap"] is False
    assert list(load_data(f"text:{path}", seed=0).test) == list(b.test)
    assert list(load_data(f"text:{path}", seed=5).test) != list(b.test)
    assert len(load_data(f"text:{path}", limit=3).train) == 3
    assert list(b.calibration(5, seed=1)) == list(b.calibration(5, seed=1))


def test_tiny_text_file_keeps_all_lines_in_train(tmp_path: Path) -> None:
    path = _write(tmp_path / "tiny.txt", ["héllo wörld", "a second line", "third"])
    b = load_data(str(path))  # a bare .txt path is a text reference
    assert sorted(b.train) == sorted(["héllo wörld", "a second line", "third"])
    assert len(b.test) == 1 and b.test[0] in set(b.train)
    assert b.meta["overlap"] is True


def test_text_errors(tmp_path: Path) -> None:
    empty = _write(tmp_path / "empty.txt", ["", "  "])
    with pytest.raises(EmptyDataError, match=r"data 'text:.*empty\.txt': .* no non-blank lines"):
        load_data(f"text:{empty}")
    with pytest.raises(DataError, match=r"file not found: '.*missing\.txt'"):
        load_data(f"text:{tmp_path / 'missing.txt'}")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin\.txt' is not UTF-8 text"):
        load_data(f"text:{latin}")
