"""Simulated-quantization layers: QuantLinear and QuantConv2d.

Each wraps the float layer (kept for its hyper-parameters: stride, padding, groups, ...) and
holds what an int8 runtime needs: the integer weight codes with their scale / zero point (per
channel, per tensor or per group) and, for static quantization, the calibrated scale / zero
point of the layer *input*. The forward pass computes in float with exactly the values an
integer kernel sees:

``y = op(fq(x; s_x, z_x), dequant(W_q; s_w), bias_q)``

where in static mode the bias is rounded to int32 at scale ``s_x * s_w`` (as QLinearConv /
QGemm store it). These modules are the source of truth for ONNX export (``deploy.onnx_export``).

Saved state holds the codes only (the float weight is rebuilt on load), and codes narrower
than 8 bits are bit-packed there (:attr:`QuantLayer.storage_bits` bits per code, a flat uint8
stream), so an int4 weight takes half a byte per weight in a model file and is unpacked on load.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from torchshrink.quantize.spec import QuantSpec
    >>> q = QuantLinear(nn.Linear(8, 4), QuantSpec.preset("int8c"))
    >>> q(torch.randn(2, 8)).shape, q.weight_q.dtype
    (torch.Size([2, 4]), torch.int8)
"""

from __future__ import annotations

from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from torch import nn

from torchshrink.core.modulestate import register_module_state
from torchshrink.quantize.observers import make_observer
from torchshrink.quantize.packing import pack_bits, unpack_bits
from torchshrink.quantize.primitives import dequantize, fake_quantize, qparams_from_tensor
from torchshrink.quantize.primitives import quantize as quantize_codes
from torchshrink.quantize.spec import QuantSpec

ActMode = Literal["static", "dynamic", "weight_only"]


