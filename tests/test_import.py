"""`import torchshrink` stays light: no optional dependency is imported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

OPTIONAL = (
    "onnx",
    "onnxruntime",
    "transformers",
    "sentence_transformers",
    "optuna",
    "matplotlib",
    "sklearn",
    "mnist1d",
    "PIL",
)


def _imported_after(code: str) -> list[str]:
    probe = (
        f"import sys; {code}; import json; "
        f"print(json.dumps([m for m in {OPTIONAL!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_torchshrink_imports_no_optional_package() -> None:
    assert _imported_after("import torchshrink") == []


def test_import_torchshrink_does_not_import_torch() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import sys, torchshrink; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    "name",
    [
        "load_model",
        "load_data",
        "save",
        "load",
        "profile",
        "evaluate",
        "train",
        "TrainConfig",
        "prune",
        "PruneConfig",
        "factorize",
        "quantize",
        "QuantConfig",
        "FactorizeConfig",
    ],
)
def test_lazy_public_names_resolve(name: str) -> None:
    import torchshrink

    assert getattr(torchshrink, name) is not None
    assert name in dir(torchshrink)


def test_unknown_attribute_raises() -> None:
    import torchshrink

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        torchshrink.nope  # noqa: B018


def test_core_api_modules_import_no_optional_package() -> None:
    code = (
        "import torchshrink.core.modelref, torchshrink.core.modelfile, torchshrink.core.data, "
        "torchshrink.measure.profile, torchshrink.train.loop, torchshrink.cli.app"
    )
    assert _imported_after(code) == []


def test_family_packages_stay_callable_after_submodule_imports() -> None:
    code = (
        "import torch, torchshrink; "
        "import torchshrink.train.config, torchshrink.prune.config, torchshrink.quantize.spec; "
        "print(all(callable(getattr(torchshrink, n)) for n in ('train', 'prune', 'quantize')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


def test_callable_quantize_package_runs_ptq() -> None:
    import torch
    from torch import nn

    import torchshrink
    import torchshrink.quantize.spec

    model = nn.Sequential(nn.Linear(4, 3))
    q = torchshrink.quantize(
        model, torchshrink.QuantConfig.preset("w8"), calibration=[torch.randn(2, 4)]
    )
    assert type(q[0]).__name__ == "QuantLinear"
    assert type(model[0]) is nn.Linear  # a new model; the input is untouched
