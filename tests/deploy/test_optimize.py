"""optimize_for_inference: matching outputs, measured candidates, never-slower check, threads."""

from __future__ import annotations

import math
import warnings

import pydantic
import pytest
import torch
from torch import nn

from torchshrink.core.errors import ConfigError
from torchshrink.core.zoo import create_zoo_model
from torchshrink.deploy import (
    InferenceModule,
    OptimizeConfig,
    SlowerThanBaselineWarning,
    compare_to_baseline,
    optimize_for_inference,
    round_keep,
)
from torchshrink.deploy.candidates import build_variant
from torchshrink.deploy.direct_kernel import kernel_unavailable_reason
from torchshrink.deploy.optimize import variant_options
from torchshrink.deploy.timing import interleaved_times
from torchshrink.graph import dependency_groups
from torchshrink.prune.structured import remove_groups

FAST = OptimizeConfig(rounds=3, warmup=1)
KERNEL_OK = kernel_unavailable_reason() is None


def _conv_bn_net() -> nn.Module:
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics, so folding changes weights
            assert m.running_mean is not None and m.running_var is not None
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return net.eval()


def test_conv_bn_output_matches_and_every_candidate_is_timed() -> None:
    net = _conv_bn_net()
    x = torch.randn(4, 3, 16, 16)
    fast, rep = optimize_for_inference(net, x, threads=1, config=FAST)
    with torch.inference_mode():
        assert (fast(x) - net(x)).abs().max().item() <= rep.tolerance
    names = {c.name for c in rep.candidates}
    assert names == {
        "eager",
        "fold",
        "fold+jit",
        "fold+jit_opt",
        "fold+ort",
        "fold+channels_last",
        "fold+channels_last+jit",
        "fold+channels_last+jit_opt",
        "fold+direct",
    }  # no "+split" candidates at one thread
    # The direct kernel needs AVX-512 and a compiler; without them its candidate is reported
    # as failed, with the reason.
    runs = [c for c in rep.candidates if c.name != "fold+direct" or KERNEL_OK]
    assert all(c.median_ms > 0 and c.threads == 1 and c.error is None for c in runs)
    assert all(c.matches and c.max_abs_diff <= 1e-4 for c in runs)
    if not KERNEL_OK:
        (direct,) = [c for c in rep.candidates if c.name == "fold+direct"]
        assert direct.error is not None and "direct conv kernel" in direct.error
    assert rep.chosen in names and rep.chosen_ms == pytest.approx(
        next(c.median_ms for c in rep.candidates if c.name == rep.chosen)
    )
    assert rep.speedup == pytest.approx(rep.reference_ms / rep.chosen_ms)
    assert isinstance(fast, InferenceModule) and fast.threads == 1


