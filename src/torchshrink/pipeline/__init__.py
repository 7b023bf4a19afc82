"""torchshrink.pipeline: stages composed into one call (L3: it may use every family).

The function :func:`deep_compression` shares its name with its module; importing it here
eagerly makes ``torchshrink.pipeline.deep_compression`` the function, whatever was imported
first.

Example:
    >>> from torchshrink.pipeline import DeepCompressionConfig, deep_compression
    >>> DeepCompressionConfig().conv_bits, callable(deep_compression)
    (8, True)
"""

from __future__ import annotations

from torchshrink.pipeline.deep_compression import (
    DeepCompressionConfig,
    DeepCompressionResult,
    LayerRecord,
    StageRecord,
    deep_compression,
)

__all__ = [
    "DeepCompressionConfig",
    "DeepCompressionResult",
    "LayerRecord",
    "StageRecord",
    "deep_compression",
]
