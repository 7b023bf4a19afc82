"""Energy estimate of one inference from a per-operation cost model (not a power measurement).

The default costs are Horowitz, "Computing's energy problem" (ISSCC 2014), 45 nm, the table
used by Deep Compression (Han et al. 2016):

=====================  ========   =====================  ========
operation              pJ         operation              pJ
=====================  ========   =====================  ========
fp32 multiply          3.7        int8 multiply          0.2
fp32 add               0.9        int8 add               0.03
fp16 multiply          1.1        fp16 add               0.4
32-bit SRAM read       5.0        32-bit DRAM read       640
=====================  ========   =====================  ========

Assumptions (also written into the profile's notes):

* **compute** = per layer, ``MACs * (mult + add)`` at the precision of the layer's weights
  (fp32 / fp64 -> fp32; fp16 / bf16 -> fp16; int8 / uint8 and narrower -> int8). Dense MACs
  are used: dense kernels multiply the zeros too.
* **weights** = every non-zero weight read once from DRAM per batch, in 32-bit words
  (an int8 weight is 1/4 word, an fp16 weight 1/2). For a dense model that is every weight.
* **activations** = every input and output tensor of every leaf layer read or written once
  from SRAM, in 32-bit words (a write is charged like a read).

The costs are a frozen dataclass, :class:`EnergyCost`: pass another one to model other hardware.

Example:
    >>> e = estimate_energy({"fp32": 1_000_000}, weight_bytes=4_000, activation_bytes=8_000)
    >>> round(e.compute_pj), round(e.dram_pj), round(e.sram_pj)
    (4600000, 640000, 10000)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from torchshrink.core.errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

    from torchshrink.core.forward import Inputs
    from torchshrink.measure.macs import MacsResult

_PRECISION_OF = {
    "float32": "fp32",
    "float64": "fp32",
    "float16": "fp16",
    "bfloat16": "fp16",
}


def precision_of(dtype: str | None) -> str:
    """Cost class of a dtype name: ``"fp32"``, ``"fp16"`` or ``"int8"``.

    Example:
        >>> precision_of("qint8"), precision_of("bfloat16"), precision_of(None)
        ('int8', 'fp16', 'fp32')
    """
    if dtype is None:
        return "fp32"
    if dtype in _PRECISION_OF:
        return _PRECISION_OF[dtype]
    if dtype.startswith("float8"):
        return "int8"  # 8-bit floats: no 45 nm figure; the 8-bit integer cost is the nearest
    # Integer and quantized dtypes (int8, uint8, qint8, quint4x2, ...) run 8-bit (or narrower) MACs.
    return "int8"


@dataclass(frozen=True)
class EnergyCost:
    """Energy per operation in picojoules (defaults: Horowitz, ISSCC 2014, 45 nm).

    Example:
        >>> EnergyCost().mac_pj("int8")
        0.23
    """

    fp32_mult_pj: float = 3.7
    fp32_add_pj: float = 0.9
    fp16_mult_pj: float = 1.1
    fp16_add_pj: float = 0.4
    int8_mult_pj: float = 0.2
    int8_add_pj: float = 0.03
    sram_read_pj: float = 5.0
    dram_read_pj: float = 640.0

    def mac_pj(self, precision: str) -> float:
        """Energy of one multiply-accumulate (``mult + add``) at ``precision``."""
        if precision not in ("fp32", "fp16", "int8"):
            raise ConfigError(f"energy: unknown precision '{precision}'; use fp32, fp16 or int8")
        mult = getattr(self, f"{precision}_mult_pj")
        add = getattr(self, f"{precision}_add_pj")
        return round(mult + add, 12)


HOROWITZ_45NM = EnergyCost()


@dataclass(frozen=True)
class EnergyEstimate:
    """Estimated energy of one forward pass over a batch, split by where it goes.

    Attributes:
        compute_pj: multiply-accumulates.
        dram_pj: reading the (non-zero) weights from DRAM once.
        sram_pj: reading and writing activations in SRAM.
        batch_size: samples in the batch the estimate is for.
    """

    compute_pj: float
    dram_pj: float
    sram_pj: float
    batch_size: int = 1

    @property
    def total_pj(self) -> float:
        return self.compute_pj + self.dram_pj + self.sram_pj

    @property
    def total_mj(self) -> float:
        """Millijoules for the whole batch."""
        return self.total_pj * 1e-9

    @property
    def per_sample_mj(self) -> float:
        """Millijoules per sample (the batch shares one read of the weights)."""
        return self.total_mj / max(self.batch_size, 1)


def estimate_energy(
    macs_by_precision: dict[str, int],
    *,
    weight_bytes: int,
    activation_bytes: int,
    batch_size: int = 1,
    cost: EnergyCost = HOROWITZ_45NM,
) -> EnergyEstimate:
    """Estimate the energy of one forward pass from its operation counts.

    Args:
        macs_by_precision: MACs per precision, e.g. ``{"fp32": 2_293_000}``.
        weight_bytes: bytes of the non-zero weights at their stored dtypes (read once from DRAM).
        activation_bytes: bytes of activations read or written (charged at the SRAM rate).
        batch_size: samples in the batch, for :attr:`EnergyEstimate.per_sample_mj`.
        cost: per-operation costs.

    Example:
        >>> fp32 = estimate_energy({"fp32": 1000}, weight_bytes=0, activation_bytes=0).total_pj
        >>> int8 = estimate_energy({"int8": 1000}, weight_bytes=0, activation_bytes=0).total_pj
        >>> round(fp32), round(int8)
        (4600, 230)
    """
    compute = sum(cost.mac_pj(p) * n for p, n in macs_by_precision.items())
    return EnergyEstimate(
        compute_pj=compute,
        dram_pj=weight_bytes / 4 * cost.dram_read_pj,
        sram_pj=activation_bytes / 4 * cost.sram_read_pj,
        batch_size=batch_size,
    )


def nonzero_weight_bytes(model: nn.Module) -> int:
    """Bytes of the non-zero elements of all parameters and buffers, at their stored dtypes.

    Example:
        >>> from torch import nn
        >>> nonzero_weight_bytes(nn.Linear(3, 2, bias=False)) == 6 * 4
        True
    """
    from torchshrink.measure.params import count_nonzero

    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}.values()
    return sum(count_nonzero([t]) * t.element_size() for t in tensors)


def model_energy(
    model: nn.Module,
    inputs: Inputs,
    *,
    cost: EnergyCost = HOROWITZ_45NM,
    macs: MacsResult | None = None,
) -> EnergyEstimate:
    """Estimate the energy of one forward pass of ``model`` on the batch ``inputs``.

    Args:
        model: the model (run once to count MACs unless ``macs`` is given).
        inputs: a tensor, a tuple of positional tensors or a dict of keyword tensors.
        cost: per-operation costs.
        macs: an existing :func:`~torchshrink.measure.macs.count_macs` result to reuse.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> e = model_energy(nn.Linear(10, 10), torch.zeros(1, 10))
        >>> round(e.compute_pj, 6)
        460.0
    """
    from torchshrink.core.forward import batch_size_of
    from torchshrink.measure.macs import count_macs

    result = macs if macs is not None else count_macs(model, inputs)
    by_precision: dict[str, int] = {}
    for layer in result.layers:
        p = precision_of(layer.weight_dtype)
        by_precision[p] = by_precision.get(p, 0) + layer.macs
    return estimate_energy(
        by_precision,
        weight_bytes=nonzero_weight_bytes(model),
        activation_bytes=result.activation_bytes,
        batch_size=batch_size_of(inputs),
        cost=cost,
    )


def assumptions(cost: EnergyCost = HOROWITZ_45NM) -> str:
    """The cost model in one line, for a profile's notes."""
    return (
        f"energy_mj is an estimate for one forward pass of the whole batch (45 nm cost model, "
        f"Horowitz ISSCC 2014): MACs x (mult+add) at the weights' precision "
        f"(fp32 {cost.mac_pj('fp32')} pJ, fp16 {cost.mac_pj('fp16')} pJ, int8 "
        f"{cost.mac_pj('int8')} pJ); non-zero weights read once from DRAM "
        f"({cost.dram_read_pj} pJ per 32-bit word); leaf-layer activations read/written in "
        f"SRAM ({cost.sram_read_pj} pJ per 32-bit word)"
    )
