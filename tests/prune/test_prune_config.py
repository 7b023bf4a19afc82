"""PruneConfig validation: ratios, per-layer ratios, N:M, AGP, JSON round trip."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from torchshrink.prune.config import PruneConfig
from torchshrink.train.config import TrainConfig


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5])
def test_ratio_outside_0_1_is_refused_naming_the_field(ratio: float) -> None:
    with pytest.raises(ValidationError, match=r"ratio\n.*ratio must be in \[0, 1\)"):
        PruneConfig(ratio=ratio)


def test_a_layer_ratio_of_one_would_prune_everything_and_is_refused() -> None:
    with pytest.raises(
        ValidationError, match=r"layer_ratios\['fc1'\] = 1.0 would prune everything"
    ):
        PruneConfig(ratio=0.5, layer_ratios={"fc1": 1.0})


def test_nm_needs_n_below_m_and_fixes_the_sparsity() -> None:
    with pytest.raises(ValidationError, match="n < m, got n=4, m=4"):
        PruneConfig(granularity="nm", n=4, m=4)
    assert PruneConfig(granularity="nm", n=4, m=8, ratio=0.1).target_sparsity == 0.5


def test_unknown_method_agp_order_and_extra_fields_are_refused() -> None:
    with pytest.raises(
        ValidationError, match=r"unknown importance 'biggest'; valid names: .*taylor"
    ):
        PruneConfig(method="biggest")
    with pytest.raises(ValidationError, match="agp_end_step must be after agp_start_step"):
        PruneConfig(schedule="agp", agp_start_step=10, agp_end_step=5)
    with pytest.raises(ValidationError, match="min_channels"):
        PruneConfig(min_channels=0)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        PruneConfig(sparsity=0.5)


def test_json_round_trip_with_the_global_alias_and_a_finetune_config() -> None:
    cfg = PruneConfig(
        granularity="channel",
        ratio=0.3,
        global_=True,
        layer_ratios={r"layer1\..*": 0.1},
        finetune=TrainConfig.preset("finetune", epochs=1),
    )
    text = cfg.model_dump_json(by_alias=True)
    assert '"global":true' in text
    back = PruneConfig.model_validate_json(text)
    assert back == cfg and back.finetune is not None and back.finetune.epochs == 1
