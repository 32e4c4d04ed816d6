"""Export a model folder to ONNX and measure a deployed ONNX model's robustness on ONNX Runtime: on
model folders and files (what the CLI runs) and on models in memory (what evaluation stages run)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

from robquant import __version__
from robquant.data import create_dataset
from robquant.defaults import ATTACK_STEPS, CHECK_EXAMPLES, CHECK_SQUARE_QUERIES, RESTARTS
from robquant.deploy import (OPSET, RUNTIMES, RuntimeModel, deployed_evaluation, export_onnx,
                             needs_onnxruntime)
from robquant.deploy.runtime import batched_logits
from robquant.errors import CheckpointError, ConfigError
from robquant.modelfolder import RECORD, load_model, read_record, record_dataset, weights_sha256, write_json
from robquant.pipeline.specs import Budget
from robquant.progress import NULL_PROGRESS, Progress
from robquant.provenance import environment, now_iso
from robquant.quant import exact_float32

FORMATS = ("onnx",)
SOURCE_KEY = "robquant.source"  # metadata: the model folder an ONNX file was exported from


def export_metadata(folder: Path | None, record: dict[str, Any], dataset: str | None) -> dict[str, str]:
    """What an exported file records about where it came from."""
    quant = (record.get("model") or {}).get("quant") or {}
    meta = {"robquant.version": __version__, "robquant.dataset": dataset or "",
            "robquant.model": (record.get("model") or {}).get("name", ""),
            "robquant.method": quant.get("method", "fp"), "robquant.precision": quant.get("precision", "A32W32")}
    if folder is not None:
        meta[SOURCE_KEY] = str(folder.resolve())
        meta["robquant.weights_sha256"] = weights_sha256(folder)
    return meta


@exact_float32()
def runtime_agreement(path: str | Path, model: torch.nn.Module, x: torch.Tensor, batch_size: int = 256,
                      fusion: bool = True) -> float:
    """Top-1 agreement of the exported file run by ONNX Runtime (with or without its QDQ fusion)
    with ``model`` on ``x``."""
    device = next(model.parameters()).device
    ours = batched_logits(model.eval(), x, batch_size, device).argmax(1)
    theirs = batched_logits(RuntimeModel(path, fusion=fusion), x, batch_size, device).argmax(1)
    return (ours == theirs).double().mean().item() if len(x) else 0.0


def export_model(checkpoint: str | os.PathLike, out: str | os.PathLike, *, format: str = "onnx",
                 opset: int = OPSET, data_root: str | None = None, allow_unverified: bool = False,
                 check_n: int = 256) -> dict[str, Any]:
    """Export a saved model (quantized or not) as an ONNX QDQ model; see :mod:`robquant.deploy.export`.

    The file records where it came from (metadata ``robquant.source``: the model folder), so that
    ``robquant attack model.onnx`` finds the fake-quantized model to compare with. With onnxruntime
    installed, the export is run on the first ``check_n`` test images and its top-1 agreement with
    the model is reported (0 skips it).

    Returns:
        ``{"path", "opset", "seconds", "bytes", "layers", "activations", "checked", "agreement", "n",
        "agreement_unfused"}`` (the last measured only below 99 % agreement: the runtime with its QDQ
        fusion off).
    """
    if format not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    folder, record = read_record(checkpoint)
    name = record_dataset(record)
    if name is None:
        raise ConfigError(f"{folder / RECORD} names no data set")
    model = load_model(folder, "cpu")
    test_set = create_dataset(name, data_root, "test", allow_unverified=allow_unverified)
    info = export_onnx(model, out, (test_set.in_channels, *test_set.image_size), opset=opset,
                       metadata=export_metadata(folder, record, name))
    result: dict[str, Any] = {**info.to_dict(), "agreement": None, "agreement_unfused": None, "n": 0}
    if check_n > 0:
        try:
            needs_onnxruntime()
        except ConfigError:
            return result
        x = test_set.head(check_n).images.float().div(255)
        result.update(agreement=runtime_agreement(info.path, model, x), n=len(x))
        if result["agreement"] < 0.99:  # is it the runtime's QDQ fusion?
            result["agreement_unfused"] = runtime_agreement(info.path, model, x, fusion=False)
    return result


def attack_onnx(path: str | os.PathLike, *, eps: Sequence[float], runtime: str = "onnxruntime",
                reference: str | os.PathLike | None = None, dataset: str | None = None,
                data_root: str | None = None, allow_unverified: bool = False, n: int = CHECK_EXAMPLES,
                steps: int = ATTACK_STEPS, restarts: int = RESTARTS, square_queries: int = CHECK_SQUARE_QUERIES,
                seed: int = 0, batch_size: int = 256,
                device: torch.device | str = "cpu", threads: int | None = None, fusion: bool = True,
                out: str | os.PathLike | None = None, progress: Progress = NULL_PROGRESS) -> dict[str, Any]:
    """Robustness of a deployed ONNX model on ONNX Runtime at each budget: clean accuracy, PGD
    transferred from the fake-quantized model, Square on the runtime, and top-1 agreement with
    the fake-quantized model (see :mod:`robquant.deploy.runtime`). Writes the record as JSON.

    Args:
        path: The ``.onnx`` file.
        eps: Budgets in /255 units (as on the command line; recorded as written).
        reference: The model folder it was exported from (default: the one its metadata names).
        dataset: Test data set (default: the one its metadata names).
        fusion: The runtime's QDQ fusion (see :class:`~robquant.deploy.RuntimeModel`).
        out: JSON path (default ``<path>.attack.json``).

    Raises:
        ConfigError: an unknown runtime, no reference or data set to be found, onnxruntime missing.
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    path = Path(path)
    model = RuntimeModel(path, threads, fusion)
    meta = model.metadata
    if reference is None:
        if SOURCE_KEY not in meta:
            raise ConfigError(f"{path} records no source model folder: pass --reference (the model folder it was "
                              "exported from)")
        reference = meta[SOURCE_KEY]
        if not (Path(reference) / RECORD).is_file():
            raise ConfigError(f"{path} was exported from {reference}, which is not a model folder here: pass "
                              "--reference")
    folder, record = read_record(reference)
    if meta.get("robquant.weights_sha256") not in (None, weights_sha256(folder)):
        raise CheckpointError(f"{folder} changed since {path} was exported from it (weights sha256 differs)")
    name = dataset or meta.get("robquant.dataset") or record_dataset(record)
    if not name:
        raise ConfigError(f"{path} names no data set: pass --dataset")
    test_set = create_dataset(name, data_root, "test", allow_unverified=allow_unverified)
    fake_quant = load_model(folder, device)
    results = [deployed_evaluation(model, fake_quant, test_set, b.eps, label=b.label, n=n, steps=steps,
                                   restarts=restarts,
                                   square_queries=square_queries, seed=seed, batch_size=batch_size, device=device,
                                   progress=progress)
               for b in (Budget.of(e) for e in eps)]
    result = {"kind": "deployed_attack", "onnx": str(path), "reference": str(folder), "dataset": name,
              "seed": seed, "created": now_iso(), "metadata": meta, "results": results,
              "env": environment(device)}
    write_json(Path(out) if out is not None else path.with_name(path.name + ".attack.json"), result)
    return result


__all__ = ["FORMATS", "attack_onnx", "export_metadata", "export_model", "runtime_agreement"]
