"""Stage functions: train a model into a folder, attack a saved model. The CLI and demo call these."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import torch

from robquant.attacks import evaluate
from robquant.checkpoint import RECORD, read_record, save_model, write_json, load_model
from robquant.data import create_dataset
from robquant.errors import ConfigError
from robquant.models import create_model
from robquant.progress import NULL_PROGRESS, Progress
from robquant.provenance import environment, now_iso
from robquant.train import TrainConfig, convergence_status, create_objective, fit, seed_everything

log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``/``cuda``/``cuda:N`` as given.

    Raises:
        ConfigError: for an unknown device or CUDA requested without a GPU.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu" or device.startswith("cuda"):
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: no CUDA device is available (allowed: auto, cpu)")
        try:
            return torch.device(device)
        except RuntimeError:
            pass
    raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")


def train_model(*, dataset: str, model: str, objective: str, train: TrainConfig, out: str | os.PathLike,
                fraction: float = 1.0, data_root: str | None = None, device: str | torch.device = "cpu",
                model_kwargs: dict[str, Any] | None = None, objective_kwargs: dict[str, Any] | None = None,
                allow_unverified: bool = False, download: bool = False, n_test: int | None = None,
                progress: Progress = NULL_PROGRESS) -> dict[str, Any]:
    """Train a model from scratch (resuming from ``out/checkpoints`` if present) and save it.

    Writes ``out/model.safetensors`` and ``out/record.json``. The record holds the config, seed,
    data provenance (verified or not), training history, clean test accuracy, status ("done" or
    "NC"), versions and timings.

    Returns:
        The record.
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    data_kw = {"download": download, "allow_unverified": allow_unverified}
    train_set = create_dataset(dataset, data_root, "train", **data_kw).subset(fraction, seed=train.seed)
    test_set = create_dataset(dataset, data_root, "test", **data_kw).head(n_test)
    obj = create_objective(objective, **(objective_kwargs or {}))
    spec = {"name": model, "num_classes": train_set.num_classes, "in_channels": train_set.in_channels,
            "kwargs": {**(model_kwargs or {}), "mean": list(train_set.mean), "std": list(train_set.std)}}
    seed_everything(train.seed)
    net = create_model(spec["name"], spec["num_classes"], spec["in_channels"], **spec["kwargs"]).to(device)
    result = fit(net, train_set, obj, train, device=device, checkpoint_dir=Path(out) / "checkpoints",
                 progress=progress)
    t_train = time.perf_counter() - t0
    ev = evaluate(net, test_set, [], [], device=device, progress=progress)
    status, reason = result.status, result.reason
    if status == "done":
        status, reason = convergence_status(ev.clean_accuracy, train_set.num_classes)
    record = {
        "kind": "train", "status": status, "reason": reason, "seed": train.seed, "created": now_iso(),
        "config": {"dataset": dataset, "fraction": fraction, "model": model,
                   "model_kwargs": model_kwargs or {}, "objective": obj.config(), "train": asdict(train),
                   "n_test": n_test},
        "data": {"train": train_set.provenance, "test": test_set.provenance,
                 "verified": bool(train_set.provenance.get("verified", True) is not False
                                  and test_set.provenance.get("verified", True) is not False),
                 "n_train": len(train_set), "n_test": len(test_set)},
        "metrics": {"clean_accuracy": ev.clean_accuracy, "n_test": ev.n,
                    "final_train_loss": result.history[-1]["loss"] if result.history else None},
        "train": result.to_dict(),
        "timings": {"train_s": t_train, "eval_s": ev.seconds, "total_s": time.perf_counter() - t0},
        "env": environment(device),
    }
    save_model(out, net, spec, record)
    return record


def parse_eps(text: str | Sequence[float], field: str = "--eps") -> list[float]:
    """Parse a comma-separated eps list in /255 units into [0, 1] units.

    Raises:
        ConfigError: for an empty list, a non-number or a negative value (naming ``field``).
    """
    parts = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
    if not parts or parts == [""]:
        raise ConfigError(f"{field} needs at least one value (in /255 units, e.g. 1,2,4,8)")
    values = []
    for p in parts:
        try:
            v = float(p)
        except ValueError:
            raise ConfigError(f"{field} values must be numbers (in /255 units), got {p!r}") from None
        if not v >= 0:
            raise ConfigError(f"{field} values must be >= 0 (in /255 units), got {p!r}")
        values.append(v / 255)
    return values


def attack_model(checkpoint: str | os.PathLike, *, attacks: Sequence[str | tuple[str, dict[str, Any]]],
                 eps: Sequence[float], n_test: int | None = None, dataset: str | None = None,
                 data_root: str | None = None, allow_unverified: bool = False,
                 device: str | torch.device = "cpu", batch_size: int = 256, seed: int = 0,
                 out: str | os.PathLike | None = None, progress: Progress = NULL_PROGRESS) -> dict[str, Any]:
    """Evaluate a saved model's clean and robust accuracy; write the result as JSON.

    Args:
        checkpoint: Model folder (or its weights file).
        attacks: Attack names or ``(name, kwargs)`` pairs.
        eps: Budgets in [0, 1] units.
        n_test: Evaluate the first ``n_test`` test examples.
        dataset: Test data set; defaults to the one the model was trained on.
        out: JSON path; default ``<checkpoint>/attack.json``.

    Returns:
        The result record.
    """
    folder, trained = read_record(checkpoint)
    device = torch.device(device)
    name = dataset or trained.get("config", {}).get("dataset")
    if name is None:
        raise ConfigError(f"{folder / RECORD} names no data set: pass --dataset")
    test_set = create_dataset(name, data_root, "test", allow_unverified=allow_unverified)
    model = load_model(folder, device)
    ev = evaluate(model, test_set, attacks, eps, n=n_test, device=device, batch_size=batch_size,
                  seed=seed, progress=progress)
    record = {"kind": "attack", "checkpoint": str(folder), "dataset": name, "seed": seed,
              "created": now_iso(), "data": test_set.provenance, "result": ev.to_dict(),
              "env": environment(device)}
    write_json(Path(out) if out is not None else folder / "attack.json", record)
    return record
