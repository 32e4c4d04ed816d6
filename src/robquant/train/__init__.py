"""One training loop with pluggable objectives (clean, PGD-AT), schedules and exact resume."""

from __future__ import annotations

from robquant.train.loop import SCHEDULES, TrainConfig, TrainResult, fit, seed_everything
from robquant.train.objectives import (OBJECTIVES, PGDAT, Clean, FastAdversarial, Objective, PGDATConfig,
                                       Transfer, create_objective, list_objectives)


def convergence_status(accuracy: float, num_classes: int, margin: float = 0.05) -> tuple[str, str]:
    """``("NC", reason)`` if accuracy is within ``margin`` of chance, else ``("done", "")``."""
    chance = 1.0 / num_classes
    if accuracy <= chance + margin:
        return "NC", f"clean accuracy {accuracy:.3f} is within {margin:g} of chance ({chance:.3f})"
    return "done", ""


__all__ = ["Clean", "FastAdversarial", "OBJECTIVES", "Transfer", "Objective", "PGDAT", "PGDATConfig", "SCHEDULES", "TrainConfig",
           "TrainResult", "convergence_status", "create_objective", "fit", "list_objectives",
           "seed_everything"]
