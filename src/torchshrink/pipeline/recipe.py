"""Recipes: a YAML file validated into an ordered list of compression stages.

A recipe names the model, the data, an optional teacher, the metric and the stages; each stage
holds the config of its family (:class:`PruneConfig`, :class:`QuantConfig`,
:class:`DistillConfig`, :class:`FactorizeConfig`, :class:`TrainConfig`), so per-layer
overrides and ``ignore`` lists are those of the family. Built-in recipes live in
``torchshrink/recipes/NAME.yaml`` and are referenced by name.

Example:
    >>> r = load_recipe("int8-ptq")
    >>> [s.kind for s in r.stages]
    ['quantize', 'export']
    >>> load_recipe("int8-ptq", overrides=["train.epochs=1"]).train.epochs
    1
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from torchshrink.core.errors import ConfigError
from torchshrink.distill.distiller import DistillConfig
from torchshrink.lowrank.factorize import FactorizeConfig
from torchshrink.prune.config import PruneConfig
from torchshrink.quantize.config import QuantConfig
from torchshrink.train.config import TrainConfig

_FROZEN = ConfigDict(frozen=True, extra="forbid")


def _quiet_train() -> TrainConfig:
    return TrainConfig.preset("finetune", epochs=1, show_progress=False)


class PruneStage(BaseModel):
    """Prune with :func:`torchshrink.prune` (fine-tunes when ``config.finetune`` is set).

    ``sensitivity`` lists pruning ratios at which each layer's accuracy is measured first (with
    the stage's granularity and method); the table goes into the stage's details and the report
    draws it as curves.

    ``distill`` makes the stage's fine-tune (``config.finetune``) also match the soft targets
    (and any feature pairs) of the model the recipe started from, its baseline, with the
    hard-label cross-entropy weighted ``1 - alpha`` as :func:`torchshrink.distill` does: a
    pruned model recovers closer to the dense one (Hinton et al. 2015; Sanh et al. 2020).

    Example:
        >>> s = PruneStage(kind="prune", config={"ratio": 0.8, "finetune": {"epochs": 1}},
        ...                distill={"alpha": 0.7, "temperature": 4})
        >>> s.distill.alpha, s.config.finetune.epochs
        (0.7, 1)
    """

    model_config = _FROZEN
    kind: Literal["prune"]
    name: str | None = None
    config: PruneConfig = Field(default_factory=PruneConfig)
    sensitivity: list[Annotated[float, Field(ge=0.0, lt=1.0)]] | None = Field(
        default=None, min_length=1
    )
    distill: DistillConfig | None = None

    @field_validator("distill")
    @classmethod
    def _needs_finetune(cls, value: DistillConfig | None, info: ValidationInfo) -> Any:
        # distillation happens inside the stage's fine-tune: without one it would silently do nothing
        cfg = info.data.get("config")
        if value is not None and cfg is not None and cfg.finetune is None:
            raise ValueError(
                "distill needs the stage's fine-tune to distil in; set config.finetune "
                "(got config.finetune=None)"
            )
        return value


class QuantizeStage(BaseModel):
    """Quantize with :func:`torchshrink.quantize`, calibrating on the training split."""

    model_config = _FROZEN
    kind: Literal["quantize"]
    name: str | None = None
    config: QuantConfig = Field(default_factory=QuantConfig)


class DistillStage(BaseModel):
    """Distil the recipe's teacher (default: the model before the first stage) into the model."""

    model_config = _FROZEN
    kind: Literal["distill"]
    name: str | None = None
    config: DistillConfig = Field(default_factory=DistillConfig)
    train: TrainConfig = Field(default_factory=_quiet_train)


class FactorizeStage(BaseModel):
    """Low-rank factorization with :func:`torchshrink.factorize`."""

    model_config = _FROZEN
    kind: Literal["factorize"]
    name: str | None = None
    config: FactorizeConfig = Field(default_factory=lambda: FactorizeConfig(ratio=2.0))


