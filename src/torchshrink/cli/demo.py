"""The embedded default job: needs no download and runs in about a minute on two cores.

It trains a zoo model on scikit-learn's bundled digits, saves it to a torchshrink model file,
loads that file back in place of the trained model (proving the file is self-sufficient),
and profiles it.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

DEMO_MODEL = "zoo:resnet20"
DEMO_DATA = "digits"


def run_demo(out: Path, *, epochs: int = 10, seed: int = 0, console: Console | None = None) -> dict:
    """Train, save, reload and profile; write ``profile.json`` into ``out``; return the record."""
    import json

    import torch

    from torchshrink.cli.common import data_model_defaults
    from torchshrink.cli.render import print_profile
    from torchshrink.core.data import load_data
    from torchshrink.core.modelfile import load, save
    from torchshrink.core.modelref import load_model
    from torchshrink.measure.accuracy import evaluate
    from torchshrink.measure.profile import profile
    from torchshrink.train.config import TrainConfig
    from torchshrink.train.loop import train

    console = console or Console()
    out.mkdir(parents=True, exist_ok=True)
    data = load_data(DEMO_DATA, seed=seed)
    console.print(
        f"[bold]torchshrink demo[/bold]: training {DEMO_MODEL} on {DEMO_DATA} "
        f"({len(data.train)} train / {len(data.test)} test images of shape {data.input_shape})"
    )
    torch.manual_seed(seed)
    model = load_model(DEMO_MODEL, model_args=data_model_defaults(data))
    config = TrainConfig(
        epochs=epochs,
        batch_size=64,
        optimizer="sgd",
        lr=0.05,
        momentum=0.9,
        weight_decay=5e-4,
        schedule="cosine",
        warmup_epochs=1,
        seed=seed,
    )
    result = train(model, data, config)
    path = save(model, out / "model.safetensors")
    reloaded = load(path)
    acc = evaluate(reloaded, data.test).accuracy
    if abs(acc - result.final_accuracy) > 1e-9:
        raise RuntimeError(
            f"reloaded model accuracy {acc} differs from trained {result.final_accuracy}"
        )
    prof = profile(reloaded, data.example_inputs(1), data=data, file_path=path).to_dict()
    (out / "profile.json").write_text(json.dumps(prof, indent=2, default=str))
    print_profile(prof, title=f"{DEMO_MODEL} on {DEMO_DATA}", console=console)
    console.print(f"saved model: {path}\nprofile JSON: {out / 'profile.json'}")
    return prof
