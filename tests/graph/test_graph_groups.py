"""Dependency groups: exact structure per pattern, errors, ignore= and custom handlers."""

from __future__ import annotations

import pytest
import torch
from archs import ARCHS, CustomLayerNet, Gain
from torch import nn

from torchshrink.core.errors import ShapeError, UnsupportedLayerError
from torchshrink.core.zoo import create_zoo_model
from torchshrink.graph import Group, OpContext, OpHandler, dependency_groups, register_op_handler
from torchshrink.graph.handlers import _BY_TYPE


def _groups(name: str, **kw: object) -> tuple[nn.Module, list[Group]]:
    model, inputs = ARCHS[name]()
    return model, dependency_groups(model, inputs, **kw)  # type: ignore[arg-type]


def _entry(g: Group, module: str, param: str = "weight", dim: int | None = None):  # type: ignore[no-untyped-def]
    return next(
        e for e in g.entries if e.module == module and e.param == param and dim in (None, e.dim)
    )


def test_concat_offsets_place_each_producer_at_its_position() -> None:
    _, groups = _groups("dense_concat")
    by = {g.label: g for g in groups}
    assert {k: g.size for k, g in by.items()} == {"stem:out": 6, "c1:out": 4, "c2:out": 4}
    assert _entry(by["c1:out"], "c2", dim=1).index.tolist() == [6, 7, 8, 9]
    # fc reads 14 channels x 16 positions: c2's channel 0 starts at feature 10 * 16.
    fc = _entry(by["c2:out"], "fc", dim=1)
    assert fc.index[:2].tolist() == [160, 161] and len(fc.index) == 64
    assert fc.channel[15:17].tolist() == [0, 1]


def test_flatten_expands_each_channel_into_its_features() -> None:
    _, [g] = _groups("flatten_linear")
    fc = _entry(g, "fc", dim=1)
    assert fc.index.tolist() == list(range(64))
    assert fc.channel.tolist() == [c for c in range(4) for _ in range(16)]


def test_chunk_halves_shrink_together_and_fixed_split_is_kept() -> None:
    _, groups = _groups("split_chunk", include_blocked=True)
    [glu] = [g for g in groups if g.prunable]
    conv = _entry(glu, "conv", dim=0)
    assert glu.size == 4 and conv.index.tolist() == list(range(8))
    assert conv.channel.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    blocked = [g for g in groups if g.label.startswith("conv2")]
    assert blocked and all("split uses fixed sizes" in r for g in blocked for r in g.reasons)


def test_grouped_and_depthwise_layouts() -> None:
    _, groups = _groups("grouped_depthwise")
    by = {g.label: g for g in groups}
    grouped = by["grouped:out per group"]
    assert grouped.size == 4
    assert _entry(grouped, "grouped", dim=0).channel.tolist() == [0, 1, 2, 3] * 2
    dw = _entry(grouped, "dw", dim=0)  # multiplier 2: output 2c, 2c+1 come from input c
    assert dw.role == "through" and dw.channel.tolist() == [0, 0, 1, 1, 2, 2, 3, 3] * 2
    # conv's 8 filters feed a 2-group conv: channel j of both groups goes together.
    assert by["conv:out[0:4]"].size == 4  # the space was cut in two halves, then merged
    assert _entry(by["conv:out[0:4]"], "conv", dim=0).channel.tolist() == [0, 1, 2, 3] * 2


def test_norm_layers_follow_their_channels() -> None:
    _, groups = _groups("norms")
    entries = {(e.module, e.param) for g in groups for e in g.entries}
    assert {("bn", "running_var"), ("gn", "weight"), ("ln", "bias")} <= entries
    gn_group = next(g for g in groups if any(e.module == "gn" for e in g.entries))
    assert gn_group.size == 2  # 8 channels in 4 GroupNorm groups: j of every group together


def test_squeeze_excite_gate_shares_the_channels_it_scales() -> None:
    _, groups = _groups("squeeze_excite")
    se = next(g for g in groups if g.label == "conv:out")
    assert {(e.module, e.dim) for e in se.entries} >= {("fc1", 1), ("fc2", 0), ("conv2", 1)}


