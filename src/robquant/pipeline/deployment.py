"""Export a model and attack a deployed file, as stages of a store (what the CLI's ``export`` and
``attack model.onnx`` call): ``export`` builds an :class:`~robquant.pipeline.specs.Export` stage,
the attack an :class:`~robquant.pipeline.specs.EvaluateDeployed` stage, run by the executor core like
any study's (see :mod:`robquant.pipeline.api`; their handlers live with :mod:`robquant.deploy`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

from robquant.defaults import ATTACK_STEPS, CHECK_EXAMPLES, CHECK_SQUARE_QUERIES, CHECK_TOL, RESTARTS
from robquant.deploy import OPSET, OPSETS, RUNTIMES, RuntimeModel
from robquant.deploy.stage import FILE, SOURCE_KEY, export_metadata, file_opset, runtime_agreement
from robquant.errors import CheckpointError, ConfigError
from robquant.modelfolder import RECORD, weights_sha256
from robquant.pipeline.api import _contexts, check_model_files, _data_in, _parent, check_out, link, locate, resolve_device, run_spec
from robquant.pipeline.specs import Budget, DeployedRun, EvaluateDeployed, Export, ModelRef
from robquant.pipeline.store import Store
from robquant.progress import NULL_PROGRESS, Progress

FORMATS = ("onnx",)


def export_model(checkpoint: str | os.PathLike, out: str | os.PathLike, *, format: str = "onnx",
                 opset: int = OPSET, data_root: str | None = None, allow_unverified: bool = False,
                 check_n: int = 256, store: str | os.PathLike | None = None,
                 progress: Progress = NULL_PROGRESS) -> dict[str, Any]:
    """Export a saved model (quantized or not) as an ONNX QDQ model (see :mod:`robquant.deploy.export`),
    as an ``export`` stage of the model's store (or ``store``); ``out`` becomes a link to the file.

    The file records where it came from (metadata ``robquant.source``: the model folder), so that
    ``robquant attack model.onnx`` finds the fake-quantized model to compare with. With onnxruntime
    installed, the export is run on the first ``check_n`` test images and its top-1 agreement with
    the model is recorded (0 skips it).

    Returns:
        ``{"path" (the file in the store), "opset", "seconds", "bytes", "layers", "activations", "checked",
        "agreement", "n", "agreement_unfused", "record"}`` (the unfused agreement measured only below
        99 % agreement: the runtime with its QDQ fusion off).
    """
    if format not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    if opset not in OPSETS:
        raise ConfigError(f"opset must be one of {', '.join(map(str, OPSETS))}, got {opset}")
    check_out(out)
    check_model_files(checkpoint)  # before any store folder exists
    ctx_for = _contexts(torch.device("cpu"), progress)
    st, key, config = _parent(checkpoint, Store(store) if store is not None else None, ctx_for, data_root,
                              allow_unverified)
    ctx = ctx_for(st)
    data = _data_in(ctx, config["data"]["name"], data_root, None, allow_unverified)
    spec = Export(data, key, format, opset, check_n, architecture=ModelRef(**config["model"]),
                  label=f"export {Path(out).name}")
    folder, record = run_spec(spec, st, ctx)
    link(out, folder / FILE)
    return {**record["export"], **record["check"], "path": str(folder / FILE), "record": str(folder / "stage.json")}


def _reference(path: Path, model: RuntimeModel, reference: str | os.PathLike | None) -> str | os.PathLike:
    """The model folder a deployed file was exported from: ``reference``, else the one its metadata
    names (the stage of the file's own store when it was exported into one)."""
    if reference is not None:
        return reference
    meta = model.metadata
    found = locate(path.resolve())
    if found is not None and meta.get("robquant.stage") in found[0].finished([meta.get("robquant.stage", "")]):
        return found[0].artifact_dir(meta["robquant.stage"])
    if SOURCE_KEY not in meta:
        raise ConfigError(f"{path} records no source model folder: pass --reference (the model folder it was "
                          "exported from)")
    if not (Path(meta[SOURCE_KEY]) / RECORD).is_file():
        raise ConfigError(f"{path} was exported from {meta[SOURCE_KEY]}, which is not a model folder here: pass "
                          "--reference")
    return meta[SOURCE_KEY]


def attack_onnx(path: str | os.PathLike, *, eps: Sequence[float], runtime: str = "onnxruntime",
                reference: str | os.PathLike | None = None, dataset: str | None = None,
                data_root: str | None = None, allow_unverified: bool = False, n: int = CHECK_EXAMPLES,
                steps: int = ATTACK_STEPS, restarts: int = RESTARTS, square_queries: int = CHECK_SQUARE_QUERIES,
                seed: int = 0, batch_size: int = 256,
                device: torch.device | str = "cpu", threads: int | None = None, fusion: bool = True,
                out: str | os.PathLike | None = None, store: str | os.PathLike | None = None,
                progress: Progress = NULL_PROGRESS) -> dict[str, Any]:
    """Robustness of a deployed ONNX model on ONNX Runtime at each budget: clean accuracy, PGD
    transferred from the fake-quantized model, Square on the runtime, and top-1 agreement with
    the fake-quantized model (see :mod:`robquant.deploy.runtime`), as an ``evaluate_deployed``
    stage of the reference model's store (or ``store``), keyed by the file's sha256.

    Args:
        path: The ``.onnx`` file.
        eps: Budgets in /255 units (as on the command line; recorded as written).
        reference: The model folder it was exported from (default: the one its metadata names).
        dataset: Test data set (default: the one its metadata names).
        fusion: The runtime's QDQ fusion (see :class:`~robquant.deploy.RuntimeModel`).
        out: A link to the evaluation's folder (optional: the record is its ``stage.json``).

    Returns:
        The record (``path``: its folder; ``results``: one per budget).

    Raises:
        ConfigError: an unknown runtime, no reference or data set to be found, onnxruntime missing.
        CheckpointError: the reference changed since the file was exported from it.
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    path = Path(path)
    model = RuntimeModel(path, threads, fusion)  # checks the file loads, before any work
    check_out(out)
    ref_folder = _reference(path, model, reference)
    meta = model.metadata
    if meta.get("robquant.weights_sha256") not in (None, weights_sha256(ref_folder)):
        raise CheckpointError(f"{ref_folder} changed since {path} was exported from it (weights sha256 differs)")
    dev = resolve_device(device)
    ctx_for = _contexts(dev, progress)
    st, key, config = _parent(ref_folder, Store(store) if store is not None else None, ctx_for, data_root,
                              allow_unverified)
    name = dataset or meta.get("robquant.dataset") or config["data"]["name"]
    ctx = ctx_for(st)
    data = _data_in(ctx, name, data_root, None, allow_unverified)
    runs = tuple(DeployedRun(b.eps, n, steps, restarts, square_queries, file_opset(path), CHECK_TOL, runtime, fusion,
                             label=b.label) for b in (Budget.of(e) for e in eps))
    spec = EvaluateDeployed(data, weights_sha256(path), key, runs, seed, batch_size, str(path.resolve()), threads,
                            architecture=ModelRef(**config["model"]), label=f"attack {path.name}")
    folder, record = run_spec(spec, st, ctx)
    if out is not None:
        link(out, folder)
    return {**record, "path": str(folder)}


__all__ = ["FORMATS", "attack_onnx", "export_metadata", "export_model", "runtime_agreement"]