class QuantLayer(nn.Module):
    """Base of the simulated quantized layers (see the module docstring).

    Args:
        module: the float layer; kept as ``self.module`` (its weight is not used in forward).
        weight_spec: how the weight is quantized (axis 0 = output channels).
        act_spec: how the input is quantized; ``None`` for weight-only.
        mode: ``"static"`` (needs :meth:`set_input_qparams`), ``"dynamic"`` or
            ``"weight_only"``.
        weight_observer: observer name that picks the weight range.
        name: the layer's name in the model, for error messages.

    Attributes:
        module: the wrapped float layer.
        weight_q: integer weight codes, the weight's shape, ``weight_spec.storage_dtype``.
        weight_scale: weight scale in the spec's compact shape (``(C_out,)`` per channel).
        weight_zero_point: weight zero point, same shape.
        input_scale: input scale, ``()`` (static mode, after calibration).
        input_zero_point: input zero point, ``()``.
    """

    module: nn.Module
    weight_q: torch.Tensor
    weight_scale: torch.Tensor
    weight_zero_point: torch.Tensor
    input_scale: torch.Tensor
    input_zero_point: torch.Tensor

    def __init__(
        self,
        module: nn.Module | None,
        weight_spec: QuantSpec | dict[str, Any],
        act_spec: QuantSpec | dict[str, Any] | None = None,
        *,
        mode: ActMode = "weight_only",
        weight_observer: str = "minmax",
        name: str = "layer",
    ) -> None:
        super().__init__()
        self.weight_spec = QuantSpec.model_validate(weight_spec)
        self.act_spec = None if act_spec is None else QuantSpec.model_validate(act_spec)
        self.mode: ActMode = mode
        self.layer_name = name
        self.calibrated = False
        # The float weight is derivable from the integer codes: keep it out of saved state
        # (so an int8 file is about a quarter of the float one) and rebuild it on load.
        self.register_state_dict_post_hook(_drop_float_weight)
        self.register_load_state_dict_pre_hook(_restore_float_weight)
        if mode != "weight_only":
            # A fused path that reads `.weight` (nn.TransformerEncoderLayer's) would skip the
            # input quantizer; PyTorch takes no fused path through a module with hooks.
            self.register_forward_pre_hook(_no_fused_path)
        if module is None:
            # Rebuilt from a model file: the float child, codes and scales are loaded afterwards.
            for buf in ("weight_q", "weight_scale", "weight_zero_point"):
                self.register_buffer(buf, torch.zeros(0))
            self.register_buffer("input_scale", torch.ones(()))
            self.register_buffer("input_zero_point", torch.zeros((), dtype=torch.int32))
            return
        weight_spec = self.weight_spec
        self.module = module
        w = cast(torch.Tensor, module.weight).detach()
        obs = make_observer(weight_observer, weight_spec, name=f"{name}.weight")
        obs.observe(w)
        scale, zp = obs.compute()
        self.register_buffer("weight_q", quantize_codes(w, scale, zp, weight_spec, name=name))
        self.register_buffer("weight_scale", scale)
        self.register_buffer("weight_zero_point", zp)
        self.register_buffer("input_scale", torch.ones(()))
        self.register_buffer("input_zero_point", torch.zeros((), dtype=torch.int32))

    @property
    def storage_bits(self) -> int:
        """Bits per weight code in saved state (codes under 8 bits are bit-packed there)."""
        return self.weight_spec.bits

    def weight_from_state(self, state: dict[str, Any], prefix: str) -> torch.Tensor:
        """The float weight that the (unpacked) codes in a state dict stand for."""
        return dequantize(
            state[prefix + "weight_q"],
            state[prefix + "weight_scale"],
            state[prefix + "weight_zero_point"],
            self.weight_spec,
        )

    def set_input_qparams(self, scale: torch.Tensor, zero_point: torch.Tensor) -> None:
        """Record the calibrated input scale and zero point (static mode)."""
        self.input_scale = scale.detach().float().reshape(())
        self.input_zero_point = zero_point.detach().to(torch.int32).reshape(())
        self.calibrated = True

    def dequantized_weight(self) -> torch.Tensor:
        """The float weight the integer kernel effectively uses (same shape as the weight)."""
        return dequantize(
            self.weight_q, self.weight_scale, self.weight_zero_point, self.weight_spec
        )

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized float weight (read-only), for code that reads ``layer.weight``.

        PyTorch's fused ``nn.TransformerEncoderLayer`` inference path, for one, reads
        ``linear1.weight`` directly instead of calling the layer. The tensor is recomputed from
        the codes on every access and carries no gradient.

        Example:
            >>> q = QuantLinear(nn.Linear(4, 3), QuantSpec.preset("int8c"))
            >>> torch.equal(q.weight, q.dequantized_weight()), q.weight.shape
            (True, torch.Size([3, 4]))
        """
        return self.dequantized_weight().detach()

    @property
    def bias(self) -> torch.Tensor | None:
        """The bias the kernel adds (read-only; int32-rounded in static mode), or ``None``.

        Example:
            >>> QuantLinear(nn.Linear(4, 3, bias=False), QuantSpec.preset("int8c")).bias is None
            True
        """
        return self.effective_bias()

    @property
    def bias_is_quantized(self) -> bool:
        """Static mode with a per-tensor / per-channel weight: bias stored as int32."""
        return self.mode == "static" and self.weight_spec.granularity != "per_group"

    def bias_scale(self) -> torch.Tensor:
        """Scale of the int32 bias, ``s_x * s_w``: ``(C_out,)`` or ``()``."""
        return (self.input_scale.double() * self.weight_scale.double()).float()

    def effective_bias(self) -> torch.Tensor | None:
        """The bias the kernel adds: rounded to int32 codes at :meth:`bias_scale` when static."""
        bias = cast(torch.Tensor | None, self.module.bias)
        if bias is None or not self.bias_is_quantized:
            return None if bias is None else bias.detach()
        s = self.bias_scale().double()
        codes = torch.round(bias.detach().double() / s).clamp(-(2**31), 2**31 - 1)  # (C_out,)
        return (codes * s).float()

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """Fake-quantize the input as the integer kernel's input quantizer does."""
        if self.mode == "weight_only" or self.act_spec is None:
            return x
        if self.mode == "dynamic":
            # per batch: the range of this very input (ORT's DynamicQuantizeLinear does the same)
            scale, zp = qparams_from_tensor(
                x.detach(), self.act_spec, name=f"{self.layer_name}.input"
            )
        else:
            scale, zp = self.input_scale, self.input_zero_point
        return fake_quantize(x, scale, zp, self.act_spec, name=f"{self.layer_name}.input")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._op(self.quantize_input(x), self.dequantized_weight(), self.effective_bias())

    def _op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        act = "float" if self.act_spec is None else f"{self.act_spec.bits}-bit {self.mode}"
        return f"weight={self.weight_spec.bits}-bit {self.weight_spec.granularity}, input={act}"


