"""Deep Compression (Han et al. 2016) as one call: prune, share weights, Huffman-code, save.

Stages, each measured (test accuracy, non-zero parameters, bytes of the file it would write):

1. ``dense``: the model as given, saved as a plain fp32 model file.
2. ``pruned``: magnitude pruning of Linear / Conv weights, iteratively or gradually (AGP) with
   fine-tuning (:func:`torchshrink.prune`).
3. ``clustered``: per-layer k-means weight sharing with linear initialisation
   (:func:`torchshrink.cluster.cluster_weights`; 5 bits for fully connected and 8 for
   convolution layers by default, as in the paper).
4. ``centroids``: fine-tuning of the shared centroids (gradients summed per cluster, pruned
   zeros kept; :func:`torchshrink.cluster.finetune.finetune_centroids`).
5. ``huffman``: the Huffman-coded model file (:func:`torchshrink.codec.save_compressed`)
   written to ``path``, loaded back with :func:`torchshrink.load` and evaluated again.

With ``distill`` set, every fine-tuning (pruning and centroids) also learns the soft targets of
a frozen copy of the dense model as given, which recovers most of what a very sparse net loses.
``teacher=`` replaces that copy by another model (e.g. a larger one) or an ensemble whose logits
are averaged; it runs in eval mode under ``no_grad`` and is never trained. With
``DistillConfig(cache=True)`` its logits over the training split are computed once.

The bytes of stages 2-4 are those of a Huffman-coded file of that stage's model (written to a
temporary folder), so every stage is priced the same way. The compression ratio is the dense
fp32 bytes of every floating-point tensor divided by the bytes of the whole file, headers,
codebooks, positions and uncoded biases included.

Example:
    >>> import torchshrink
    >>> from torchshrink.train.config import TrainConfig
    >>> data = torchshrink.load_data("digits", limit=300)
    >>> m = torchshrink.load_model("zoo:lenet300", model_args={"input_size": 8})
    >>> ft = TrainConfig(epochs=1, lr=0.01, show_progress=False)
    >>> cfg = DeepCompressionConfig(prune_ratio=0.8, prune_steps=1, prune_finetune=ft,
    ...                             centroid_finetune=ft.model_copy(update={"lr": 1e-3}))
    >>> r = deep_compression(m, data, config=cfg, path="/tmp/dc_doc.safetensors")
    >>> [s.stage for s in r.stages]
    ['dense', 'pruned', 'clustered', 'centroids', 'huffman']
    >>> r.ratio > 10
    True
"""

from __future__ import annotations

import copy
import re
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from torchshrink.cluster.finetune import assignments_from_model, finetune_centroids
from torchshrink.cluster.kmeans_share import LAYER_TYPES, cluster_weights
from torchshrink.codec.report import CompressedReport
from torchshrink.codec.save import save_compressed
from torchshrink.core.databundle import DataBundle
from torchshrink.core.errors import ConfigError
from torchshrink.core.forward import Inputs
from torchshrink.core.modelfile import load, save
from torchshrink.distill.check import check_teacher
from torchshrink.distill.distiller import DistillConfig, distill_loss_terms
from torchshrink.distill.teacher import Teacher, as_teacher
from torchshrink.measure.accuracy import evaluate
from torchshrink.measure.params import param_stats
from torchshrink.prune.config import PruneConfig
from torchshrink.prune.dead import fold_dead_channels
from torchshrink.prune.pruner import prune
from torchshrink.train.config import TrainConfig
from torchshrink.train.hooks import LossTerm


def _default_finetune() -> TrainConfig:
    return TrainConfig.preset("finetune", epochs=2)


def _default_centroid_finetune() -> TrainConfig:
    return TrainConfig.preset("finetune", epochs=2, lr=1e-3)


