"""Observers that clip outliers: percentile, MSE-optimal and KL-divergence (entropy).

Percentile and KL keep one histogram per scale block (``num_bins`` bins, float64). Symmetric specs
histogram ``|x|``; asymmetric specs histogram ``x``. When a batch widens the range, the old
histogram is re-binned onto the new range assuming uniform mass inside each old bin, so
memory stays ``R * num_bins`` whatever the number of batches.

Example:
    >>> import torch
    >>> x = torch.cat([torch.randn(10_000), torch.tensor([1000.0])])
    >>> obs = make_observer("percentile", QuantSpec(bits=8), percentile=99.9)
    >>> obs.observe(x)
    >>> float(obs.clip_range()[1]) < 10
    True
"""

from __future__ import annotations

import torch

from torchshrink.core.errors import ConfigError
from torchshrink.quantize.observers import Observer, make_observer, register_observer
from torchshrink.quantize.primitives import compute_qparams
from torchshrink.quantize.spec import QuantSpec

__all__ = ["HistogramObserver", "KLObserver", "MSEObserver", "PercentileObserver", "make_observer"]


class HistogramObserver(Observer):
    """Base of the histogram observers; ``abs_mode`` histograms ``|x|`` (default: symmetric)."""

    def __init__(
        self,
        spec: QuantSpec,
        *,
        num_bins: int = 2048,
        abs_mode: bool | None = None,
        name: str = "tensor",
    ) -> None:
        if num_bins < 8:
            raise ConfigError(f"num_bins must be >= 8, got {num_bins}")
        super().__init__(spec, name=name)
        self.num_bins = num_bins
        self.abs_mode = spec.symmetric if abs_mode is None else abs_mode
        self.hist: torch.Tensor | None = None  # (R, B)
        self.lo: torch.Tensor | None = None  # (R,) histogram range
        self.hi: torch.Tensor | None = None
        self.min_val: torch.Tensor | None = None  # (R,) exact data range
        self.max_val: torch.Tensor | None = None

    @property
    def width(self) -> torch.Tensor:
        """Bin width per block, ``(R,)``."""
        assert self.lo is not None and self.hi is not None
        return (self.hi - self.lo) / self.num_bins

    def _update(self, blocks: torch.Tensor) -> None:
        bmin, bmax = blocks.amin(dim=1), blocks.amax(dim=1)  # (R,)
        self.min_val = bmin if self.min_val is None else torch.minimum(self.min_val, bmin)
        self.max_val = bmax if self.max_val is None else torch.maximum(self.max_val, bmax)
        data = blocks.abs() if self.abs_mode else blocks  # (R, K)
        lo = torch.zeros_like(bmin) if self.abs_mode else bmin
        hi = data.amax(dim=1)
        # A zero-width range gets a tiny width so that bins and centres stay finite.
        hi = torch.maximum(hi, lo + lo.abs().clamp(min=1.0) * 1e-12)
        if self.hist is None or self.lo is None or self.hi is None:
            self.lo, self.hi = lo, hi
            self.hist = torch.zeros(data.shape[0], self.num_bins, dtype=torch.float64)
        else:
            new_lo, new_hi = torch.minimum(self.lo, lo), torch.maximum(self.hi, hi)
            if bool((new_lo < self.lo).any() or (new_hi > self.hi).any()):
                self.hist = self._rebin(new_lo, new_hi)
                self.lo, self.hi = new_lo, new_hi
        b = self.num_bins
        pos = (data - self.lo[:, None]) / (self.hi - self.lo)[:, None] * b  # (R, K)
        idx = pos.floor().clamp(0, b - 1).long()
        self.hist.scatter_add_(1, idx, torch.ones_like(pos))

    def _rebin(self, new_lo: torch.Tensor, new_hi: torch.Tensor) -> torch.Tensor:
        assert self.hist is not None and self.lo is not None
        b = self.num_bins
        steps = torch.arange(b + 1, dtype=torch.float64)
        edges = new_lo[:, None] + (new_hi - new_lo)[:, None] * steps / b  # (R, B + 1)
        return torch.diff(self._cdf_at(edges), dim=1)  # (R, B)

    def _cdf_at(self, values: torch.Tensor) -> torch.Tensor:
        """Observed count below each of ``values`` ``(R, M)`` (uniform mass within a bin)."""
        assert self.hist is not None and self.lo is not None
        b = self.num_bins
        cdf = torch.cat([self.hist.new_zeros(self.hist.shape[0], 1), self.hist.cumsum(1)], 1)
        pos = ((values - self.lo[:, None]) / self.width[:, None]).clamp(0, b)  # (R, M)
        i = pos.floor().clamp(max=b - 1).long()
        return cdf.gather(1, i) + (pos - i) * self.hist.gather(1, i)

    def quantile(self, q: float) -> torch.Tensor:
        """Value below which a fraction ``q`` of the histogrammed data lies, ``(R,)``."""
        assert self.hist is not None and self.lo is not None
        cdf = self.hist.cumsum(1)  # (R, B)
        target = q * cdf[:, -1:]  # (R, 1)
        i = torch.searchsorted(cdf, target).clamp(max=self.num_bins - 1)  # (R, 1)
        below = torch.where(i > 0, cdf.gather(1, (i - 1).clamp(min=0)), torch.zeros_like(target))
        frac = ((target - below) / self.hist.gather(1, i).clamp(min=1e-300)).clamp(0, 1)
        return (self.lo[:, None] + (i + frac) * self.width[:, None]).squeeze(1)

    def centres(self) -> torch.Tensor:
        """Bin centres ``(R, B)``."""
        assert self.lo is not None
        steps = torch.arange(self.num_bins, dtype=torch.float64) + 0.5
        return self.lo[:, None] + self.width[:, None] * steps

    def _within_data(self, lo: torch.Tensor, hi: torch.Tensor):
        """Clip a candidate range to the data range (matters for |x| histograms)."""
        assert self.min_val is not None and self.max_val is not None
        return torch.maximum(lo, self.min_val), torch.minimum(hi, self.max_val)