def test_pruned_resnet20_output_matches() -> None:
    model = create_zoo_model("resnet20").eval()
    x = torch.randn(2, 3, 16, 16)
    groups = dependency_groups(model, x[:1])
    remove_groups(model, [(g, range(g.size // 2)) for g in groups])
    assert model.get_submodule("layer1.0.conv1").out_channels == 8
    cfg = OptimizeConfig(rounds=2, warmup=1, jit_optimize=False)  # covered in test_candidates
    fast, rep = optimize_for_inference(model, x, threads=1, config=cfg)
    with torch.inference_mode():
        ref = model(x)
        diff = (fast(x) - ref).abs().max().item()
    assert fast(x).shape == (2, 10)
    assert diff <= 1e-4 + 1e-4 * ref.abs().max().item()
    assert rep.tolerance == pytest.approx(1e-4 + 1e-4 * ref.abs().max().item(), rel=1e-5)
    # The caller's model is not changed (BatchNorm still there, not folded in place).
    assert isinstance(model.get_submodule("layer1.0.bn1"), nn.BatchNorm2d)


def test_two_threads_add_batch_split_candidates_that_match() -> None:
    net = _conv_bn_net()
    x = torch.randn(6, 3, 12, 12)
    cfg = OptimizeConfig(rounds=2, warmup=1, channels_last=False)
    fast, rep = optimize_for_inference(net, x, threads=2, config=cfg)
    split = {c.name: c for c in rep.candidates if c.name.endswith("+split")}
    assert set(split) == {"fold+jit+split", "fold+jit_opt+split", "fold+ort+split"}
    assert all(c.matches and c.max_abs_diff <= 1e-4 and c.median_ms > 0 for c in split.values())
    for name in split:  # every split variant, rebuilt from its name, gives the same output
        v = build_variant(net, x, **variant_options(name), threads=2)
        with torch.inference_mode():
            assert (v(x) - net(x)).abs().max().item() <= rep.tolerance
    assert fast(x).shape == (6, 5)


def test_variant_options_round_trip_and_unknown_part() -> None:
    opts = variant_options("fold+channels_last+jit")
    assert opts == {
        "fold": True,
        "channels_last": True,
        "jit": True,
        "jit_optimize": False,
        "compile": False,
        "ort": False,
        "direct": False,
        "split": False,
    }
    assert variant_options("fold+direct")["direct"]
    assert not any(variant_options("eager").values())
    with pytest.raises(ConfigError, match=r"unknown candidate part\(s\) \['tensorrt'\]"):
        variant_options("fold+tensorrt")


def test_a_candidate_that_cannot_be_traced_is_reported_not_chosen() -> None:
    class Tagged(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, str]:
            return self.fc(x), "tag"  # a str output: TorchScript tracing refuses it

    fast, rep = optimize_for_inference(Tagged(), torch.randn(3, 4), threads=1, config=FAST)
    jit = next(c for c in rep.candidates if c.name == "fold+jit")
    assert jit.error is not None and math.isnan(jit.median_ms) and not jit.matches
    assert "jit" not in rep.chosen
    assert fast(torch.zeros(1, 4))[1] == "tag"


def test_never_slower_check_fires_on_a_slower_model() -> None:
    with pytest.warns(SlowerThanBaselineWarning, match="SLOWER"):
        check = compare_to_baseline(12.0, 10.0, name="pruned model")
    assert check.slower and check.speedup == pytest.approx(10 / 12)
    assert "pruned model" in check.message
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a faster model must not warn
        ok = compare_to_baseline(5.0, 10.0)
    assert not ok.slower and ok.speedup == pytest.approx(2.0)
    assert not compare_to_baseline(10.4, 10.0, margin=0.05).slower


def test_never_slower_check_fires_end_to_end() -> None:
    # The "pruned" model is 64x wider than its baseline: it must be reported as slower.
    wide = nn.Sequential(nn.Conv2d(3, 256, 3, padding=1), nn.ReLU(), nn.Conv2d(256, 256, 3))
    narrow = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3))
    x = torch.randn(4, 3, 24, 24)
    cfg = OptimizeConfig(
        rounds=3, warmup=1, jit=False, jit_optimize=False, ort=False, channels_last=False
    )
    with pytest.warns(SlowerThanBaselineWarning, match="SLOWER"):
        _, rep = optimize_for_inference(wide.eval(), x, threads=1, config=cfg, baseline=narrow)
    assert rep.baseline is not None and rep.baseline.slower
    assert rep.baseline.speedup < 1.0
    assert rep.warnings and rep.warnings[0].startswith("SLOWER")
    assert rep.baseline_report is not None and rep.baseline_report.chosen_ms > 0


def test_thread_setting_is_restored_and_chosen_by_measurement() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        net = _conv_bn_net()
        x = torch.randn(2, 3, 8, 8)
        cfg = OptimizeConfig(
            rounds=2, warmup=1, thread_candidates=(1, 2), jit=False, jit_optimize=False, ort=False
        )
        fast, rep = optimize_for_inference(net, x, config=cfg)
        assert torch.get_num_threads() == 1
        assert rep.threads in (1, 2) and fast.threads == rep.threads
        assert {c.threads for c in rep.candidates if c.name == rep.chosen} == {1, 2}
        two = fast.with_threads(2)
        two(x)
        assert torch.get_num_threads() == 1  # the call set 2 threads and restored 1
        _, rep2 = optimize_for_inference(net, x, threads=2, config=cfg)
        assert rep2.threads == 2 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_bad_settings_raise() -> None:
    with pytest.raises(ConfigError, match="'threads' must be at least 1, got 0"):
        optimize_for_inference(nn.Linear(2, 2), torch.zeros(1, 2), threads=0)
    with pytest.raises(ConfigError, match="thread_candidates"):
        optimize_for_inference(
            nn.Linear(2, 2), torch.zeros(1, 2), config=OptimizeConfig(thread_candidates=(0,))
        )
    with pytest.raises(pydantic.ValidationError, match="rounds"):
        OptimizeConfig(rounds=0)
    with pytest.raises(pydantic.ValidationError, match="Extra inputs"):
        OptimizeConfig(fast=True)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="'rounds' must be at least 1"):
        interleaved_times({"a": lambda: None}, rounds=0)
    with pytest.raises(ConfigError, match="'primed' must be 0 or more, got -1"):
        interleaved_times({"a": lambda: None}, primed=-1)


def test_primed_timing_runs_untimed_calls_right_before_each_timed_one() -> None:
    calls: list[str] = []
    t = interleaved_times(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
        rounds=2,
        warmup=0,
        primed=2,
    )
    assert calls == ["a"] * 3 + ["b"] * 3 + ["b"] * 3 + ["a"] * 3  # order alternates per round
    assert len(t["a"].samples_ms) == 2


def test_round_keep() -> None:
    assert [round_keep(n, 16) for n in (1, 8, 23, 24, 33, 40, 64)] == [16, 16, 16, 32, 32, 48, 64]
    assert round_keep(5, 16, total=12) == 12
    assert round_keep(7, 1) == 7
    assert round_keep(30, 8, total=64) == 32
    with pytest.raises(ConfigError, match="'n' must be at least 1"):
        round_keep(0, 16)
    with pytest.raises(ConfigError, match="more than the layer's total of 8"):
        round_keep(9, 16, total=8)
    with pytest.raises(ConfigError, match="'multiple' must be at least 1"):
        round_keep(4, 0)
