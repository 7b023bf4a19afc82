"""QuantConfig: what post-training quantization does to a model (scheme, specs, layer choice).

A scheme names a mode plus default weight / activation specs:

====================  ===========  =======================  ==============================
scheme                mode         weights                  activations (layer inputs)
====================  ===========  =======================  ==============================
``w8a8`` (``int8``)   static       int8 per channel, sym.   uint8 per tensor, calibrated
``w8a8_dynamic``      dynamic      int8 per channel, sym.   uint8 per tensor, per batch
``w8``                weight_only  int8 per channel, sym.   float
``w4``                weight_only  int4 per channel, sym.   float
``w4g128``            weight_only  int4 per group of 128    float
``w4g32``             weight_only  int4 per group of 32     float
``binary``            weight_only  sign x channel scale     float (QAT: ``quantize.qat``)
``ternary``           weight_only  {-1,0,1} x channel sc.  float (QAT: ``quantize.qat``)
====================  ===========  =======================  ==============================

Fields given explicitly win over the scheme's defaults, so
``QuantConfig(scheme="w8a8", observer="percentile")`` keeps the scheme's specs.

Example:
    >>> cfg = QuantConfig.preset("w8a8")
    >>> cfg.mode, cfg.weight.granularity, cfg.activation.bits
    ('static', 'per_channel', 8)
    >>> QuantConfig(scheme="w4g128").activation is None
    True
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from torchshrink.core.errors import ConfigError
from torchshrink.quantize.observers import OBSERVERS
from torchshrink.quantize.spec import QuantSpec

Mode = Literal["static", "dynamic", "weight_only"]

_W8: dict[str, Any] = {"bits": 8, "granularity": "per_channel"}
_A8: dict[str, Any] = {"bits": 8, "signed": False, "symmetric": False}
# scheme -> (mode, weight spec fields, activation spec fields or None)
SCHEMES: dict[str, tuple[Mode, dict[str, Any], dict[str, Any] | None]] = {
    "w8a8": ("static", _W8, _A8),
    "int8": ("static", _W8, _A8),
    "w8a8_dynamic": ("dynamic", _W8, _A8),
    "w8": ("weight_only", _W8, None),
    "w4": ("weight_only", {"bits": 4, "granularity": "per_channel"}, None),
    "w4g128": ("weight_only", {"bits": 4, "granularity": "per_group", "group_size": 128}, None),
    "w4g32": ("weight_only", {"bits": 4, "granularity": "per_group", "group_size": 32}, None),
    # Sign / threshold codes in {-1, (0,) 1} times a per-channel scale, stored as 2-bit codes;
    # trained by quantize.qat (prepare_qat / qat), which reads the scheme name. ptq.quantize
    # does not read it yet: there these two schemes are plain 2-bit uniform (levels -2..1).
    "binary": ("weight_only", {"bits": 2, "granularity": "per_channel"}, None),
    "ternary": ("weight_only", {"bits": 2, "granularity": "per_channel"}, None),
}


class QuantConfig(BaseModel):
    """Configuration of :func:`torchshrink.quantize.ptq.quantize`.

    Attributes:
        scheme: a name from the table above; fills ``mode``, ``weight`` and ``activation``
            unless they are given.
        mode: ``"static"`` (activation ranges from calibration data), ``"dynamic"`` (ranges
            measured on every batch at run time) or ``"weight_only"`` (activations stay float).
        weight: spec of every quantized layer's weight (axis 0 = output channels).
        activation: spec of every quantized layer's input, ``None`` for weight-only.
        observer: calibration observer of activations (``minmax``, ``moving_average``,
            ``percentile``, ``mse``, ``kl`` or any registered name).
        weight_observer: observer that picks the weight range (``minmax`` keeps every weight).
        calibration_size: at most this many calibration samples are run.
        batch_size: batch size used when the calibration data is a dataset.
        overrides: ``{name_or_regex: QuantSpec or "float"}``: another weight spec for the
            matching layers, or ``"float"`` to keep them in float. An exact name wins over a
            regex (``re.fullmatch``); among regexes the first match wins.
        ignore: names or regexes of modules (and everything under them) left in float, also
            when their type cannot be quantized.
        fold_bn: fold BatchNorm into the preceding Conv / Linear before quantizing.
        strict: a layer with a matrix weight of a type that cannot be quantized (Embedding,
            Conv1d, MultiheadAttention, ...) and not in ``ignore`` is an
            :class:`~torchshrink.core.errors.UnsupportedLayerError` (``True``) or stays float
            with the reason in the report (``False``). Tensors a container module owns itself
            (a position embedding on the root) always stay float.

    Example:
        >>> cfg = QuantConfig(scheme="w8a8", overrides={"fc2": "float"}, ignore=["attn"])
        >>> cfg.overrides["fc2"], cfg.calibration_size
        ('float', 512)
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    scheme: str = "w8a8"
    mode: Mode = "static"
    weight: QuantSpec = Field(default_factory=lambda: QuantSpec(**_W8))
    activation: QuantSpec | None = Field(default_factory=lambda: QuantSpec(**_A8))
    observer: str = "minmax"
    weight_observer: str = "minmax"
    calibration_size: int = Field(default=512, ge=1)
    batch_size: int = Field(default=64, ge=1)
    overrides: dict[str, QuantSpec | Literal["float"]] = Field(default_factory=dict)
    ignore: tuple[str, ...] = ()
    fold_bn: bool = True
    strict: bool = True

    @model_validator(mode="before")
    @classmethod
    def _fill_from_scheme(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        name = str(data.get("scheme", "w8a8")).lower()
        if name not in SCHEMES:
            raise ValueError(f"unknown scheme '{name}'; valid schemes: {', '.join(SCHEMES)}")
        mode, weight, act = SCHEMES[name]
        filled = {"scheme": name, "mode": mode, "weight": QuantSpec(**weight)}
        filled["activation"] = None if act is None else QuantSpec(**act)
        return {**filled, **data, "scheme": name}

    @field_validator("observer", "weight_observer")
    @classmethod
    def _known_observer(cls, v: str) -> str:
        if v not in OBSERVERS:
            raise ValueError(f"unknown observer '{v}'; valid observers: {', '.join(OBSERVERS)}")
        return v

    @field_validator("overrides", mode="before")
    @classmethod
    def _preset_names(cls, v: Any) -> Any:
        # "int4" is shorthand for QuantSpec.preset("int4"); "float" keeps the layer in float.
        if not isinstance(v, dict):
            return v
        return {
            k: QuantSpec.preset(s) if isinstance(s, str) and s != "float" else s
            for k, s in v.items()
        }

    @field_validator("overrides", "ignore")
    @classmethod
    def _valid_patterns(cls, v: Any) -> Any:
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"'{pattern}' is not a valid regular expression: {exc}") from exc
        return v

    @model_validator(mode="after")
    def _check_mode(self) -> QuantConfig:
        if self.mode == "weight_only" and self.activation is not None:
            raise ValueError("mode='weight_only' takes activation=None")
        if self.mode != "weight_only" and self.activation is None:
            raise ValueError(f"mode='{self.mode}' needs an activation spec")
        if self.activation is not None and self.activation.granularity != "per_tensor":
            # one scale per layer input is what QLinear* / DynamicQuantizeLinear kernels take
            raise ValueError(
                f"activation.granularity must be 'per_tensor', got '{self.activation.granularity}'"
            )
        return self

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> QuantConfig:
        """The config of scheme ``name`` with some fields changed.

        Raises:
            ConfigError: unknown scheme or invalid field.

        Example:
            >>> QuantConfig.preset("w8", calibration_size=64).mode
            'weight_only'
        """
        if name.lower() not in SCHEMES:
            raise ConfigError(f"unknown scheme '{name}'; valid schemes: {', '.join(SCHEMES)}")
        try:
            return cls(scheme=name, **overrides)
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc

    def is_ignored(self, name: str) -> bool:
        """Whether module ``name`` matches an ``ignore`` entry (exactly or as a regex)."""
        return any(name == p or re.fullmatch(p, name) for p in self.ignore)

    def weight_spec_for(self, name: str) -> QuantSpec | None:
        """The weight spec for layer ``name``: its override, the default, or ``None`` = float.

        Example:
            >>> cfg = QuantConfig(overrides={"fc.*": QuantSpec.preset("int4")})
            >>> cfg.weight_spec_for("fc1").bits, cfg.weight_spec_for("conv1").bits
            (4, 8)
        """
        choice: QuantSpec | str | None = self.overrides.get(name)
        if choice is None:
            choice = next(
                (s for p, s in self.overrides.items() if re.fullmatch(p, name)), self.weight
            )
        return None if choice == "float" else choice  # type: ignore[return-value]
