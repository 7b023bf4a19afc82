"""Octave / MATLAB interchange: real .mat round trips, Octave layouts, extras and refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io as sio
import torch
from torch import nn

import torchshrink
from torchshrink.core.errors import ConfigError, ModelFileError, ShapeError
from torchshrink.core.matio import export_mat, import_mat, mat_name, read_mat


def _lenet5() -> nn.Module:
    torch.manual_seed(0)
    return torchshrink.load_model("zoo:lenet5")


def test_names_map_dots_and_leading_digits() -> None:
    assert mat_name("fc1.weight") == "fc1_weight"
    assert mat_name("features.0.bias") == "features_0_bias"
    assert mat_name("0.weight") == "p_0_weight"


def test_round_trip_restores_every_tensor_and_the_predictions(tmp_path: Path) -> None:
    src, dst = _lenet5(), torchshrink.load_model("zoo:lenet5")
    out = export_mat(src, tmp_path / "lenet5.mat")
    assert out.variables == (
        "conv1_weight", "conv1_bias", "conv2_weight", "conv2_bias",
        "fc1_weight", "fc1_bias", "fc2_weight", "fc2_bias",
    )  # fmt: skip
    raw = sio.loadmat(out.path)
    assert raw["conv2_weight"].shape == (50, 20, 5, 5)
    assert raw["fc1_bias"].shape == (1, 500)  # MATLAB has no 1-D arrays
    # Element (i, j) in MATLAB is element [i, j] here: no silent transpose.
    assert raw["fc1_weight"][3, 7] == pytest.approx(float(src.fc1.weight.detach()[3, 7]))
    report = import_mat(dst, out.path)
    assert len(report.loaded) == 8 and report.missing == () and report.unexpected == ()
    for key, value in src.state_dict().items():
        assert torch.equal(dst.state_dict()[key], value)
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(dst(x), src(x))


def test_octave_layouts_are_accepted(tmp_path: Path) -> None:
    # What Octave writes: column vectors for biases, trailing singleton dimensions dropped.
    model = nn.Sequential(nn.Conv2d(3, 4, kernel_size=1), nn.Flatten(), nn.Linear(4, 2))
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((4, 3)).astype(np.float64)  # conv weight (4, 3, 1, 1)
    doc = {
        "p_0_weight": w0,
        "p_0_bias": np.arange(4.0).reshape(4, 1),
        "p_2_weight": rng.standard_normal((2, 4)),
        "p_2_bias": np.array([[1.5, -2.0]]),
    }
    sio.savemat(tmp_path / "octave.mat", doc)
    import_mat(model, tmp_path / "octave.mat")
    assert model[0].weight.shape == (4, 3, 1, 1)
    assert torch.allclose(model[0].weight[:, :, 0, 0], torch.tensor(w0, dtype=torch.float32))
    assert model[0].bias.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert model[2].bias.tolist() == [1.5, -2.0]


def test_extras_round_trip_masks_codebooks_indices_scales(tmp_path: Path) -> None:
    from torchshrink.cluster import cluster_weights
    from torchshrink.cluster.finetune import assignments_from_model

    model = torchshrink.load_model("zoo:lenet300", model_args={"input_size": 8})
    with torch.no_grad():
        model.fc1.weight.mul_(model.fc1.weight.abs() > 0.05)
    cluster_weights(model, 4)
    books = assignments_from_model(model)
    masks = {"fc1.weight": model.fc1.weight != 0}
    out = export_mat(
        model, tmp_path / "c.mat", masks=masks, codebooks=books, scales={"fc2.weight": 0.125}
    )
    assert out.extras == ("masks", "codebooks", "indices", "scales")
    raw = sio.loadmat(out.path)
    idx = raw["indices"]["fc1_weight"][0, 0]
    cb = raw["codebooks"]["fc1_weight"][0, 0].reshape(-1)
    assert idx.dtype == np.uint8 and int(idx.min()) == 0 and int(idx.max()) == cb.size <= 16
    # The Octave recipe of the module docs rebuilds the weight exactly.
    w = np.zeros(idx.shape, dtype=np.float32)
    w[idx > 0] = cb[idx[idx > 0].astype(np.int64) - 1]
    assert np.array_equal(w, model.fc1.weight.detach().numpy())
    back = read_mat(out.path)
    assert torch.equal(back.masks["fc1.weight"], masks["fc1.weight"])
    assert torch.equal(back.indices["fc2.weight"], books["fc2.weight"].labels.long())
    assert torch.equal(back.codebooks["fc3.weight"], books["fc3.weight"].codebook)
    assert back.scales["fc2.weight"].tolist() == [0.125]
    assert back.weights["fc1.bias"].shape == (300,)  # 1 x n restored from the name map
    # A file with extras imports like any other: the structs are skipped.
    fresh = torchshrink.load_model("zoo:lenet300", model_args={"input_size": 8})
    assert len(import_mat(fresh, out.path).loaded) == 6
    assert torch.equal(fresh.fc1.weight, model.fc1.weight)


def test_shape_errors_list_every_mismatch_and_spot_a_transpose(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Linear(5, 3), nn.Linear(3, 2))
    sio.savemat(
        tmp_path / "bad.mat",
        {
            "p_0_weight": np.zeros((5, 3)),  # transposed
            "p_0_bias": np.zeros((1, 3)),
            "p_1_weight": np.zeros((2, 4)),  # plain wrong
            "p_1_bias": np.zeros((1, 2)),
        },
    )
    with pytest.raises(
        ShapeError, match=r"'0\.weight' .*\(5, 3\), expected \(3, 5\) \(its transpose"
    ) as e:
        import_mat(model, tmp_path / "bad.mat")
    assert "'1.weight' (variable 'p_1_weight') has shape (2, 4), expected (2, 3)" in str(e.value)
    assert torch.count_nonzero(model[0].weight) > 0  # nothing was loaded


def test_strict_missing_and_unexpected(tmp_path: Path) -> None:
    model = nn.Linear(3, 2)
    sio.savemat(tmp_path / "part.mat", {"weight": np.ones((2, 3)), "extra_thing": np.ones(2)})
    with pytest.raises(
        ShapeError, match=r"missing from the file: 'bias' .*matching no tensor: extra_thing"
    ):
        import_mat(model, tmp_path / "part.mat")
    report = import_mat(model, tmp_path / "part.mat", strict=False)
    assert report.loaded == ("weight",) and report.missing == ("bias",)
    assert report.unexpected == ("extra_thing",)
    assert float(model.weight.detach().sum()) == 6.0


def test_refuses_cells_structs_hdf5_and_garbage(tmp_path: Path) -> None:
    model = nn.Linear(2, 1)
    cell = np.empty((1, 1), dtype=object)
    cell[0, 0] = np.ones((1, 2))
    sio.savemat(tmp_path / "cell.mat", {"weight": cell, "bias": np.ones((1, 1))})
    with pytest.raises(ModelFileError, match="variable 'weight' is a cell, object or function"):
        import_mat(model, tmp_path / "cell.mat")
    sio.savemat(tmp_path / "struct.mat", {"weight": {"a": 1.0}, "bias": np.ones((1, 1))})
    with pytest.raises(ModelFileError, match="variable 'weight' is a struct"):
        import_mat(model, tmp_path / "struct.mat")
    sio.savemat(tmp_path / "masks.mat", {"weight": np.ones((1, 2)), "masks": np.ones(3)})
    with pytest.raises(ModelFileError, match="'masks' must be a struct of arrays"):
        import_mat(model, tmp_path / "masks.mat")
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, HDF5 schema 1.00 .".ljust(116)
    (tmp_path / "v73.mat").write_bytes(header + b"\0" * 8 + b"\x00\x02IM" + b"\0" * 512)
    with pytest.raises(ModelFileError, match=r"v7\.3 \(HDF5\).*-v7"):
        import_mat(model, tmp_path / "v73.mat")
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(ModelFileError, match=r"not a readable \.mat file"):
        import_mat(model, tmp_path / "junk.mat")
    with pytest.raises(ModelFileError, match=r"no \.mat file at"):
        import_mat(model, tmp_path / "absent.mat")


def test_export_refuses_colliding_or_unknown_names(tmp_path: Path) -> None:
    class Clash(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Module()
            self.a.register_parameter("c_d", nn.Parameter(torch.zeros(1)))
            self.a_c = nn.Module()
            self.a_c.register_parameter("d", nn.Parameter(torch.zeros(1)))

    with pytest.raises(ConfigError, match=r"'a\.c_d' and 'a_c\.d' both map to the MATLAB name"):
        export_mat(Clash(), tmp_path / "x.mat")
    with pytest.raises(ConfigError, match=r"masks: 'fc9\.weight' is not a floating-point tensor"):
        export_mat(nn.Linear(2, 2), tmp_path / "y.mat", masks={"fc9.weight": torch.ones(2)})
