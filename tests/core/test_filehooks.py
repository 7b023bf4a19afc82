"""The decoder hook registry that lets model files hold coded tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from torchshrink.core.errors import ModelFileError
from torchshrink.core.filehooks import DECODER_MODULES, decode_state, register_decoder
from torchshrink.core.modelfile import load, save
from torchshrink.core.modelref import load_model


def _negate(compression: Any, state: dict[str, torch.Tensor], *, where: str) -> Any:
    return {k: -v for k, v in state.items()}


def _broken(compression: Any, state: dict[str, torch.Tensor], *, where: str) -> Any:
    raise IndexError("index 7 is out of bounds")


def test_files_without_codec_pass_through() -> None:
    state = {"w": torch.ones(2)}
    assert decode_state({"compression": {}}, state, where="f") is state
    assert decode_state({"compression": {"stage": "prune"}}, state, where="f") is state


def test_registered_decoder_runs_inside_load(tmp_path: Path) -> None:
    register_decoder("negate-test", _negate)
    model = load_model("zoo:lenet300")
    path = save(model, tmp_path / "m.safetensors", metadata={"codec": "negate-test"})
    assert torch.equal(load(path).fc2.weight, -model.fc2.weight.detach())


def test_unknown_codec_and_decoder_failure_are_model_file_errors() -> None:
    with pytest.raises(ModelFileError, match=r"codec .nope.*known codecs: .*huffman"):
        decode_state({"compression": {"codec": "nope"}}, {}, where="f.safetensors")
    with pytest.raises(ModelFileError, match="must be a string"):
        decode_state({"compression": {"codec": 3}}, {}, where="f")
    register_decoder("broken-test", _broken)
    with pytest.raises(ModelFileError, match=r"IndexError: index 7 .*the file is corrupt"):
        decode_state({"compression": {"codec": "broken-test"}}, {}, where="f")


def test_allow_list_names_only_torchshrink_modules() -> None:
    assert DECODER_MODULES == {"huffman": "torchshrink.codec.packed"}