@register_observer("percentile")
class PercentileObserver(HistogramObserver):
    """Clip at a percentile of ``|x|`` (symmetric) or at both tails of ``x`` (asymmetric).

    Args:
        spec: the quantization spec.
        percentile: in ``(0, 100]``; 99.99 keeps all but the most extreme 0.01%.
        num_bins: histogram resolution.
        name: what is observed, for messages.
    """

    def __init__(
        self,
        spec: QuantSpec,
        *,
        percentile: float = 99.99,
        num_bins: int = 2048,
        name: str = "tensor",
    ) -> None:
        if not 0 < percentile <= 100:
            raise ConfigError(f"percentile must be in (0, 100], got {percentile}")
        super().__init__(spec, num_bins=num_bins, name=name)
        self.percentile = percentile

    def clip_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.percentile / 100
        if self.abs_mode:
            c = self.quantile(p)
            return self._within_data(-c, c)
        return self._within_data(self.quantile(1 - p), self.quantile(p))


def _fq(v: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor, spec: QuantSpec) -> torch.Tensor:
    """Fake-quantize ``v`` ``(R, S)`` with per-row float64 ``scale`` / ``zp`` ``(R,)``."""
    s, z = scale[:, None], zp[:, None]
    return (torch.round(v / s + z).clamp(spec.qmin, spec.qmax) - z) * s