class DeepCompressionConfig(BaseModel):
    """Settings of :func:`deep_compression`.

    Attributes:
        prune_ratio: fraction of each Linear / Conv weight removed (Deep Compression kept
            about 8% of LeNet's weights); ``0`` skips pruning.
        layer_ratios: ``{name_or_regex: ratio}`` overriding ``prune_ratio`` per layer.
        prune_steps: rounds of prune + fine-tune (each removes the same fraction of what is
            left); ``1`` prunes at once. Ignored by ``prune_schedule="agp"``.
        prune_schedule: ``"iterative"`` (``prune_steps`` hard rounds, each followed by
            ``prune_finetune``) or ``"agp"`` (one ``prune_finetune`` run during which the
            sparsity rises gradually to its target, Zhu & Gupta 2017).
        prune_finetune: training after each pruning round (or during AGP); ``None`` does not
            train.
        fc_bits: index bits of fully connected layers (``2**bits`` shared values).
        conv_bits: index bits of convolution layers.
        layer_bits: ``{name_or_regex: bits}`` overriding ``fc_bits`` / ``conv_bits``.
        centroid_finetune: training of the shared centroids; ``None`` does not train.
        centroid_reduce: per-cluster gradient, ``"sum"`` (the paper's) or ``"mean"``.
        distill: soft targets of the dense model (a frozen copy of the model as given) added
            to every fine-tuning; the hard-label cross-entropy is scaled by ``1 - alpha``.
            ``None`` trains on the labels only.
        bias_bits: also share each clustered layer's bias among ``2**bias_bits`` values
            (k-means, then tuned with the centroids); ``None`` keeps biases exact (raw
            float32 in the file, 13% of LeNet-5's at 138x).
        index_bits: bits per relative position of sparse tensors (``None``: the smallest file).
        fold_dead: after the centroids, remove the channels / neurons left with no weight,
            their constant output folded into the next Linear's bias
            (:func:`torchshrink.prune.fold_dead_channels`: exact, checked on the example
            inputs); the model returned is then a new, smaller one (stage ``folded``).
        ignore: module names or regexes left dense and unshared.
        seed: seeds pruning; the training seeds are those of the TrainConfigs.

    Example:
        >>> DeepCompressionConfig(prune_ratio=0.9, layer_ratios={"fc3": 0.75}).fc_bits
        5
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    prune_ratio: float = Field(default=0.92, ge=0, lt=1)
    layer_ratios: dict[str, float] = Field(default_factory=dict)
    prune_steps: int = Field(default=3, ge=1)
    prune_schedule: Literal["iterative", "agp"] = "iterative"
    prune_finetune: TrainConfig | None = Field(default_factory=_default_finetune)
    fc_bits: int = Field(default=5, ge=1, le=16)
    conv_bits: int = Field(default=8, ge=1, le=16)
    layer_bits: dict[str, int] = Field(default_factory=dict)
    centroid_finetune: TrainConfig | None = Field(default_factory=_default_centroid_finetune)
    centroid_reduce: Literal["sum", "mean"] = "sum"
    distill: DistillConfig | None = None
    bias_bits: int | None = Field(default=None, ge=1, le=16)
    index_bits: int | None = Field(default=None, ge=1, le=16)
    fold_dead: bool = False
    ignore: tuple[str, ...] = ()
    seed: int = 0

    @model_validator(mode="after")
    def _check_agp(self) -> DeepCompressionConfig:
        if self.prune_schedule == "agp" and self.prune_finetune is None:
            raise ValueError("prune_schedule: 'agp' prunes during fine-tuning; set prune_finetune")
        return self

    @field_validator("layer_ratios")
    @classmethod
    def _check_ratios(cls, v: dict[str, float]) -> dict[str, float]:
        for name, r in v.items():
            if not 0.0 <= r < 1.0:
                raise ValueError(f"layer_ratios['{name}'] must be in [0, 1), got {r}")
        return v

    @field_validator("layer_bits")
    @classmethod
    def _check_bits(cls, v: dict[str, int]) -> dict[str, int]:
        for name, b in v.items():
            if not 1 <= b <= 16:
                raise ValueError(f"layer_bits['{name}'] must be in 1..16, got {b}")
        return v


@dataclass(frozen=True)
class StageRecord:
    """Measurements after one stage.

    Attributes:
        stage: ``dense``, ``pruned``, ``clustered``, ``centroids`` or ``huffman``.
        accuracy: test accuracy (for ``huffman``: of the model loaded back from the file).
        nonzeros: non-zero parameters.
        params: parameters.
        dense_bytes: fp32 bytes of every floating-point tensor (the ratio's numerator).
        file_bytes: bytes of the model file this stage writes.
        ratio: ``dense_bytes / file_bytes``.
        seconds: wall time of the stage (training included).
    """

    stage: str
    accuracy: float
    nonzeros: int
    params: int
    dense_bytes: int
    file_bytes: int
    ratio: float
    seconds: float

    @property
    def error(self) -> float:
        """``1 - accuracy``."""
        return 1.0 - self.accuracy


@dataclass(frozen=True)
class LayerRecord:
    """One compressed layer: what fraction of its weights is left and how many values."""

    name: str
    weights: int
    kept: float
    bits: int
    clusters: int


@dataclass(frozen=True)
class DeepCompressionResult:
    """What :func:`deep_compression` did.

    Attributes:
        model: the compressed model (the object passed in; a new, smaller one with
            ``fold_dead``).
        path: the Huffman-coded model file.
        config: the settings used.
        stages: one record per stage, in order.
        layers: per-layer pruning and sharing results.
        report: the file's size breakdown.
    """

    model: nn.Module
    path: Path
    config: DeepCompressionConfig
    stages: tuple[StageRecord, ...]
    layers: tuple[LayerRecord, ...]
    report: CompressedReport

    @property
    def ratio(self) -> float:
        """Dense fp32 bytes / bytes of the saved file."""
        return self.stages[-1].ratio

    def stage(self, name: str) -> StageRecord:
        """The record of stage ``name``.

        Raises:
            KeyError: no such stage.
        """
        for s in self.stages:
            if s.stage == name:
                return s
        raise KeyError(f"no stage '{name}'; stages: {[s.stage for s in self.stages]}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (no model)."""
        return {
            "path": str(self.path),
            "ratio": self.ratio,
            "config": self.config.model_dump(mode="json"),
            "stages": [{**asdict(s), "error": s.error} for s in self.stages],
            "layers": [asdict(layer) for layer in self.layers],
            "breakdown": self.report.breakdown(),
        }


def _bits_map(model: nn.Module, config: DeepCompressionConfig) -> dict[str, int]:
    out: dict[str, int] = {}
    for name, module in model.named_modules():
        if not isinstance(module, LAYER_TYPES):
            continue
        if any(name == p or re.fullmatch(p, name) for p in config.ignore):
            continue
        bits = config.conv_bits if isinstance(module, nn.modules.conv._ConvNd) else config.fc_bits
        for pattern, b in config.layer_bits.items():
            if name == pattern or re.fullmatch(pattern, name):
                bits = b
                break
        out[name] = bits
    if not out:
        raise ConfigError(f"no Linear / Conv layer to compress in {type(model).__name__}")
    return out


def _weight(model: nn.Module, name: str) -> torch.Tensor:
    w = model.get_submodule(name).weight
    assert isinstance(w, torch.Tensor)  # _bits_map only keeps Linear / Conv layers
    return w.detach()


def _with_kd(ft: TrainConfig | None, distill: DistillConfig | None) -> TrainConfig | None:
    # The loop's hard-label cross-entropy gets 1 - alpha, as in torchshrink.distill.distill.
    if ft is None or distill is None:
        return ft
    return ft.model_copy(update={"ce_weight": (1.0 - distill.alpha) * ft.ce_weight})


def _checked_teacher(
    teacher: Teacher | nn.Module | Sequence[nn.Module],
    model: nn.Module,
    config: DeepCompressionConfig,
    example_inputs: Inputs,
) -> Teacher:
    # Fail before any training: a teacher that is unused, trained, or gives other logits.
    if config.distill is None:
        raise ConfigError("teacher: given but config.distill is None, so nothing would use it")
    t = as_teacher(teacher, cache=config.distill.cache)
    for i, member in enumerate(t.members):
        if member is model:
            raise ConfigError(
                f"teacher {i}: is the model being compressed, which changes during training; "
                "leave teacher=None to distill from a frozen copy of it"
            )
    return check_teacher(t, model, example_inputs, student_name="model")


def _measure(
    stage: str, model: nn.Module, data: DataBundle, file_bytes: int, dense: int, t0: float
) -> StageRecord:
    stats = param_stats(model)
    return StageRecord(
        stage=stage,
        accuracy=evaluate(model, data.test, batch_size=512).accuracy,
        nonzeros=stats.nonzero_params,
        params=stats.params,
        dense_bytes=dense,
        file_bytes=file_bytes,
        ratio=dense / file_bytes,
        seconds=time.perf_counter() - t0,
    )


def deep_compression(
    model: nn.Module,
    data: DataBundle,
    *,
    path: str | Path,
    config: DeepCompressionConfig | None = None,
    example_inputs: Inputs | None = None,
    teacher: Teacher | nn.Module | Sequence[nn.Module] | None = None,
) -> DeepCompressionResult:
    """Prune, share weights, fine-tune centroids and save a Huffman-coded file, **in place**.

    Args:
        model: a trained classifier with a spec (from :func:`torchshrink.load_model`).
        data: its training and test data.
        path: where the compressed model file goes.
        config: the settings; :class:`DeepCompressionConfig` defaults when ``None``.
        example_inputs: inputs the model runs on; one sample of ``data`` when ``None``.
        teacher: the model, ensemble (averaged logits) or
            :class:`~torchshrink.distill.teacher.Teacher` whose soft targets every
            fine-tuning learns (needs ``config.distill``); ``None``: a frozen copy of
            ``model`` as given. Never trained.

    Raises:
        ConfigError: nothing to compress, a model without a spec, or a bad ``teacher``
            (given without ``config.distill``, the model itself, or other logits' shape).
        ShapeError: the model does not run on ``example_inputs``.

    Example:
        >>> r = deep_compression(m, data, config=cfg, path="/tmp/dc.safetensors")  # doctest: +SKIP
        >>> r.stage("huffman").accuracy, r.ratio  # doctest: +SKIP
        (0.9842, 61.3)
        >>> kd = cfg.model_copy(update={"distill": DistillConfig(alpha=0.7)})  # doctest: +SKIP
        >>> r = deep_compression(m2, data, config=kd, path="t.ts", teacher=big)  # doctest: +SKIP
    """
    config = config or DeepCompressionConfig()
    path = Path(path)
    bits = _bits_map(model, config)
    if example_inputs is None:
        example_inputs = data.example_inputs(1)
    dense = sum(4 * t.numel() for t in model.state_dict().values() if t.is_floating_point())
    tmp = tempfile.TemporaryDirectory(prefix="torchshrink_dc_")
    stages: list[StageRecord] = []
    terms: list[LossTerm] = []
    t: Teacher | None = None
    if teacher is not None:
        t = _checked_teacher(teacher, model, config, example_inputs)
    elif config.distill is not None:
        frozen = copy.deepcopy(model).eval()
        for p in frozen.parameters():
            p.requires_grad_(False)
        t = as_teacher(frozen, cache=config.distill.cache)
    if t is not None and config.distill is not None:
        if config.distill.cache and t.cached_samples == 0:
            t.precompute(data.train, batch_size=512)  # as torchshrink.distill.distill does
        terms = distill_loss_terms(model, t, config.distill)

    def coded_bytes(name: str) -> int:
        file = Path(tmp.name) / f"{name}.safetensors"
        return save_compressed(model, file, index_bits=config.index_bits).file_bytes

    with tmp:
        t0 = time.perf_counter()
        plain = save(model, Path(tmp.name) / "dense.safetensors")
        stages.append(_measure("dense", model, data, plain.stat().st_size, dense, t0))
        weights0 = {n: _weight(model, n).numel() for n in bits}

        t0 = time.perf_counter()
        if config.prune_ratio > 0 or config.layer_ratios:
            schedule: Literal["oneshot", "iterative", "agp"] = config.prune_schedule
            if schedule == "iterative" and config.prune_steps == 1:
                schedule = "oneshot"
            pc = PruneConfig(
                granularity="unstructured",
                method="l1",
                ratio=config.prune_ratio,
                layer_ratios=config.layer_ratios,
                ignore=config.ignore,
                schedule=schedule,
                steps=config.prune_steps,
                finetune=_with_kd(config.prune_finetune, config.distill),
                seed=config.seed,
            )
            prune(model, pc, example_inputs=example_inputs, data=data, loss_terms=terms)
        stages.append(_measure("pruned", model, data, coded_bytes("pruned"), dense, t0))

        t0 = time.perf_counter()
        report = cluster_weights(model, bits, bias_bits=config.bias_bits)
        stages.append(_measure("clustered", model, data, coded_bytes("clustered"), dense, t0))

        t0 = time.perf_counter()
        assignments = assignments_from_model(model, report)
        if config.centroid_finetune is not None:
            finetune_centroids(
                model,
                data,
                _with_kd(config.centroid_finetune, config.distill),
                assignments=assignments,
                reduce=config.centroid_reduce,
                loss_terms=terms,
            )
        stages.append(_measure("centroids", model, data, coded_bytes("centroids"), dense, t0))

        if config.fold_dead:
            t0 = time.perf_counter()
            # 8 samples: constancy is checked across inputs (token ids cannot be perturbed)
            model, _ = fold_dead_channels(model, data.example_inputs(8))
            stages.append(_measure("folded", model, data, coded_bytes("folded"), dense, t0))
    for term in terms:
        close = getattr(term, "close", None)
        if close is not None:
            close()  # removes the student feature hooks (none for logits-only distillation)

    t0 = time.perf_counter()
    final = save_compressed(model, path, index_bits=config.index_bits)
    loaded = load(path)
    stages.append(_measure("huffman", loaded, data, final.file_bytes, dense, t0))
    layers = []
    for name, b in bits.items():
        w = _weight(model, name)
        nz = w[w != 0]
        kept = nz.numel() / weights0[name]  # of the layer's weights before any folding
        layers.append(LayerRecord(name, weights0[name], kept, b, torch.unique(nz).numel()))
    return DeepCompressionResult(model, path, config, tuple(stages), tuple(layers), final)
