"""Model-file registrations of the torch.nn built-in layers (see :mod:`.modulestate`).

Every type here may be constructed when a model file records it where the rebuilt architecture
has something else (a factorized ``Linear`` -> ``Sequential``, a pruned block -> ``Identity``).
Imported lazily by :mod:`torchshrink.core.modulestate`.

Example:
    >>> from torchshrink.core.modulestate import build_module, qualified_name
    >>> build_module(qualified_name(nn.Linear), {"in_features": 4, "out_features": 2,
    ...                                          "bias": False}, where="fc").bias is None
    True
"""

from __future__ import annotations

from typing import Any

from torch import nn

from torchshrink.core.modulestate import register_module_state


def _has_bias(m: nn.Module) -> dict[str, Any]:
    return {"bias": getattr(m, "bias", None) is not None}


def _conv_padding_cache(m: nn.Module) -> None:
    # _ConvNd caches the reversed padding for non-zero padding modes; keep it consistent.
    padding = getattr(m, "padding", None)
    if isinstance(padding, tuple):
        cache = [p for p in reversed(padding) for _ in range(2)]
        m._reversed_padding_repeated_twice = cache  # type: ignore[assignment]


_cls: type[nn.Module]
_CONV = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups")
for _cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
    register_module_state(
        _cls,
        attrs=(*_CONV, "padding_mode"),
        ctor=(*_CONV, "bias", "padding_mode"),
        derived=_has_bias,
        after_apply=_conv_padding_cache,
    )
for _cls in (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d):
    register_module_state(
        _cls,
        attrs=(*_CONV, "output_padding", "padding_mode"),
        ctor=(*_CONV, "output_padding", "bias", "padding_mode"),
        derived=_has_bias,
    )

register_module_state(
    nn.Linear,
    attrs=("in_features", "out_features"),
    ctor=("in_features", "out_features", "bias"),
    derived=_has_bias,
)
register_module_state(
    nn.Bilinear,
    attrs=("in1_features", "in2_features", "out_features"),
    ctor=("in1_features", "in2_features", "out_features", "bias"),
    derived=_has_bias,
)

_BN = ("num_features", "eps", "momentum", "affine", "track_running_stats")
for _cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
    register_module_state(_cls, attrs=_BN, ctor=_BN)
for _cls in (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d):
    register_module_state(_cls, attrs=_BN, ctor=_BN)
register_module_state(
    nn.LayerNorm,
    attrs=("normalized_shape", "eps", "elementwise_affine"),
    ctor=("normalized_shape", "eps", "elementwise_affine", "bias"),
    derived=_has_bias,
)
register_module_state(
    nn.GroupNorm,
    attrs=("num_groups", "num_channels", "eps", "affine"),
    ctor=("num_groups", "num_channels", "eps", "affine"),
)

_EMB = ("num_embeddings", "embedding_dim", "padding_idx", "max_norm", "norm_type")
register_module_state(nn.Embedding, attrs=_EMB, ctor=(*_EMB, "scale_grad_by_freq", "sparse"))
register_module_state(
    nn.EmbeddingBag, attrs=(*_EMB, "mode"), ctor=(*_EMB, "mode", "scale_grad_by_freq", "sparse")
)


def _mha_extra(m: nn.Module) -> dict[str, Any]:
    return {
        "bias": getattr(m, "in_proj_bias", None) is not None,
        "add_bias_kv": getattr(m, "bias_k", None) is not None,
    }


# Shape-defining attributes of attention; reused by torchshrink's pruned attention type.
MHA_ATTRS = (
    "embed_dim",
    "num_heads",
    "head_dim",
    "kdim",
    "vdim",
    "_qkv_same_embed_dim",
    "dropout",
    "batch_first",
)

register_module_state(
    nn.MultiheadAttention,
    attrs=MHA_ATTRS,
    ctor=(
        "embed_dim",
        "num_heads",
        "dropout",
        "bias",
        "add_bias_kv",
        "add_zero_attn",
        "kdim",
        "vdim",
        "batch_first",
    ),
    derived=lambda m: {**_mha_extra(m), "add_zero_attn": bool(m.add_zero_attn)},
)

# Containers: constructed empty, their children are recorded (and built) one by one.
for _cls in (nn.Sequential, nn.ModuleList, nn.ModuleDict):
    register_module_state(_cls, attrs=(), ctor=())

# Parameter-free layers: only the options that change what they compute.
_SIMPLE: dict[type[nn.Module], tuple[str, ...]] = {
    nn.Identity: (),
    nn.Flatten: ("start_dim", "end_dim"),
    nn.ReLU: ("inplace",),
    nn.ReLU6: ("inplace",),
    nn.SiLU: ("inplace",),
    nn.Hardswish: ("inplace",),
    nn.Hardsigmoid: ("inplace",),
    nn.Mish: ("inplace",),
    nn.ELU: ("alpha", "inplace"),
    nn.LeakyReLU: ("negative_slope", "inplace"),
    nn.GELU: ("approximate",),
    nn.Sigmoid: (),
    nn.Tanh: (),
    nn.Softmax: ("dim",),
    nn.LogSoftmax: ("dim",),
    nn.Dropout: ("p", "inplace"),
    nn.Dropout1d: ("p", "inplace"),
    nn.Dropout2d: ("p", "inplace"),
    nn.Dropout3d: ("p", "inplace"),
    nn.MaxPool1d: ("kernel_size", "stride", "padding", "dilation", "ceil_mode"),
    nn.MaxPool2d: ("kernel_size", "stride", "padding", "dilation", "ceil_mode"),
    nn.MaxPool3d: ("kernel_size", "stride", "padding", "dilation", "ceil_mode"),
    nn.AvgPool1d: ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"),
    nn.AvgPool2d: ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad"),
    nn.AdaptiveAvgPool1d: ("output_size",),
    nn.AdaptiveAvgPool2d: ("output_size",),
    nn.AdaptiveAvgPool3d: ("output_size",),
    nn.AdaptiveMaxPool1d: ("output_size",),
    nn.AdaptiveMaxPool2d: ("output_size",),
}
for _cls, _attrs in _SIMPLE.items():
    register_module_state(_cls, attrs=_attrs, ctor=_attrs)