@register_observer("mse")
class MSEObserver(Observer):
    """Pick the clip ratio (of the min-max range) that minimises the quantization MSE.

    Unlike the histogram observers it keeps the observed values themselves (evenly
    subsampled, deterministically, to at most ``max_samples`` per block), because a uniform
    histogram is too coarse for the body of heavy-tailed data where the optimum lies. The
    candidates are ``num_candidates`` linear ratios in ``(0, 1]`` plus as many log-spaced
    ones down to ``1e-3``; the MSE of each is measured exactly on the kept values.

    Args:
        spec: the quantization spec.
        num_candidates: linear (and log-spaced) clip ratios tried.
        max_samples: values kept per block.
        name: what is observed, for messages.

    Example:
        >>> x = torch.distributions.StudentT(2.0).sample((4096,))
        >>> obs = MSEObserver(QuantSpec(bits=4))
        >>> obs.observe(x)
        >>> float(obs.clip_range()[1]) < float(x.abs().max())
        True
    """

    def __init__(
        self,
        spec: QuantSpec,
        *,
        num_candidates: int = 100,
        max_samples: int = 65536,
        name: str = "tensor",
    ) -> None:
        if num_candidates < 1:
            raise ConfigError(f"num_candidates must be >= 1, got {num_candidates}")
        if max_samples < 1:
            raise ConfigError(f"max_samples must be >= 1, got {max_samples}")
        super().__init__(spec, name=name)
        self.num_candidates = num_candidates
        self.max_samples = max_samples
        self.samples: torch.Tensor | None = None  # (R, S)
        self.min_val: torch.Tensor | None = None
        self.max_val: torch.Tensor | None = None

    def _update(self, blocks: torch.Tensor) -> None:
        bmin, bmax = blocks.amin(dim=1), blocks.amax(dim=1)  # (R,)
        self.min_val = bmin if self.min_val is None else torch.minimum(self.min_val, bmin)
        self.max_val = bmax if self.max_val is None else torch.maximum(self.max_val, bmax)
        kept = blocks if self.samples is None else torch.cat([self.samples, blocks], dim=1)
        if kept.shape[1] > self.max_samples:
            # Even stride keeps the sample deterministic and spread over all batches.
            idx = torch.linspace(0, kept.shape[1] - 1, self.max_samples).round().long()
            kept = kept[:, idx]
        self.samples = kept

    def clip_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.samples is not None and self.min_val is not None and self.max_val is not None
        x = self.samples  # (R, S)
        if self.spec.symmetric:
            amax = torch.maximum(-self.min_val, self.max_val)
            full_lo, full_hi = -amax, amax
        else:
            full_lo, full_hi = self.min_val, self.max_val
        n = self.num_candidates
        ratios = torch.cat([torch.arange(1, n + 1) / n, torch.logspace(-3, 0, n)])
        best_err = torch.full_like(full_lo, float("inf"))
        best_lo, best_hi = full_lo.clone(), full_hi.clone()
        for r in ratios.tolist():
            lo = torch.maximum(full_lo * r, self.min_val)
            hi = torch.minimum(full_hi * r, self.max_val)
            scale, zp = compute_qparams(lo, hi, self.spec)
            err = ((_fq(x, scale.double(), zp.double(), self.spec) - x) ** 2).sum(1)  # (R,)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_lo, best_hi = torch.where(better, lo, best_lo), torch.where(better, hi, best_hi)
        return best_lo, best_hi


@register_observer("kl")
class KLObserver(HistogramObserver):
    """TensorRT-style entropy calibration: the ``|x|`` threshold minimising KL(P || Q).

    For every candidate threshold ``i`` bins, P is the histogram up to ``i`` with the clipped
    tail folded into its last bin, and Q is that histogram merged into the number of positive
    quantization levels and spread back evenly over the non-empty bins.

    Args:
        spec: the quantization spec.
        num_bins: histogram resolution (TensorRT uses 2048).
        stride: try every ``stride``-th threshold (1 = all; larger is faster).
        name: what is observed, for messages.
    """

    def __init__(
        self, spec: QuantSpec, *, num_bins: int = 2048, stride: int = 1, name: str = "tensor"
    ) -> None:
        if stride < 1:
            raise ConfigError(f"stride must be >= 1, got {stride}")
        super().__init__(spec, num_bins=num_bins, abs_mode=True, name=name)
        self.stride = stride

    def clip_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self.hist is not None
        hist, b = self.hist, self.num_bins
        nq = min(2 ** (self.spec.bits - 1) if self.spec.signed else 2**self.spec.bits, b)
        best_kl = torch.full((hist.shape[0],), float("inf"), dtype=torch.float64)
        best_i = torch.full((hist.shape[0],), b, dtype=torch.float64)
        for i in [*range(nq, b, self.stride), b]:
            ref = hist[:, :i]  # (R, i)
            p = ref.clone()
            p[:, -1] += hist[:, i:].sum(1)
            group = torch.arange(i) * nq // i  # (i,) which level each bin merges into
            sums = ref.new_zeros(ref.shape[0], nq).index_add_(1, group, ref)
            nonzero = ref.new_zeros(ref.shape[0], nq).index_add_(1, group, (ref > 0).double())
            q = torch.where(ref > 0, (sums / nonzero.clamp(min=1))[:, group], 0.0)
            pn = p / p.sum(1, keepdim=True).clamp(min=1e-300)
            qn = q / q.sum(1, keepdim=True).clamp(min=1e-300)
            ratio = pn / qn.clamp(min=1e-12)
            kl = torch.where(pn > 0, pn * torch.log(ratio.clamp(min=1e-300)), 0.0).sum(1)
            better = kl < best_kl
            best_kl = torch.where(better, kl, best_kl)
            best_i = torch.where(better, torch.full_like(best_i, i), best_i)
        assert self.lo is not None
        c = self.lo + best_i * self.width  # (R,) upper edge of the last kept bin
        return self._within_data(-c, c)
