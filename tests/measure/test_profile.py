"""profile: every field on real small models, the JSON record, and that nothing is changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import TensorDataset

from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import ShapeError
from torchshrink.measure.profile import ModelProfile, profile

REQUIRED_KEYS = {
    "params", "nonzero_params", "dense_bytes", "file_bytes", "macs", "latency_ms_p50",
    "latency_ms_p90", "throughput", "energy_mj", "layers",
}  # fmt: skip


def convnet() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3),  # (B, 8, 26, 26)
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),  # (B, 8, 13, 13)
        nn.Flatten(),
        nn.Linear(8 * 13 * 13, 10),
    )


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_full_profile_of_a_convnet() -> None:
    m = convnet()
    threads_before = torch.get_num_threads()
    p = profile(m, torch.randn(2, 1, 28, 28), threads=1, warmup=1, repeats=3)
    n = n_params(m)  # 80 + 16 + 13,530
    assert p.params == n == 13_626
    assert p.nonzero_params == n - 8  # the BatchNorm bias starts at zero
    assert p.dense_bytes == p.weight_bytes == 4 * n
    assert 4 * n < p.file_bytes < 4 * n + 2048
    assert 0 < p.zstd_bytes <= p.file_bytes * 1.01
    assert p.macs == 2 * (8 * 26 * 26 * 9 + 1352 * 10)
    assert sum(layer.macs for layer in p.layers) == p.macs
    assert p.batch_size == 2 and p.threads == 1 and torch.get_num_threads() == threads_before
    assert p.latency_ms_p50 is not None and p.latency_ms_p90 is not None
    assert p.latency_ms_p90 >= p.latency_ms_p50 > 0
    assert len(p.latency_samples_ms) == 3
    assert p.throughput == pytest.approx(2000 / p.latency_ms_p50)
    assert p.peak_memory_bytes is not None and p.peak_memory_bytes >= 2 * 8 * 26 * 26 * 4
    assert p.energy_mj > 0 and p.energy_mj_per_sample == pytest.approx(p.energy_mj / 2)
    assert p.accuracy is None
    assert any("Horowitz" in note for note in p.notes)


def test_to_dict_is_json_ready_with_the_required_keys() -> None:
    p = profile(convnet(), torch.randn(1, 1, 28, 28), repeats=2, measure_memory=False)
    rec = json.loads(json.dumps(p.to_dict()))
    assert REQUIRED_KEYS <= set(rec)
    assert "accuracy" not in rec
    assert rec["layers"][0] == {
        "name": "0", "type": "Conv2d", "params": 80, "nonzero": 80,
        "macs": 8 * 26 * 26 * 9, "nonzero_macs": 8 * 26 * 26 * 9, "output_shape": [1, 8, 26, 26],
    }  # fmt: skip
    assert rec["peak_memory_bytes"] is None


def test_profile_does_not_change_the_model() -> None:
    m = convnet().train()
    m[1].eval()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    profile(m, torch.randn(4, 1, 28, 28), repeats=2)
    assert [x.training for x in m] == [True, False, True, True, True, True]
    for k, v in m.state_dict().items():
        assert torch.equal(before[k], v), k


def test_bad_input_shape_names_the_layer() -> None:
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 10))
    with pytest.raises(ShapeError, match=r"module '1' \(Linear\).*\(1, 1024\)"):
        profile(mlp, torch.zeros(1, 1, 32, 32), measure_latency=False)


def _bundle_with_known_accuracy(m: nn.Module) -> DataBundle:
    x = torch.randn(40, 1, 28, 28)
    with torch.no_grad():
        y = m.eval()(x).argmax(1)
    y[:10] = (y[:10] + 1) % 10  # 10 of 40 wrong -> accuracy 0.75
    ds = TensorDataset(x, y)
    return DataBundle("known", ds, ds, num_classes=10, input_shape=(1, 28, 28))


def test_accuracy_from_a_data_bundle_or_a_dataset() -> None:
    m = convnet()
    data = _bundle_with_known_accuracy(m)
    p = profile(m, data.example_inputs(2), data=data, measure_latency=False, measure_memory=False)
    assert p.accuracy == pytest.approx(0.75)
    assert p.to_dict()["accuracy"] == pytest.approx(0.75)
    q = profile(m, data.example_inputs(1), data=data.test, measure_latency=False)
    assert q.accuracy == pytest.approx(0.75)


def test_text_bundle_skips_accuracy_with_a_note() -> None:
    texts = ["a b", "c d"]
    data = DataBundle("t", texts, texts, num_classes=None, input_shape=(), task="text")  # type: ignore[arg-type]
    p = profile(nn.Linear(4, 2), torch.zeros(1, 4), data=data, measure_latency=False)
    assert p.accuracy is None
    assert any("text" in note for note in p.notes)


def test_batch_size_resizes_inputs_and_scales_macs() -> None:
    one = profile(convnet(), torch.randn(1, 1, 28, 28), measure_latency=False, measure_memory=False)
    four = profile(
        convnet(), torch.randn(1, 1, 28, 28), batch_size=4, repeats=2, measure_memory=False
    )
    assert four.batch_size == 4 and four.macs == 4 * one.macs
    assert four.energy_mj > one.energy_mj


def test_sparse_model_and_file_path(tmp_path: Path) -> None:
    m = convnet()
    with torch.no_grad():
        m[5].weight[:, : 1352 // 2] = 0  # half of the Linear weights
    path = tmp_path / "m.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))
    p = profile(m, torch.randn(1, 1, 28, 28), file_path=path, measure_latency=False)
    assert p.file_bytes == path.stat().st_size
    assert p.nonzero_params == n_params(m) - 8 - 6760  # 8: the BatchNorm bias starts at zero
    assert p.sparsity == pytest.approx(6768 / 13_626)
    assert p.nonzero_macs == p.macs - 6760
    linear = next(layer for layer in p.layers if layer.name == "5")
    assert (linear.params, linear.nonzero) == (13_530, 13_530 - 6760)


def test_dict_inputs() -> None:
    class Embed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(100, 16)
            self.fc = nn.Linear(16, 3)

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.fc(self.emb(input_ids).mean(1))  # (B, 3)

    p = profile(Embed(), {"input_ids": torch.zeros(5, 7, dtype=torch.long)}, repeats=2)
    assert isinstance(p, ModelProfile)
    assert p.batch_size == 5 and p.macs == 5 * 16 * 3


def test_busy_machine_note_fires_only_when_cores_are_oversubscribed() -> None:
    import os

    from torchshrink.measure.profile import busy_machine_note

    cores = os.cpu_count() or 1
    assert busy_machine_note(1, load=0.0) is None
    note = busy_machine_note(cores, load=float(cores) + 3.0)
    assert note is not None and f"on {cores} cores" in note and "busy" in note
