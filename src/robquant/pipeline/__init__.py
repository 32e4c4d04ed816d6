"""Pipelines: studies planned as DAGs of typed stages, executed locally or on Ray; one model trained,
quantized, attacked or exported by the same stages (:mod:`robquant.pipeline.api`, the library's facade,
what the CLI runs)."""

from robquant.pipeline.api import (attack_model, attack_onnx, check_user_model, chosen_attacks, export_model, quantize_model,
                                   resolve_device, train_model)
from robquant.pipeline.executor import execute_local, stage_compute_seconds
from robquant.pipeline.plan import build_plan
from robquant.pipeline.study import load_study, parse_study

__all__ = ["attack_model", "attack_onnx", "build_plan", "check_user_model", "chosen_attacks", "export_model", "execute_local", "load_study", "parse_study", "quantize_model",
           "resolve_device", "stage_compute_seconds", "train_model"]
