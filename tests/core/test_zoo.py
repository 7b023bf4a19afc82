"""Tests of the model zoo: every model builds and runs, exact parameter counts, options, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from torchshrink.core.errors import ConfigError, ShapeError, UnknownModelError
from torchshrink.core.zoo import create_zoo_model, zoo_names
from torchshrink.core.zoo.resnet_cifar import ShortcutA

ALL_NAMES = [
    "lenet300",
    "lenet5",
    "mlp_mixer",
    "mobilenetv2",
    "resnet20",
    "resnet56",
    "transformer",
    "vgg11_bn",
    "vit",
]
CIFAR_NAMES = ["resnet20", "resnet56", "vgg11_bn", "mobilenetv2", "vit", "mlp_mixer"]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def vit_formula(*, c: int, s: int, p: int, d: int, depth: int, ratio: int, k: int) -> int:
    n, h = (s // p) ** 2, ratio * d
    patch = c * p * p * d + d
    tokens = d + (n + 1) * d  # class token + positions
    block = 2 * 2 * d + 4 * (d * d + d) + (d * h + h) + (h * d + d)  # 2 LN, q/k/v/proj, MLP
    return patch + tokens + depth * block + 2 * d + d * k + k


def transformer_formula(*, v: int, length: int, d: int, depth: int, ratio: int, k: int) -> int:
    f = ratio * d
    layer = (3 * d * d + 3 * d) + (d * d + d) + (d * f + f) + (f * d + d) + 2 * 2 * d
    return v * d + length * d + depth * layer + 2 * d + d * k + k


def mixer_formula(*, c: int, s: int, p: int, d: int, depth: int, t: int, f: int, k: int) -> int:
    n = (s // p) ** 2
    block = 2 * 2 * d + (n * t + t + t * n + n) + (d * f + f + f * d + d)
    return c * p * p * d + d + depth * block + 2 * d + d * k + k


def test_zoo_names_lists_every_model() -> None:
    assert zoo_names() == sorted(ALL_NAMES)


@pytest.mark.parametrize("name", ALL_NAMES)
def test_every_model_runs_on_its_example_inputs(name: str) -> None:
    model = create_zoo_model(name)
    x = model.example_inputs(2)
    assert x.shape[0] == 2
    assert model(x).shape == (2, model.num_classes)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("lenet300", 266_610),
        ("lenet5", 431_080),
        ("resnet20", 269_722),
        ("resnet56", 853_018),
        ("vgg11_bn", 9_231_114),
        ("mobilenetv2", 2_236_682),
    ],
)
def test_published_parameter_counts(name: str, expected: int) -> None:
    assert n_params(create_zoo_model(name)) == expected


def test_vgg11_bn_count_matches_layer_formula() -> None:
    cfg = [64, 128, 256, 256, 512, 512, 512, 512]
    convs = sum(9 * cin * cout + cout for cin, cout in zip([3, *cfg[:-1]], cfg, strict=True))
    bns = sum(2 * c for c in cfg)
    assert convs + bns + 512 * 10 + 10 == n_params(create_zoo_model("vgg11_bn")) == 9_231_114


@pytest.mark.parametrize(("c", "s"), [(3, 32), (1, 28)])
def test_vit_count_matches_formula(c: int, s: int) -> None:
    model = create_zoo_model("vit", in_channels=c, input_size=s)
    assert n_params(model) == vit_formula(c=c, s=s, p=4, d=192, depth=6, ratio=4, k=10)
    small = create_zoo_model("vit", patch_size=8, dim=64, depth=2, heads=4, mlp_ratio=2)
    assert n_params(small) == vit_formula(c=3, s=32, p=8, d=64, depth=2, ratio=2, k=10)


def test_transformer_count_matches_formula() -> None:
    assert n_params(create_zoo_model("transformer")) == 541_442
    assert 541_442 == transformer_formula(v=1000, length=128, d=128, depth=2, ratio=4, k=2)
    model = create_zoo_model(
        "transformer", vocab_size=50, max_len=16, dim=32, depth=3, num_classes=5
    )
    assert n_params(model) == transformer_formula(v=50, length=16, d=32, depth=3, ratio=4, k=5)


def test_mlp_mixer_count_matches_formula() -> None:
    expected = mixer_formula(c=3, s=32, p=4, d=128, depth=4, t=64, f=512, k=10)
    assert n_params(create_zoo_model("mlp_mixer")) == expected == 569_994


def test_transformer_example_inputs_are_token_ids() -> None:
    model = create_zoo_model("transformer", vocab_size=50, max_len=16)
    x = model.example_inputs(3)
    assert x.dtype == torch.long and x.shape == (3, 16)
    assert 0 <= int(x.min()) and int(x.max()) < 50
    assert model(x[:, :5]).shape == (3, 2)  # shorter sequences use a prefix of the positions
    with pytest.raises(ShapeError, match="max_len=16"):
        model(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize("name", [*CIFAR_NAMES, "lenet300", "lenet5"])
def test_num_classes_changes_the_head(name: str) -> None:
    model = create_zoo_model(name, num_classes=100)
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert last.out_features == 100
    assert model(model.example_inputs(1)).shape == (1, 100)


@pytest.mark.parametrize("name", CIFAR_NAMES)
def test_cifar_models_accept_mnist_geometry(name: str) -> None:
    model = create_zoo_model(name, in_channels=1, input_size=28)
    x = model.example_inputs(2)
    assert x.shape == (2, 1, 28, 28)
    assert model(x).shape == (2, 10)


def test_lenet300_on_8x8_digits() -> None:
    model = create_zoo_model("lenet300", input_size=8)
    assert n_params(model) == 64 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
    assert model(model.example_inputs(2)).shape == (2, 10)


@pytest.mark.parametrize(("name", "expected_b"), [("resnet20", 272_474), ("resnet56", 855_770)])
def test_resnet_shortcut_b_adds_two_projections(name: str, expected_b: int) -> None:
    a = create_zoo_model(name)
    b = create_zoo_model(name, shortcut="B")
    # Two projections (16->32, 32->64) of a 1x1 conv plus BN (weight and bias) each.
    assert n_params(b) - n_params(a) == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert n_params(b) == expected_b
    assert sum(isinstance(m, ShortcutA) for m in a.modules()) == 2
    assert sum(isinstance(m, ShortcutA) for m in b.modules()) == 0
    assert b(b.example_inputs(2)).shape == (2, 10)


def test_resnet_module_names_are_stable() -> None:
    names = dict(create_zoo_model("resnet20").named_modules())
    assert isinstance(names["layer1.0.conv1"], nn.Conv2d)
    assert isinstance(names["layer2.0.shortcut"], ShortcutA)
    assert isinstance(names["fc"], nn.Linear)


def test_shortcut_a_subsamples_and_zero_pads_channels() -> None:
    x = torch.arange(2 * 16 * 4 * 4, dtype=torch.float32).reshape(2, 16, 4, 4)
    y = ShortcutA(16, 32, stride=2)(x)
    assert y.shape == (2, 32, 2, 2)
    torch.testing.assert_close(y[:, 8:24], x[:, :, ::2, ::2])
    assert float(y[:, :8].abs().sum()) == 0.0 and float(y[:, 24:].abs().sum()) == 0.0


def test_resnet_rejects_unknown_shortcut() -> None:
    with pytest.raises(ConfigError, match="'shortcut' must be 'A' or 'B', got 'C'"):
        create_zoo_model("resnet20", shortcut="C")


def test_mobilenetv2_width_mult_rounds_channels_to_multiples_of_8() -> None:
    model = create_zoo_model("mobilenetv2", width_mult=0.5)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.out_channels % 8 == 0 for c in convs)
    assert convs[0].out_channels == 16 and model.last_channels == 1280
    assert n_params(model) == 700_490
    depthwise = [c for c in convs if c.groups > 1]
    assert len(depthwise) == 17 and all(c.groups == c.in_channels for c in depthwise)


def test_lenet5_macs_match_the_published_layer_sum() -> None:
    model = create_zoo_model("lenet5")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 1, 28, 28))
    expected = 20 * 24 * 24 * 25 + 50 * 8 * 8 * 500 + 800 * 500 + 500 * 10
    assert expected == 2_293_000
    assert abs(counter.get_total_flops() / 2 - expected) / expected < 0.01


def test_vit_macs_match_formula_including_attention() -> None:
    # Explicit matmul attention is visible to the flop counter (fused CPU SDPA is not).
    model = create_zoo_model("vit", dim=64, depth=2, heads=4, mlp_ratio=2).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(model.example_inputs(1))
    n, d, h = 65, 64, 128  # tokens (64 patches + class), width, MLP width
    block = 4 * n * d * d + 2 * n * n * d + 2 * n * d * h
    expected = 64 * (3 * 16) * d + 2 * block + d * 10
    assert counter.get_total_flops() // 2 == expected == 5_538_688


def test_transformer_macs_need_fastpath_off_and_math_attention() -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    model = create_zoo_model("transformer").eval()
    x = model.example_inputs(1)
    length, d, f = 128, 128, 512
    layer = 4 * length * d * d + 2 * length * length * d + 2 * length * d * f
    expected = 2 * layer + d * 2
    fused = FlopCounterMode(display=False)
    with fused, torch.no_grad():
        model(x)
    assert fused.get_total_flops() // 2 < expected // 1000  # the fused fast path is not counted
    was_enabled = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            model(x)
    finally:
        torch.backends.mha.set_fastpath_enabled(was_enabled)
    assert counter.get_total_flops() // 2 == expected == 58_720_512


def test_lenet5_too_small_input_names_the_option() -> None:
    with pytest.raises(ConfigError, match=r"input_size.*got 15"):
        create_zoo_model("lenet5", input_size=15)
    assert create_zoo_model("lenet5", input_size=16).fc1.in_features == 50


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(UnknownModelError, match=r"'nope'.*lenet300.*resnet20.*vit"):
        create_zoo_model("nope")


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("lenet300", {"num_classes": 0}, "'num_classes' must be a positive integer, got 0"),
        ("vgg11_bn", {"in_channels": 2.5}, "'in_channels' must be a positive integer"),
        ("vit", {"patch_size": 5}, "'patch_size' \\(5\\) must divide 'input_size' \\(32\\)"),
        ("vit", {"heads": 5}, "'heads' \\(5\\) must divide 'dim' \\(192\\)"),
        ("mobilenetv2", {"width_mult": -1.0}, "'width_mult' must be a positive number"),
        ("transformer", {"dropout": 1.5}, "'dropout' must be in \\[0, 1\\)"),
    ],
)
def test_bad_options_raise_config_error(name: str, kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        create_zoo_model(name, **kwargs)


def test_unknown_option_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match="depht"):
        create_zoo_model("vit", depht=3)


@pytest.mark.parametrize("name", ["resnet20", "vit", "transformer"])
def test_same_seed_gives_same_weights(name: str) -> None:
    torch.manual_seed(123)
    a = create_zoo_model(name).state_dict()
    torch.manual_seed(123)
    b = create_zoo_model(name).state_dict()
    torch.manual_seed(124)
    c = create_zoo_model(name).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_example_inputs_do_not_move_the_global_rng() -> None:
    model = create_zoo_model("lenet5")
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    x1 = model.example_inputs(2)
    assert torch.equal(torch.rand(3), expected)
    assert torch.equal(x1, model.example_inputs(2))


def test_example_inputs_follow_the_model_dtype() -> None:
    model = create_zoo_model("lenet300").to(torch.bfloat16)
    x = model.example_inputs(2)
    assert x.dtype == torch.bfloat16
    assert model(x).dtype == torch.bfloat16
