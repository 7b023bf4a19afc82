"""The direct 3x3 kernel: chains against torch.conv2d over shapes and zoo models, fallbacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from torchshrink.core.zoo import create_zoo_model
from torchshrink.deploy import direct_kernel as dk
from torchshrink.deploy.candidates import build_variant
from torchshrink.deploy.direct_conv import (
    DirectChain,
    DirectConv,
    DirectHead,
    _assign_slots,
    eligible,
    use_direct_convs,
)
from torchshrink.graph import dependency_groups
from torchshrink.prune.structured import remove_groups
from torchshrink.quantize.fold import fold_bn

needs_kernel = pytest.mark.skipif(
    dk.kernel_unavailable_reason() is not None,
    reason=f"direct kernel unavailable: {dk.kernel_unavailable_reason()}",
)


def _close(a: torch.Tensor, b: torch.Tensor) -> None:
    bound = 1e-5 + 1e-5 * float(b.abs().max())
    assert a.shape == b.shape
    assert float((a - b).abs().max()) <= bound, float((a - b).abs().max())


def _trained_looking(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model.eval()


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize(
    ("ci", "co", "h", "w"),
    [
        (1, 1, 1, 8),
        (3, 8, 5, 16),
        (5, 13, 3, 24),
        (8, 8, 32, 32),
        (16, 33, 4, 8),
        (24, 16, 7, 48),
        # widths that are not a multiple of the vector: the last vector of a row is partial
        (4, 8, 3, 7),
        (8, 8, 5, 12),
        (8, 16, 14, 14),
        (3, 5, 2, 20),
        (6, 9, 4, 28),
        (2, 3, 1, 1),
    ],
)
def test_chain_matches_conv2d_with_residual_and_relu(
    threads: int, ci: int, co: int, h: int, w: int
) -> None:
    torch.manual_seed(ci * 100 + co)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for n in (1, 5):  # 1 < threads: layers split across threads; 5: whole images per thread
            x = torch.randn(n, ci, h, w)
            w1, b1 = torch.randn(co, ci, 3, 3), torch.randn(co)
            w2 = torch.randn(co, co, 3, 3)
            layers = [
                dk.ChainLayer(src=0, res=-1, dst=1, weight=w1, bias=b1, relu=True),
                dk.ChainLayer(src=1, res=1, dst=2, weight=w2, bias=None, relu=False),
                dk.ChainLayer(src=2, res=-1, dst=0, weight=w2, bias=b1, relu=True),
            ]
            y1, y2, y3 = dk.run_chain(layers, [x], inputs=[0], outputs=[1, 2, 0])
            r1 = torch.relu(torch.conv2d(x, w1, b1, padding=1))
            r2 = torch.conv2d(r1, w2, padding=1) + r1
            r3 = torch.relu(torch.conv2d(r2, w2, b1, padding=1))
            for got, ref in ((y1, r1), (y2, r2), (y3, r3)):
                _close(got, ref)
    finally:
        torch.set_num_threads(previous)


@needs_kernel
@pytest.mark.parametrize(
    ("k", "ci", "co", "h", "w"), [(3, 8, 16, 32, 32), (1, 8, 16, 32, 32), (3, 5, 7, 10, 16)]
)
def test_stride_two_layers_match_conv2d(k: int, ci: int, co: int, h: int, w: int) -> None:
    torch.manual_seed(k + ci)
    for n in (1, 4):
        x, wt, b = torch.randn(n, ci, h, w), torch.randn(co, ci, k, k), torch.randn(co)
        layer = dk.ChainLayer(src=0, res=-1, dst=1, weight=wt, bias=b, relu=True, stride=2)
        (y,) = dk.run_chain([layer], [x], inputs=[0], outputs=[1])
        _close(y, torch.relu(torch.conv2d(x, wt, b, stride=2, padding=k // 2)))


@needs_kernel
def test_run_chain_rejects_bad_inputs_clearly() -> None:
    layer = dk.ChainLayer(
        src=0, res=-1, dst=1, weight=torch.randn(4, 2, 3, 3), bias=None, relu=False
    )
    with pytest.raises(ValueError, match="empty input"):
        dk.run_chain([layer], [torch.zeros(1, 2, 0, 12)], inputs=[0], outputs=[1])
    with pytest.raises(ValueError, match="the input holds 3 channels, not 2"):
        dk.run_chain([layer], [torch.zeros(1, 3, 4, 8)], inputs=[0], outputs=[1])
    down = dk.ChainLayer(
        src=0, res=-1, dst=1, weight=torch.randn(4, 2, 3, 3), bias=None, relu=False, stride=2
    )
    with pytest.raises(ValueError, match="stride 2 needs an even height and width, got 5x16"):
        dk.run_chain([down], [torch.zeros(1, 2, 5, 16)], inputs=[0], outputs=[1])
    with pytest.raises(ValueError, match="3x3 or 1x1 kernels at stride 1 or 2 only"):
        dk.ChainLayer(src=0, res=-1, dst=1, weight=torch.randn(4, 2, 5, 5), bias=None, relu=False)
    with pytest.raises(ValueError, match="float32 CPU"):
        dk.run_chain(
            [layer], [torch.zeros(1, 2, 4, 8, dtype=torch.float64)], inputs=[0], outputs=[1]
        )


@needs_kernel
def test_the_kernel_refuses_slots_too_small_for_a_value() -> None:
    layer = dk.ChainLayer(
        src=0, res=-1, dst=1, weight=torch.randn(8, 4, 3, 3), bias=None, relu=False
    )
    prepared = dk.prepare_chain([layer], [(4, 8, 16)], inputs=[0], outputs=[1])
    args = list(prepared._args)
    # the 8-channel output's padded planes, without the room for reads past the end
    args[-1] = 8 * dk._library().ts_plane_floats(8, 16)  # slot_floats, the last
    prepared._args = tuple(args)
    with pytest.raises(RuntimeError, match="the kernel failed \\(code 4\\)"):
        prepared.run([torch.zeros(2, 4, 8, 16)])


@needs_kernel
def test_slots_reused_for_another_size_get_clean_borders_on_every_image() -> None:
    # Slot 0 holds the 32x32 input, then the 16x16 output; on the next image it holds the input
    # again over the previous image's data: every border the taps read must be zero again.
    torch.manual_seed(3)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x, w1, w2 = torch.randn(3, 4, 32, 32), torch.randn(8, 4, 3, 3), torch.randn(8, 8, 3, 3)
        layers = [
            dk.ChainLayer(src=0, res=-1, dst=1, weight=w1, bias=None, relu=False),
            dk.ChainLayer(src=1, res=-1, dst=0, weight=w2, bias=None, relu=False, stride=2),
        ]
        (y,) = dk.run_chain(layers, [x], inputs=[0], outputs=[0])
        ref = torch.conv2d(torch.conv2d(x, w1, padding=1), w2, stride=2, padding=1)
        _close(y, ref)
    finally:
        torch.set_num_threads(previous)


@needs_kernel
def test_a_workspace_too_large_to_keep_is_allocated_per_call() -> None:
    # Two slots of 8 planes of 360 x 360 padded: over the 8 MiB a thread keeps between calls.
    torch.manual_seed(4)
    w, b = torch.randn(8, 8, 3, 3), torch.randn(8)
    layer = dk.ChainLayer(src=0, res=0, dst=1, weight=w, bias=b, relu=True)
    for n in (1, 3):  # one image (layers split across threads) and whole images per thread
        x = torch.randn(n, 8, 360, 360)
        for _ in range(2):  # again: nothing kept from the first call is relied on
            (y,) = dk.run_chain([layer], [x], inputs=[0], outputs=[1])
            _close(y, torch.relu(torch.conv2d(x, w, b, padding=1) + x))


def test_slots_are_reused_after_the_last_read_and_outputs_kept() -> None:
    # x -> a -> b (+a) -> c; a is an output, so its slot is never reused.
    slots = _assign_slots([(0, None), (1, 1), (2, None)], 1, outputs=[1, 3])
    assert slots[2] not in (slots[1],)  # b is written while a is still read
    assert slots[3] not in (slots[1], slots[2])
    assert slots[2] == slots[0]  # x died after the first layer
    assert len(set(slots.values())) == 3


@needs_kernel
@pytest.mark.parametrize(
    ("name", "kwargs", "chains"),
    [
        ("resnet20", {"shortcut": "B"}, 1),  # every conv, 1x1 shortcuts included: one chain
        ("resnet20", {"shortcut": "A", "width": 0.5}, 3),  # split at the pad shortcuts
        ("resnet56", {"shortcut": "B", "width": 0.5}, 1),
        ("vgg11_bn", {}, None),
        ("mobilenetv2", {"width_mult": 0.5}, None),
        # MNIST-shaped: 28 -> 14 -> 7 wide, rows that end inside a vector
        ("resnet20", {"shortcut": "B", "in_channels": 1, "input_size": 28}, 1),
    ],
)
def test_zoo_models_match_after_rewrite(name: str, kwargs: dict, chains: int | None) -> None:
    model = _trained_looking(create_zoo_model(name, **kwargs))
    c, size = kwargs.get("in_channels", 3), kwargs.get("input_size", 32)
    fast = use_direct_convs(fold_bn(model))
    n_chains = sum(isinstance(m, DirectChain) for m in fast.modules())
    assert n_chains >= 1
    if chains is not None:
        assert n_chains == chains
    for n in (1, 3):  # one image (layers split across threads) and several
        x = torch.randn(n, c, size, size)
        with torch.inference_mode():
            _close(fast(x), model(x))
    # The original is untouched and still trains.
    assert all(p.requires_grad for p in model.parameters())


@needs_kernel
def test_pruned_resnet_chains_fuse_the_residual_adds() -> None:
    model = _trained_looking(create_zoo_model("resnet20", shortcut="B"))
    x = torch.randn(2, 3, 32, 32)
    groups = dependency_groups(model, x[:1])
    remove_groups(model, [(g, range(g.size // 2)) for g in groups])
    fast = use_direct_convs(fold_bn(model))
    convs = [m for m in fast.modules() if isinstance(m, DirectConv)]
    # The stem, 18 block convs and the two 1x1 shortcuts; a ReLU fused into all but those two.
    assert len(convs) == 21
    assert sum(c.relu for c in convs) == 19
    assert sum(c.stride == 2 for c in convs) == 4
    assert ".relu" not in fast.code and "add" not in fast.code
    with torch.inference_mode():
        _close(fast(x), model(x))


@needs_kernel
def test_intermediate_values_used_outside_a_chain_are_returned() -> None:
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.b = nn.Conv2d(8, 8, 3, padding=1)
            self.c = nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = torch.relu(self.a(x))
            y = self.c(torch.relu(self.b(h) + h))
            return h.mean(dim=(2, 3)), y

    model = TwoHeads().eval()
    x = torch.randn(4, 3, 8, 16)
    fast = use_direct_convs(model)
    (chain,) = [m for m in fast.modules() if isinstance(m, DirectChain)]
    assert len(chain.layers) == 3 and len(chain.outputs) == 2
    with torch.inference_mode():
        for got, ref in zip(fast(x), model(x), strict=True):
            _close(got, ref)


@needs_kernel
def test_untraceable_model_gets_its_convs_replaced_one_by_one() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.b = nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.a(x)
            if h.mean() > 0:  # data-dependent: torch.fx cannot trace it
                h = torch.relu(h)
            return self.b(h)

    model = Branchy().eval()
    fast = use_direct_convs(model)
    assert sum(isinstance(m, DirectChain) for m in fast.modules()) == 2
    x = torch.randn(2, 3, 8, 8)
    with torch.inference_mode():
        _close(fast(x), model(x))


@needs_kernel
def test_inputs_the_kernel_does_not_take_fall_back_to_torch() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()).eval()
    fast = use_direct_convs(model)
    with torch.inference_mode():
        down = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, stride=2)).eval()
        x = torch.randn(2, 3, 9, 32)  # odd height at stride 2
        _close(use_direct_convs(down)(x), down(x))
        xd = torch.randn(2, 3, 8, 8, dtype=torch.float64)
        _close(fast.double()(xd), model.double()(xd))  # float64: torch path
    model.float()
    xg = torch.randn(2, 3, 8, 8, requires_grad=True)
    out = use_direct_convs(model)(xg)  # needs gradients: torch path, which has a backward
    out.sum().backward()
    assert xg.grad is not None and xg.grad.shape == xg.shape


def test_eligibility_is_exact() -> None:
    assert eligible(nn.Conv2d(4, 4, 3, padding=1))
    assert eligible(nn.Conv2d(4, 4, 3, padding="same"))
    assert eligible(nn.Conv2d(4, 4, 3, padding=1, stride=2))
    assert eligible(nn.Conv2d(4, 4, 1, stride=2))
    for conv in (
        nn.Conv2d(4, 4, 3, padding=1, stride=3),
        nn.Conv2d(4, 4, 1, padding=1),
        nn.Conv2d(4, 4, 3, padding=1, stride=(1, 2)),
        nn.Conv2d(4, 4, 3, padding=2, dilation=2),
        nn.Conv2d(4, 4, 3, padding=1, groups=2),
        nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect"),
        nn.Conv2d(4, 4, 5, padding=2),
        nn.Conv2d(4, 4, 3, padding=0),
        nn.Conv2d(4, 4, 3, padding=1).double(),
    ):
        assert not eligible(conv), conv
    with pytest.raises(ValueError, match="not a convolution the direct kernel runs"):
        DirectConv(nn.Conv2d(4, 4, 5))


class _PoolHead(nn.Module):
    """conv -> relu -> conv, then a classifier head written in one of several ways."""

    def __init__(self, style: str) -> None:
        super().__init__()
        self.style = style
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 16, 3, padding=1)
        self.pool, self.flat, self.fc = nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.c2(torch.relu(self.c1(x))))
        if self.style == "modules":
            return self.fc(self.flat(self.pool(y)))
        if self.style == "functions":
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))
        if self.style == "method":
            return self.pool(y).flatten(1)  # no Linear: the channel means
        if self.style == "flatten0":
            return torch.flatten(self.pool(y))  # from dimension 0: not the head's flatten
        return self.pool(y)  # "pool": (N, C, 1, 1)


@needs_kernel
@pytest.mark.parametrize("style", ["modules", "functions", "method", "pool", "flatten0"])
def test_a_classifier_head_runs_inside_the_chain(style: str) -> None:
    model = _PoolHead(style).eval()
    fast = use_direct_convs(model)
    chains = [m for m in fast.modules() if isinstance(m, DirectChain)]
    assert len(chains) == 1 and isinstance(chains[0].head, DirectHead)
    assert chains[0].head.linear is not None if style in ("modules", "functions") else True
    # the pooling (and what followed it) left the graph: the chain's output is the result
    ops = [n.op for n in fast.graph.nodes]  # type: ignore[union-attr]
    extra = ["call_function"] if style == "flatten0" else []  # torch.flatten(start_dim=0)
    assert ops == ["placeholder", "call_module", "call_function", *extra, "output"]
    for threads in (1, 2):
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for n in (1, 3):
                x = torch.randn(n, 3, 10, 12)
                with torch.inference_mode():
                    got, ref = fast(x), model(x)
                assert got.shape == ref.shape
                _close(got, ref)
        finally:
            torch.set_num_threads(previous)


@needs_kernel
def test_a_chain_head_falls_back_to_pytorch_with_the_layers() -> None:
    model = _PoolHead("modules").eval()
    fast = use_direct_convs(model)
    x = torch.randn(2, 3, 10, 12, dtype=torch.float64)  # the kernel takes float32 only
    with torch.inference_mode():
        _close(fast.double()(x).float(), model.double()(x).float())


@needs_kernel
def test_chain_heads_check_their_shapes() -> None:
    with pytest.raises(ValueError, match="a bias needs a weight"):
        dk.ChainHead(bias=torch.zeros(3))
    with pytest.raises(ValueError, match=r"weight \[K, C\] and bias \[K\] expected"):
        dk.ChainHead(torch.zeros(3, 4), torch.zeros(4))
    layer = dk.ChainLayer(
        src=0, res=-1, dst=1, weight=torch.randn(8, 4, 3, 3), bias=None, relu=False
    )
    with pytest.raises(ValueError, match="the head's weight takes 6 channels, the value has 8"):
        dk.prepare_chain(
            [layer], [(4, 5, 5)], inputs=[0], outputs=[1], heads=[dk.ChainHead(torch.zeros(2, 6))]
        )
    with pytest.raises(ValueError, match="a Linear layer needs the flattened pooling"):
        DirectHead(flatten=False, linear=nn.Linear(8, 2))


@needs_kernel
def test_a_bare_conv_runs_on_the_kernel() -> None:
    conv = nn.Conv2d(8, 8, 3, padding=1).eval()
    fast = use_direct_convs(conv)
    (chain,) = [m for m in fast.modules() if isinstance(m, DirectChain)]
    x = torch.randn(2, 8, 8, 16)
    assert [seg.kernel is not None for seg in chain._plan((x,))] == [True]  # not PyTorch
    with torch.inference_mode():
        _close(fast(x), conv(x))


@needs_kernel
def test_layers_the_kernel_cannot_take_split_the_chain_at_run_time() -> None:
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 1),
    ).eval()
    fast = use_direct_convs(net)
    (chain,) = [m for m in fast.modules() if isinstance(m, DirectChain)]
    # An odd height or width at stride 2 leaves that layer to PyTorch, the layers around it
    # on the kernel.
    for (h, w), kernel_runs in (
        ((16, 16), [True]),
        ((6, 10), [True]),
        ((15, 16), [True, False, True]),
        ((16, 7), [True, False, True]),
    ):
        x = torch.randn(3, 3, h, w)
        plan = chain._plan((x,))
        assert [seg.kernel is not None for seg in plan] == kernel_runs, (h, w)
        with torch.inference_mode():
            _close(fast(x), net(x))


@needs_kernel
def test_model_without_eligible_convs_is_refused_by_name() -> None:
    with pytest.raises(RuntimeError, match="no float32 Conv2d the kernel runs"):
        use_direct_convs(create_zoo_model("lenet5"))


@needs_kernel
def test_direct_variant_is_a_working_inference_module() -> None:
    model = _trained_looking(create_zoo_model("resnet20", shortcut="B", width=0.5))
    x = torch.randn(4, 3, 32, 32)
    v = build_variant(model, x, direct=True, threads=2)
    with torch.inference_mode():
        _close(v(x), model(x))


def test_no_compiler_gives_the_reason(tmp_path: Path) -> None:
    # A fresh process with an empty kernel cache and no compiler on PATH.
    code = (
        "from torchshrink.deploy import direct_kernel as dk\n"
        "r = dk.kernel_unavailable_reason()\n"
        "print(r)\n"
        "import torch\n"
        "from torchshrink.deploy.direct_conv import use_direct_convs\n"
        "try:\n"
        "    use_direct_convs(torch.nn.Conv2d(3, 3, 3, padding=1))\n"
        "except RuntimeError as e:\n"
        "    print('refused:', e)\n"
    )
    env = os.environ | {"TORCHSHRINK_CACHE_DIR": str(tmp_path), "CXX": "no-such-compiler-here"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "refused: use_direct_convs:" in out
    assert "no-such-compiler-here" in out or "AVX-512" in out


@needs_kernel
def test_kernel_is_compiled_once_into_the_cache(tmp_path: Path) -> None:
    code = (
        "from torchshrink.deploy import direct_kernel as dk; print(dk.kernel_unavailable_reason())"
    )
    env = os.environ | {"TORCHSHRINK_CACHE_DIR": str(tmp_path)}
    for _ in range(2):
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        ).stdout
        assert out.strip() == "None"
    built = list((tmp_path / "kernels").glob("direct_conv_*.so"))
    assert len(built) == 1
    assert not [p for p in (tmp_path / "kernels").iterdir() if p.is_dir()]  # no leftovers
    # A library others could have replaced is not loaded.
    built[0].chmod(0o666)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "refusing to load the direct conv kernel" in out and "writable by others" in out
