"""QuantSpec: validation, code ranges, presets, JSON round trip."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from torchshrink.core.errors import ConfigError
from torchshrink.quantize import QuantSpec


@pytest.mark.parametrize("bits", [1, 9, 12, 32, 0])
def test_bits_out_of_range_names_field_and_value(bits: int) -> None:
    with pytest.raises(ValidationError, match=rf"bits\n.*got {bits}"):
        QuantSpec(bits=bits)


@pytest.mark.parametrize(
    ("kw", "qmin", "qmax", "dtype"),
    [
        ({"bits": 8}, -128, 127, torch.int8),
        ({"bits": 8, "signed": False}, 0, 255, torch.uint8),
        ({"bits": 2}, -2, 1, torch.int8),
        ({"bits": 4, "signed": False}, 0, 15, torch.uint8),
        ({"bits": 16}, -32768, 32767, torch.int16),
        ({"bits": 16, "signed": False}, 0, 65535, torch.int32),
    ],
)
def test_code_ranges(kw: dict, qmin: int, qmax: int, dtype: torch.dtype) -> None:
    spec = QuantSpec(**kw)
    assert (spec.qmin, spec.qmax, spec.storage_dtype) == (qmin, qmax, dtype)


def test_group_size_rules() -> None:
    with pytest.raises(ValidationError, match="group_size is required"):
        QuantSpec(granularity="per_group")
    with pytest.raises(ValidationError, match="group_size=32 is only valid"):
        QuantSpec(group_size=32)
    with pytest.raises(ValidationError, match="group_size"):
        QuantSpec(granularity="per_group", group_size=0)
    with pytest.raises(ValidationError, match="extra"):
        QuantSpec(bitz=8)  # type: ignore[call-arg]


def test_frozen() -> None:
    spec = QuantSpec()
    with pytest.raises(ValidationError, match="frozen"):
        spec.bits = 4  # type: ignore[misc]


def test_bad_axis_names_value() -> None:
    with pytest.raises(ConfigError, match=r"axis=3 is out of range .* 2 dims"):
        QuantSpec(axis=3).resolve_axis(2)
    assert QuantSpec(axis=-1).resolve_axis(4) == 3


@pytest.mark.parametrize(
    ("name", "bits", "signed", "symmetric", "gran", "group"),
    [
        ("int8", 8, True, True, "per_tensor", None),
        ("uint8", 8, False, False, "per_tensor", None),
        ("int4", 4, True, True, "per_channel", None),
        ("int4g128", 4, True, True, "per_group", 128),
        ("int3c", 3, True, True, "per_channel", None),
        ("uint6g16", 6, False, False, "per_group", 16),
        ("INT16", 16, True, True, "per_tensor", None),
    ],
)
def test_presets(name: str, bits: int, signed: bool, symmetric: bool, gran: str, group) -> None:
    s = QuantSpec.preset(name)
    assert (s.bits, s.signed, s.symmetric, s.granularity, s.group_size) == (
        bits,
        signed,
        symmetric,
        gran,
        group,
    )


def test_preset_overrides_and_errors() -> None:
    assert QuantSpec.preset("int8", rounding="floor").rounding == "floor"
    with pytest.raises(ConfigError, match="unknown QuantSpec preset 'fp8'"):
        QuantSpec.preset("fp8")
    with pytest.raises(ValidationError, match="got 9"):
        QuantSpec.preset("int9")


def test_json_round_trip() -> None:
    spec = QuantSpec.preset("int4g32", rounding="stochastic", axis=1)
    again = QuantSpec.model_validate_json(spec.model_dump_json())
    assert again == spec
    assert "granularity" in QuantSpec.model_json_schema()["properties"]