def test_transposed_conv_weight_dims() -> None:
    _, groups = _groups("transposed_conv")
    by = {g.label: g for g in groups}
    assert _entry(by["down:out"], "up").dim == 0
    assert (_entry(by["up:out"], "up").dim, _entry(by["up:out"], "out").dim) == (1, 1)


def test_direct_parameters_join_the_dims_they_act_on() -> None:
    _, groups = _groups("direct_params")
    stream = next(g for g in groups if g.label == "embed:out")
    assert {("", "cls_token", 2), ("", "scale", 0)} <= {
        (e.module, e.param, e.dim) for e in stream.entries
    }


def test_multi_input_multi_output() -> None:
    _, groups = _groups("multi_io", include_blocked=True)
    trunk = next(g for g in groups if g.label == "conv:out")
    assert trunk.prunable and {"conv", "vec", "fc1"} <= set(trunk.modules())
    assert sorted(r for g in groups for r in g.reasons) == [
        "dimension 1 of model output 0 must keep its size",
        "dimension 1 of model output 1 must keep its size",
    ]


def test_resnet_option_a_padding_blocks_only_the_padded_channels() -> None:
    m = create_zoo_model("resnet20", input_size=16)
    groups = dependency_groups(m, m.example_inputs(1), include_blocked=True)
    stream1 = next(g for g in groups if g.label == "conv1:out")
    assert stream1.prunable and stream1.size == 16
    # Stage 2's 32 channels: 16 tied to stage 1 through the shortcut, 16 facing zero padding.
    mid = _entry(stream1, "layer2.0.conv2", dim=0)
    assert mid.index.tolist() == list(range(8, 24))
    padded = [g for g in groups if not g.prunable and "zero padding" in g.reasons[0]]
    assert sum(g.size for g in padded) == 16 + 32  # 8 + 8 in stage 2, 16 + 16 in stage 3


def test_heads_of_every_attention_form() -> None:
    vit = create_zoo_model("vit", dim=48, depth=1, heads=3, input_size=16)
    [heads] = [g for g in dependency_groups(vit, vit.example_inputs(1)) if g.unit == "head"]
    assert heads.size == 3 and _entry(heads, "blocks.0.attn.proj", dim=1).channel[
        15:17
    ].tolist() == [0, 1]
    _, groups = _groups("mha")
    [mha] = [g for g in groups if g.unit == "head"]
    rows = _entry(mha, "mha", "in_proj_weight", dim=0)
    assert mha.size == 2 and rows.channel.tolist() == ([0] * 4 + [1] * 4) * 3


def test_unsupported_op_names_the_module_and_ignore_keeps_its_channels() -> None:
    model = CustomLayerNet()
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(UnsupportedLayerError, match=r"'einsum' in module 'gain' \(Gain\)"):
        dependency_groups(model, x)
    groups = dependency_groups(model, x, ignore=["gain"], include_blocked=True)
    conv = next(g for g in groups if g.label == "conv:out")
    assert not conv.prunable and "ignore=" in conv.reasons[0]
    assert [g.label for g in groups if g.prunable] == ["conv2:out"]


def test_a_registered_handler_makes_a_custom_layer_prunable() -> None:
    @register_op_handler(Gain)
    class GainHandler(OpHandler):
        def propagate(self, ctx: OpContext) -> None:
            x = ctx.input_layouts(0)
            ctx.param("g", 0, x[1], role="through")
            ctx.set_output(0, x)

    try:
        model = CustomLayerNet()
        groups = dependency_groups(model, torch.randn(1, 3, 8, 8))
        conv = next(g for g in groups if g.label == "conv:out")
        assert ("gain", "g", 0) in {(e.module, e.param, e.dim) for e in conv.entries}
    finally:
        del _BY_TYPE[Gain]


def test_control_flow_is_traced_as_executed() -> None:
    model, x = ARCHS["control_flow"]()
    [g] = [g for g in dependency_groups(model, x) if g.label == "inp:out"]
    assert {"layers.0", "layers.2", "head"} <= set(g.modules())


def test_a_model_that_fails_on_its_inputs_names_the_layer() -> None:
    model, _ = ARCHS["flatten_linear"]()
    with pytest.raises(ShapeError, match="'fc'"):
        dependency_groups(model, torch.randn(1, 1, 7, 7))