class ClusterStage(BaseModel):
    """k-means weight sharing, then optional fine-tuning of the shared centroids.

    ``reduce`` is the centroid gradient during that fine-tuning: ``"sum"`` (Deep Compression's,
    the gradient of the loss with respect to the centroid) or ``"mean"`` (a step the size of one
    weight's; steadier for large clusters, e.g. 2-bit codebooks on dense layers, where a summed
    gradient over thousands of weights can blow the loss up). ``bias_bits`` shares each
    clustered layer's bias too (``2**bias_bits`` values, tuned with the centroids).
    """

    model_config = _FROZEN
    kind: Literal["cluster"]
    name: str | None = None
    bits: int | dict[str, int] = 5
    bias_bits: int | None = Field(default=None, ge=1, le=16)
    ignore: tuple[str, ...] = ()
    finetune: TrainConfig | None = None
    reduce: Literal["sum", "mean"] = "sum"


class FinetuneStage(BaseModel):
    """Plain training; ``keep_zeros`` keeps pruned weights at zero (a mask per weight)."""

    model_config = _FROZEN
    kind: Literal["finetune"]
    name: str | None = None
    train: TrainConfig = Field(default_factory=_quiet_train)
    keep_zeros: bool = True


class ExportStage(BaseModel):
    """Write the current model (unchanged) to ``out_dir``: ``model.onnx`` (``onnx``) or the
    Huffman-coded model file ``model.huffman.safetensors`` (``huffman``, read by
    ``torchshrink.load``)."""

    model_config = _FROZEN
    kind: Literal["export"]
    name: str | None = None
    format: Literal["onnx", "huffman"] = "onnx"


Stage = Annotated[
    PruneStage
    | QuantizeStage
    | DistillStage
    | FactorizeStage
    | ClusterStage
    | FinetuneStage
    | ExportStage,
    Field(discriminator="kind"),
]
STAGE_KINDS = ("prune", "quantize", "distill", "factorize", "cluster", "finetune", "export")


class Recipe(BaseModel):
    """A whole compression run.

    Attributes:
        name: a label for reports.
        model: model reference (``zoo:NAME``, ``file.py:factory``, a model file, ...).
        model_args: factory options, e.g. ``{"input_size": 8}``.
        data: data reference (``digits``, ``npz:PATH``, ...).
        data_limit: keep only the first N samples of each split (quick runs).
        teacher: model reference of the distillation teacher (``None``: the model as it was
            before the first stage).
        teacher_args: factory options of the teacher.
        train: train the model before the stages (a zoo model trained on the spot).
        metric: the evaluation metric.
        seed: seeds data splits, the initial weights and training.
        profile_repeats: timed forward passes per profile (0 skips latency).
        profile_batch: batch size of the latency measurement (1: single-sample latency).
        profile_threads: intra-op threads of the latency measurement (``None``: as set).
        stages: the stages, run in order.

    Example:
        >>> r = Recipe(model="zoo:lenet300", data="digits",
        ...            stages=[{"kind": "prune", "config": {"ratio": 0.5}}])
        >>> r.stages[0].config.ratio
        0.5
    """

    model_config = _FROZEN
    name: str | None = None
    model: str
    model_args: dict[str, Any] = Field(default_factory=dict)
    data: str = "digits"
    data_limit: int | None = Field(default=None, ge=1)
    teacher: str | None = None
    teacher_args: dict[str, Any] = Field(default_factory=dict)
    train: TrainConfig | None = None
    metric: Literal["accuracy"] = "accuracy"
    seed: int = 0
    profile_repeats: int = Field(default=20, ge=0)
    profile_batch: int = Field(default=1, ge=1)
    profile_threads: int | None = Field(default=None, ge=1)
    stages: list[Stage] = Field(min_length=1)


