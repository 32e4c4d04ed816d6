"""Shared fixtures: small models trained once per test session on offline data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robquant import load_model
from robquant.data import create_dataset
from robquant.pipeline import train_model
from digits_models import demo_runs


@pytest.fixture(scope="session")
def digits_test():
    return create_dataset("digits", split="test")


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """The demo's non-robust and robust digits models: {label: (folder, record)}."""
    root = tmp_path_factory.mktemp("demo")
    out = {}
    for label, kwargs in demo_runs():
        out[label] = (root / label, train_model(out=root / label, **kwargs))
    return out


@pytest.fixture(scope="session")
def clean_model(demo_models) -> torch.nn.Module:
    return load_model(demo_models["non_robust"][0])


@pytest.fixture()
def correct_batch(clean_model, digits_test):
    """Up to 256 digits test images that the clean model classifies correctly."""
    x = digits_test.images.float() / 255
    y = digits_test.labels
    with torch.no_grad():
        keep = clean_model(x).argmax(1) == y
    assert keep.float().mean() > 0.9
    return x[keep][:256], y[keep][:256]


@pytest.fixture(scope="session")
def narrow_model(tmp_path_factory) -> Path:
    """A width-4 ResNet-20 on digits: little redundancy, so low-bit PTQ visibly costs accuracy."""
    from robquant.train import TrainConfig

    out = tmp_path_factory.mktemp("narrow") / "fp"
    train_model(dataset="digits", model="resnet20", objective="clean", out=out, model_kwargs={"width": 4},
                train=TrainConfig(epochs=15, batch_size=64, lr=0.05, weight_decay=5e-4, schedule="cosine"))
    return out


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory):
    """The tiny study of test_study, run once without interruption: (study path, store, output)."""
    from test_study import TINY, cli, write

    root = tmp_path_factory.mktemp("reference")
    path = write(root, TINY)
    code, text = cli("run", path, "--device", "cpu")
    assert code == 0, text
    return path, root / "runs" / "store", text
