"""Pipelines: stages that train, quantize and evaluate models, and (later) the study planner."""

from robquant.pipeline.stages import attack_model, parse_eps, quantize_model, resolve_device, train_model

__all__ = ["attack_model", "parse_eps", "quantize_model", "resolve_device", "train_model"]
