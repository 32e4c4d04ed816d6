"""One training loop with pluggable objectives (clean, PGD-AT), schedules and exact resume."""

from __future__ import annotations

from robquant.defaults import QAT_EPOCHS, QAT_LR
from robquant.train.check import HeldOutCheck, split_held_out
from robquant.train.loop import SCHEDULES, TrainConfig, TrainResult, convergence_status, fit, seed_everything
from robquant.train.objectives import (OBJECTIVES, PGDAT, Clean, FastAdversarial, NoiseFGSM, Objective, PGDATConfig,
                                       RRM, create_objective, list_objectives)

# The defaults every entry point reads (studies, the CLI, the Python API): the paper's recipes.
FP_TRAIN = TrainConfig()  # 200 epochs, SGD lr 0.1, x0.1 at epochs 100 and 150
QAT_FINETUNE = TrainConfig(epochs=QAT_EPOCHS, lr=QAT_LR, schedule="cosine")  # QAT from trained FP parameters
QAT_SCRATCH = TrainConfig()  # QAT from random parameters: the FP schedule
PGD_AT = PGDATConfig()  # PGD-7, eps 8/255, step 2/255


__all__ = ["FP_TRAIN", "PGD_AT", "QAT_FINETUNE", "QAT_SCRATCH", "Clean", "FastAdversarial", "HeldOutCheck",
           "NoiseFGSM", "OBJECTIVES", "split_held_out", "RRM", "Objective", "PGDAT", "PGDATConfig", "SCHEDULES", "TrainConfig",
           "TrainResult", "convergence_status", "create_objective", "fit", "list_objectives",
           "seed_everything"]
