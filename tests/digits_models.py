"""Reference digits models for the tests: a small ResNet-20, clean vs PGD adversarial training.

Digits are 8x8 with coarse grey levels (17 values), so small budgets barely move a prediction:
the sweep runs to 64/255, and the robust model trains at 32/255 (step 8/255), where the clean
model falls to near zero while the robust one holds most of its accuracy.
"""

from __future__ import annotations

from typing import Any, Iterator

from robquant.train import TrainConfig

DEMO_EPS_255 = (4, 8, 16, 32, 64)
DEMO_TRAIN_EPS_255 = 32


def demo_runs(epochs: int = 15, seed: int = 0) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(label, train_model kwargs)`` for the demo's non-robust and robust models."""
    cfg = TrainConfig(epochs=epochs, batch_size=64, lr=0.05, weight_decay=5e-4, schedule="cosine", seed=seed)
    common = {"dataset": "digits", "model": "resnet20", "model_kwargs": {"width": 8}, "train": cfg}
    yield "non_robust", {**common, "objective": "clean"}
    yield "robust", {**common, "objective": "pgd_at",
                     "objective_kwargs": {"eps": DEMO_TRAIN_EPS_255 / 255, "step_size": DEMO_TRAIN_EPS_255 / 4 / 255}}
