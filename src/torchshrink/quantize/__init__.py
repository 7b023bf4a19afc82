"""torchshrink.quantize: uniform and non-uniform quantization building blocks.

The package is callable: ``torchshrink.quantize(model, QuantConfig(...), calibration=...)`` runs
post-training quantization (:func:`torchshrink.quantize.ptq.quantize`). The name ``quantize``
*inside* the package is the tensor primitive.

Specs (:class:`QuantSpec`), pure primitives (qparams, quantize, dequantize, fake-quantize with
the straight-through estimator), sub-byte packing, calibration observers (registered by name),
the LSQ learnable-scale fake-quantizer and non-uniform schemes (power-of-two / log, binary,
ternary, k-means codebooks). Importing this package registers the built-in observers.

Example:
    >>> import torch
    >>> from torchshrink.quantize import QuantSpec, make_observer, quantize
    >>> spec = QuantSpec.preset("int8c")
    >>> w = torch.randn(4, 8)
    >>> obs = make_observer("minmax", spec)
    >>> obs.observe(w)
    >>> scale, zp = obs.compute()
    >>> quantize(w, scale, zp, spec).shape
    torch.Size([4, 8])
"""

from __future__ import annotations

from torchshrink.core.kmeans import KMeansResult, kmeans_1d
from torchshrink.core.lazy import make_callable
from torchshrink.quantize.hist_observers import (
    HistogramObserver,
    KLObserver,
    MSEObserver,
    PercentileObserver,
)
from torchshrink.quantize.lsq import LSQFakeQuant
from torchshrink.quantize.nonuniform import (
    ScaledCodes,
    binarize,
    kmeans_quantize,
    log_quantize,
    pot_quantize,
    ternarize,
)
from torchshrink.quantize.observers import (
    OBSERVERS,
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    Observer,
    make_observer,
    register_observer,
)
from torchshrink.quantize.packing import pack_bits, pack_int4, unpack_bits, unpack_int4
from torchshrink.quantize.primitives import (
    block_minmax,
    check_finite,
    compute_qparams,
    dequantize,
    fake_quantize,
    qparams_from_tensor,
    quantize,
)
from torchshrink.quantize.spec import QuantSpec

__all__ = [
    "OBSERVERS",
    "HistogramObserver",
    "KLObserver",
    "KMeansResult",
    "LSQFakeQuant",
    "MSEObserver",
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "Observer",
    "PercentileObserver",
    "QuantSpec",
    "ScaledCodes",
    "binarize",
    "block_minmax",
    "check_finite",
    "compute_qparams",
    "dequantize",
    "fake_quantize",
    "kmeans_1d",
    "kmeans_quantize",
    "log_quantize",
    "make_observer",
    "pack_bits",
    "pack_int4",
    "pot_quantize",
    "qparams_from_tensor",
    "quantize",
    "register_observer",
    "ternarize",
    "unpack_bits",
    "unpack_int4",
]

make_callable(__name__, "torchshrink.quantize.ptq:quantize")