def builtin_recipes() -> list[str]:
    """Names of the built-in recipes.

    Example:
        >>> "deep-compression" in builtin_recipes()
        True
    """
    folder = resources.files("torchshrink") / "recipes"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_recipe(path_or_name: str | Path, *, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe from a YAML file or a built-in name, applying ``key=value`` overrides.

    Args:
        path_or_name: a ``.yaml`` file, or a built-in name (see :func:`builtin_recipes`).
        overrides: dotted ``key=value`` strings (the value is parsed as YAML), e.g.
            ``stages.0.config.ratio=0.3`` or ``train.epochs=1``.

    Raises:
        ConfigError: the file is missing or not YAML, or the recipe is invalid; the message
            names the file, the stage index, the field and what was expected.

    Example:
        >>> load_recipe("structured-50", overrides=["stages.0.config.ratio=0.25"]).stages[0].config.ratio
        0.25
    """
    import yaml

    source, text = _read(path_or_name)
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe '{source}': not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"recipe '{source}': expected a mapping of fields, got {type(raw).__name__}"
        )
    for item in overrides or []:
        _apply_override(raw, item, source)
    return recipe_from_dict(raw, source=source)


def recipe_from_dict(raw: Any, *, source: str = "<dict>") -> Recipe:
    """Validate ``raw`` into a :class:`Recipe`, turning pydantic errors into :class:`ConfigError`.

    Example:
        >>> recipe_from_dict({"model": "zoo:lenet5", "stages": [{"kind": "export"}]}).stages[0].format
        'onnx'
    """
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"recipe '{source}': " + _describe(exc.errors()[0])) from None
    except (TypeError, ValueError) as exc:  # a nested validator raising outside pydantic
        raise ConfigError(f"recipe '{source}': {exc}") from None


def _describe(err: Any) -> str:
    loc = list(err.get("loc", ()))
    where = ""
    if len(loc) >= 2 and loc[0] == "stages" and isinstance(loc[1], int):
        where = f"stage {loc[1]}: "
        loc = loc[2:]
        if loc and loc[0] in STAGE_KINDS:
            where = f"stage {err['loc'][1]} ({loc[0]}): "
            loc = loc[1:]
    field = ".".join(str(p) for p in loc)
    kind = err.get("type", "")
    if kind == "union_tag_invalid":
        return f"{where}field 'kind': expected one of {', '.join(STAGE_KINDS)}, got {err.get('input', {}).get('kind')!r}"
    if kind == "union_tag_not_found":
        return f"{where}field 'kind': missing; expected one of {', '.join(STAGE_KINDS)}"
    if kind == "extra_forbidden":
        return f"{where}field '{field}': unknown key (not allowed here)"
    got = repr(err.get("input"))
    if len(got) > 60:
        got = got[:57] + "..."
    return f"{where}field '{field or 'recipe'}': {err.get('msg', 'invalid')} (got {got})"


def _read(path_or_name: str | Path) -> tuple[str, str]:
    path = Path(path_or_name)
    if path.is_file():
        return str(path), path.read_text(encoding="utf-8")
    name = str(path_or_name)
    if name in builtin_recipes():
        res = resources.files("torchshrink") / "recipes" / f"{name}.yaml"
        return f"builtin:{name}", res.read_text(encoding="utf-8")
    raise ConfigError(
        f"recipe '{name}': no such file and no built-in recipe of that name; "
        f"built-in recipes: {', '.join(builtin_recipes())}"
    )


def _apply_override(raw: dict[str, Any], item: str, source: str) -> None:
    import yaml

    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"recipe '{source}': override '{item}': expected key=value")
    parts = key.strip().split(".")
    node: Any = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(
                    f"recipe '{source}': override '{key}': '{part}' is not an index below {len(node)}"
                )
            if last:
                node[int(part)] = yaml.safe_load(value)
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = yaml.safe_load(value)
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise ConfigError(
                f"recipe '{source}': override '{key}': '{part}' is inside a {type(node).__name__}"
            )
