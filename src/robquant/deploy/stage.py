"""The deployed evaluation of a study's evaluation stage: the model exported beside the stage's
record and measured on its runtime (see :mod:`robquant.deploy.runtime`). The pipeline's executor
calls it; it lives here, with what it runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from robquant import __version__
from robquant.data import ImageDataset
from robquant.defaults import OPSET
from robquant.deploy.export import ExportInfo, export_onnx
from robquant.deploy.runtime import RuntimeModel, deployed_evaluation


def deployed_for_stage(model: torch.nn.Module, test_set: ImageDataset, out: str | os.PathLike, options: dict[str, Any],
                       *, device: torch.device, seed: int, batch_size: int) -> tuple[dict[str, Any], ExportInfo]:
    """An evaluation stage's deployed model: export ``model`` to ``out/model.onnx`` (kept beside the
    record) and evaluate it on ONNX Runtime at ``options['eps']``."""
    path = Path(out) / "model.onnx"
    info = export_onnx(model, path, (test_set.in_channels, *test_set.image_size),
                       opset=options.get("opset", OPSET),
                       metadata={"robquant.version": __version__, "robquant.dataset": test_set.name})
    runtime = RuntimeModel(path, options.get("threads"), options.get("fusion", True))
    result = deployed_evaluation(runtime, model, test_set, options["eps"],
                                 n=options["n"], steps=options["steps"], restarts=options["restarts"],
                                 square_queries=options["square_queries"], seed=seed, batch_size=batch_size,
                                 device=device, threshold=options["tol"], label=options.get("label"))
    return result, info