class QuantLinear(QuantLayer):
    """Simulated quantized ``nn.Linear``: ``(*, in) -> (*, out)``.

    Example:
        >>> import torch
        >>> q = QuantLinear(nn.Linear(4, 3), QuantSpec(bits=4, granularity="per_channel"))
        >>> int(q.weight_q.max()) <= 7
        True
    """

    def _op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, w, b)  # (*, out)


class QuantConv2d(QuantLayer):
    """Simulated quantized ``nn.Conv2d``: ``(B, C_in, H, W) -> (B, C_out, H', W')``.

    Example:
        >>> import torch
        >>> q = QuantConv2d(nn.Conv2d(3, 8, 3), QuantSpec.preset("int8c"))
        >>> q(torch.randn(1, 3, 6, 6)).shape
        torch.Size([1, 8, 4, 4])
    """

    def _op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        conv: nn.Conv2d = self.module  # type: ignore[assignment]
        return conv._conv_forward(x, w, b)  # honours padding_mode, stride, groups


QUANT_LAYERS: dict[type[nn.Module], type[QuantLayer]] = {
    nn.Linear: QuantLinear,
    nn.Conv2d: QuantConv2d,
}


def _no_fused_path(_module: nn.Module, _args: Any) -> None:
    """A forward pre-hook that does nothing: its presence keeps fused paths away."""
    return None


# Codes are packed / unpacked this many at a time: a multiple of 8 codes is a whole number of
# bytes at any width, so the chunks concatenate to the one stream, in bounded memory.
_PACK_CHUNK = 1 << 20


def _drop_float_weight(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any
) -> None:
    state_dict.pop(prefix + "module.weight", None)
    assert isinstance(module, QuantLayer)
    key, bits = prefix + "weight_q", module.storage_bits
    codes = state_dict.get(key)
    # Packed only when that is shorter, so a load tells packed codes by their count alone.
    if codes is None or bits >= 8 or (codes.numel() * bits + 7) // 8 >= codes.numel():
        return
    flat = codes.detach().reshape(-1)  # (N,)
    chunks = [
        pack_bits(flat[i : i + _PACK_CHUNK], bits) for i in range(0, flat.numel(), _PACK_CHUNK)
    ]
    state_dict[key] = torch.cat(chunks)  # (ceil(N * bits / 8),) uint8


def _unpack_codes(module: QuantLayer, packed: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    bits, signed, n = module.storage_bits, module.weight_spec.signed, shape.numel()
    step = _PACK_CHUNK * bits // 8  # bytes per chunk of codes
    parts = []
    for start in range(0, n, _PACK_CHUNK):
        count = min(_PACK_CHUNK, n - start)
        chunk = packed[start // _PACK_CHUNK * step :][: (count * bits + 7) // 8]
        parts.append(unpack_bits(chunk, bits, count, signed=signed))
    return torch.cat(parts).reshape(shape).to(module.weight_spec.storage_dtype)


def _restore_float_weight(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any
) -> None:
    # Runs before the child `module` loads: unpack the codes and give the child the weight
    # they stand for. The child was rebuilt from its record, so its weight has the true shape.
    assert isinstance(module, QuantLayer)
    key, codes = prefix + "module.weight", state_dict.get(prefix + "weight_q")
    child_weight = getattr(getattr(module, "module", None), "weight", None)
    if codes is not None and isinstance(child_weight, torch.Tensor):
        shape = child_weight.shape
        if codes.numel() != shape.numel() and codes.dtype == torch.uint8:
            codes = _unpack_codes(module, codes, shape)
            state_dict[prefix + "weight_q"] = codes
            module.weight_q = codes  # an assign-load checks the buffer's shape against this
    if key in state_dict or codes is None:
        return
    state_dict[key] = module.weight_from_state(state_dict, prefix).to(torch.float32)


def _ctor_values(m: nn.Module) -> dict[str, Any]:
    # The float child is recorded (and rebuilt) on its own, so the constructor gets None.
    assert isinstance(m, QuantLayer)
    return {
        "module": None,
        "weight_spec": m.weight_spec.model_dump(mode="json"),
        "act_spec": None if m.act_spec is None else m.act_spec.model_dump(mode="json"),
        "name": m.layer_name,
    }


for _cls in (QuantLinear, QuantConv2d):
    register_module_state(
        _cls,
        attrs=("mode", "calibrated"),
        ctor=("module", "weight_spec", "act_spec", "mode", "name"),
        derived=_ctor_values,
    )
