"""The dynamic trace: nodes, values, handled modules as single nodes, control flow."""

from __future__ import annotations

import pytest
import torch
from archs import ARCHS
from torch import nn

from torchshrink.core.errors import ConfigError
from torchshrink.graph import trace


def test_handled_modules_are_single_nodes_and_functions_are_recorded() -> None:
    model, x = ARCHS["dense_concat"]()
    g = trace(model, x)
    kinds = [(n.kind, n.target) for n in g.nodes]
    assert kinds[:3] == [("input", "input.0"), ("module", "stem"), ("function", "relu")]
    assert [t for k, t in kinds if k == "module"] == ["stem", "c1", "c2", "fc"]
    cat = next(n for n in g.nodes if n.target == "cat")
    assert [g.values[v].shape for v in cat.outputs] == [(2, 10, 8, 8)]
    assert g.values[g.outputs[0]].shape == (2, 5)
    assert len(g.users(g.inputs[0])) == 1


def test_direct_parameters_are_param_nodes_with_their_scope() -> None:
    model, x = ARCHS["direct_params"]()
    g = trace(model, x)
    params = [n.target for n in g.nodes if n.kind == "param"]
    assert params == ["cls_token", "scale"]
    expand = next(n for n in g.nodes if n.target == "expand")
    assert (expand.scope, expand.scope_type) == ("", "DirectParams")


def test_branch_taken_depends_on_the_data() -> None:
    model, x = ARCHS["control_flow"]()
    with torch.no_grad():
        model.head.bias.zero_()
    pos = [n.target for n in trace(model, x.abs() * 0 + 1).nodes]
    for lin in (model.inp, *model.layers):  # every hidden unit off: h.sum() == 0 -> else branch
        lin.bias.data.fill_(-100.0)
    neg = [n.target for n in trace(model, x).nodes]
    assert pos.count("layers.1") == 1 and ("mul" in pos or "__mul__" in pos)
    assert "neg" in neg or "__neg__" in neg


def test_mha_is_one_node_even_inside_an_encoder_layer() -> None:
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True).eval()
    g = trace(layer, torch.randn(1, 5, 16))
    assert [n.target for n in g.module_nodes()] == [
        "self_attn",
        "norm1",
        "linear1",
        "linear2",
        "norm2",
    ]
    assert torch.backends.mha.get_fastpath_enabled()  # restored after the trace


def test_unknown_ignore_name_is_refused() -> None:
    model, x = ARCHS["flatten_linear"]()
    with pytest.raises(ConfigError, match=r"ignore: no module named \['nope'\]"):
        trace(model, x, ignore=["nope"])


def test_model_flags_are_restored() -> None:
    model, x = ARCHS["norms"]()
    model.train()
    running = model.bn.running_mean.clone()
    trace(model, x)
    assert model.training and torch.equal(model.bn.running_mean, running)
