"""Pipelines: studies planned as DAGs of typed stages, executed locally or on Ray; one model trained,
quantized or attacked by the same stages (:mod:`robquant.pipeline.api`, what the CLI runs)."""

from robquant.pipeline.api import attack_model, quantize_model, resolve_device, train_model
from robquant.pipeline.executor import execute_local, stage_compute_seconds
from robquant.pipeline.plan import build_plan
from robquant.pipeline.study import load_study, parse_study

__all__ = ["attack_model", "build_plan", "execute_local", "load_study", "parse_study", "quantize_model",
           "resolve_device", "stage_compute_seconds", "train_model"]
