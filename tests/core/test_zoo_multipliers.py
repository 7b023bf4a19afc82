"""Width / depth multipliers of the LeNet families: layer sizes, forward shapes, defaults, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import torchshrink
from torchshrink.core.errors import ConfigError
from torchshrink.core.zoo import create_zoo_model


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("width", "channels"),
    [(1.0, (20, 50, 500)), (0.5, (10, 25, 250)), (0.125, (3, 6, 63)), (0.01, (1, 1, 5))],
)
def test_lenet5_width_scales_channels_rounded_half_up(
    width: float, channels: tuple[int, int, int]
) -> None:
    m = create_zoo_model("lenet5", width=width)
    c1, c2, f1 = channels
    assert (m.conv1.out_channels, m.conv2.in_channels, m.conv2.out_channels) == (c1, c1, c2)
    assert (m.fc1.in_features, m.fc1.out_features, m.fc2.in_features) == (c2 * 16, f1, f1)
    assert m(m.example_inputs(3)).shape == (3, 10)


def test_lenet5_width_half_has_expected_parameter_count() -> None:
    # conv1 1*10*25+10, conv2 10*25*25+25, fc1 400*250+250, fc2 250*10+10
    expected = 260 + 6275 + 100250 + 2510
    assert n_params(create_zoo_model("lenet5", width=0.5)) == expected


@pytest.mark.parametrize(
    ("width", "depth", "hidden", "last"),
    [
        (1.0, 1.0, (300, 100), "fc3"),
        (0.5, 1.0, (150, 50), "fc3"),
        (1.0, 0.5, (300,), "fc2"),
        (0.25, 1.5, (75, 25, 25), "fc4"),
        (0.001, 0.1, (1,), "fc2"),
    ],
)
def test_lenet300_width_and_depth(
    width: float, depth: float, hidden: tuple[int, ...], last: str
) -> None:
    m = create_zoo_model("lenet300", input_size=8, width=width, depth=depth)
    assert m.hidden == hidden
    linears = [n for n, mod in m.named_modules() if isinstance(mod, torch.nn.Linear)]
    assert linears[-1] == last and len(linears) == len(hidden) + 1
    assert [mod.out_features for mod in m.modules() if isinstance(mod, torch.nn.Linear)] == [
        *hidden,
        10,
    ]
    assert m(m.example_inputs(4)).shape == (4, 10)


def test_defaults_keep_published_models_and_layer_names() -> None:
    l300, l5 = create_zoo_model("lenet300"), create_zoo_model("lenet5")
    assert (n_params(l300), n_params(l5)) == (266_610, 431_080)
    assert list(l300.state_dict()) == [f"fc{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")]
    assert [n for n, _ in l300.named_children()] == [
        "flatten", "fc1", "relu1", "fc2", "relu2", "fc3",
    ]  # fmt: skip


@pytest.mark.parametrize("bad", [0, 0.0, -0.5, float("nan"), float("inf"), True, "0.5", None])
def test_bad_width_is_a_config_error(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"zoo:lenet5: option 'width' must be a positive number"):
        create_zoo_model("lenet5", width=bad)


def test_bad_depth_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"zoo:lenet300: option 'depth' .* got -1"):
        create_zoo_model("lenet300", depth=-1)


def test_scaled_model_file_round_trips(tmp_path: Path) -> None:
    m = torchshrink.load_model(
        "zoo:lenet300", model_args={"input_size": 8, "width": 0.2, "depth": 1.5}
    )
    x = m.example_inputs(2)
    back = torchshrink.load(torchshrink.save(m, tmp_path / "s.safetensors"))
    assert back.hidden == (60, 20, 20)
    assert torch.equal(back(x), m(x))


@pytest.mark.parametrize("shortcut", ["A", "B"])
@pytest.mark.parametrize(
    ("name", "width", "depth", "widths", "blocks"),
    [
        ("resnet20", 1.0, 1.0, (16, 32, 64), 3),
        ("resnet20", 0.5, 0.34, (8, 16, 32), 1),
        ("resnet20", 0.3, 2.0, (5, 10, 19), 6),  # odd channel steps: shortcut A pads unevenly
        ("resnet56", 0.25, 0.5, (4, 8, 16), 5),
    ],
)
def test_resnet_width_and_depth(
    name: str, width: float, depth: float, widths: tuple[int, int, int], blocks: int, shortcut: str
) -> None:
    m = create_zoo_model(name, width=width, depth=depth, shortcut=shortcut, input_size=16)
    stages = (m.layer1, m.layer2, m.layer3)
    assert tuple(s[-1].conv2.out_channels for s in stages) == widths
    assert [len(s) for s in stages] == [blocks] * 3
    assert (m.conv1.out_channels, m.fc.in_features) == (widths[0], widths[2])
    assert m(m.example_inputs(2)).shape == (2, 10)


def test_resnet_defaults_unchanged_and_multiplied_file_round_trips(tmp_path: Path) -> None:
    assert n_params(create_zoo_model("resnet20")) == 269_722
    assert n_params(create_zoo_model("resnet56", shortcut="B")) == 855_770
    m = torchshrink.load_model("zoo:resnet20", model_args={"width": 0.5, "depth": 0.34})
    back = torchshrink.load(torchshrink.save(m, tmp_path / "r.safetensors"))
    m.eval(), back.eval()
    x = m.example_inputs(2)
    assert torch.equal(m(x), back(x)) and n_params(back) == n_params(m)
    with pytest.raises(ConfigError, match="option 'depth' must be a positive number"):
        create_zoo_model("resnet20", depth=0)


def test_student_search_accepts_resnet_family() -> None:
    from torchshrink.auto.student_space import family_multipliers

    assert family_multipliers("zoo:resnet20") == ("width", "depth")
