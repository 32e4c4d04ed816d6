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
from robquant.checkpoint import RECORD, build_model, load_model, read_record, save_model, write_json
from robquant.data import create_dataset
from robquant.errors import ConfigError
from robquant.models import create_model
from robquant.progress import NULL_PROGRESS, Progress
from robquant.provenance import environment, now_iso
from robquant.quant import QuantConfig, model_size, quantize
from robquant.train import TrainConfig, TrainResult, convergence_status, create_objective, fit, seed_everything

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


def _load_splits(dataset: str, data_root: str | None, fraction: float, seed: int, n_test: int | None,
                 allow_unverified: bool, download: bool = False):
    data_kw = {"download": download, "allow_unverified": allow_unverified}
    train_set = create_dataset(dataset, data_root, "train", **data_kw).subset(fraction, seed=seed)
    test_set = create_dataset(dataset, data_root, "test", **data_kw).head(n_test)
    return train_set, test_set


def _finish(net: torch.nn.Module, *, out: str | os.PathLike, spec: dict[str, Any], kind: str,
            config: dict[str, Any], seed: int, train_set: Any, test_set: Any, result: TrainResult | None,
            t0: float, t_train: float, device: torch.device, progress: Progress,
            extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate clean accuracy, decide the status, write the model and its record."""
    ev = evaluate(net, test_set, [], [], device=device, progress=progress)
    status, reason = (result.status, result.reason) if result is not None else ("done", "")
    if status == "done":
        status, reason = convergence_status(ev.clean_accuracy, train_set.num_classes)
    verified = all(d.provenance.get("verified", True) is not False for d in (train_set, test_set))
    record = {
        "kind": kind, "status": status, "reason": reason, "seed": seed, "created": now_iso(),
        "config": config,
        "data": {"train": train_set.provenance, "test": test_set.provenance, "verified": verified,
                 "n_train": len(train_set), "n_test": len(test_set)},
        "metrics": {"clean_accuracy": ev.clean_accuracy, "n_test": ev.n,
                    "final_train_loss": result.history[-1]["loss"] if result and result.history else None},
        "train": result.to_dict() if result is not None else None,
        "size": model_size(net),
        "timings": {"train_s": t_train, "eval_s": ev.seconds, "total_s": time.perf_counter() - t0},
        "env": environment(device),
        **(extra or {}),
    }
    save_model(out, net, spec, record)
    return record


def train_model(*, dataset: str, model: str, objective: str, train: TrainConfig, out: str | os.PathLike,
                fraction: float = 1.0, data_root: str | None = None, device: str | torch.device = "cpu",
                model_kwargs: dict[str, Any] | None = None, objective_kwargs: dict[str, Any] | None = None,
                allow_unverified: bool = False, download: bool = False, n_test: int | None = None,
                progress: Progress = NULL_PROGRESS) -> dict[str, Any]:
    """Train a model from scratch (resuming from ``out/checkpoints`` if present) and save it.

    Writes ``out/model.safetensors`` and ``out/record.json``. The record holds the config, seed,
    data provenance (verified or not), training history, clean test accuracy, status ("done" or
    "NC"), size, versions and timings.

    Returns:
        The record.
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    train_set, test_set = _load_splits(dataset, data_root, fraction, train.seed, n_test, allow_unverified, download)
    obj = create_objective(objective, **(objective_kwargs or {}))
    spec = {"name": model, "num_classes": train_set.num_classes, "in_channels": train_set.in_channels,
            "kwargs": {**(model_kwargs or {}), "mean": list(train_set.mean), "std": list(train_set.std)}}
    seed_everything(train.seed)
    net = create_model(spec["name"], spec["num_classes"], spec["in_channels"], **spec["kwargs"]).to(device)
    result = fit(net, train_set, obj, train, device=device, checkpoint_dir=Path(out) / "checkpoints",
                 progress=progress)
    config = {"dataset": dataset, "fraction": fraction, "model": model, "model_kwargs": model_kwargs or {},
              "objective": obj.config(), "train": asdict(train), "n_test": n_test}
    return _finish(net, out=out, spec=spec, kind="train", config=config, seed=train.seed, train_set=train_set,
                   test_set=test_set, result=result, t0=t0, t_train=time.perf_counter() - t0, device=device,
                   progress=progress)


def quantize_model(checkpoint: str | os.PathLike | None, *, quant: QuantConfig, out: str | os.PathLike,
                   fraction: float = 1.0, seed: int = 0, train: TrainConfig | None = None,
                   objective: str = "clean", objective_kwargs: dict[str, Any] | None = None,
                   reinit: bool = False, teacher: str | os.PathLike | None = None,
                   model_spec: dict[str, Any] | None = None, dataset: str | None = None,
                   data_root: str | None = None, allow_unverified: bool = False,
                   device: str | torch.device = "cpu", n_test: int | None = None,
                   progress: Progress = NULL_PROGRESS) -> dict[str, Any]:
    """Quantize a saved full-precision model by PTQ, or fine-tune it by QAT, and save the result.

    PTQ calibrates activations on ``quant.calib_images`` training images drawn (seeded) from the
    class-stratified ``fraction``. QAT trains with ``objective`` on that fraction with ``train``
    (default: the QAT fine-tuning schedule, lr 0.01 cosine), resuming from ``out/checkpoints``.
    ``reinit=True`` discards the checkpoint's weights (QAT from random initial parameters),
    keeping its architecture and data set; with ``checkpoint=None``, ``model_spec`` and
    ``dataset`` say what to build from random parameters. ``teacher`` is the robust model the
    ``transfer`` objective matches.

    Returns:
        The record (with the quantization config, model size and the parent checkpoint).
    """
    t0 = time.perf_counter()
    device = torch.device(device)
    parent: dict[str, Any] = {}
    if checkpoint is not None:
        folder, parent = read_record(checkpoint)
        dataset = dataset or parent.get("config", {}).get("dataset")
        model_spec = parent["model"]
        if dataset is None:
            raise ConfigError(f"{folder / RECORD} names no data set")
    elif model_spec is None or dataset is None or quant.method != "qat":
        raise ConfigError("without a checkpoint, QAT from random parameters needs model_spec and dataset")
    train_set, test_set = _load_splits(dataset, data_root, fraction, seed, n_test, allow_unverified)
    if checkpoint is None or reinit:
        seed_everything(seed)
        spec = {**model_spec, "num_classes": model_spec.get("num_classes") or train_set.num_classes,
                "in_channels": model_spec.get("in_channels") or train_set.in_channels}
        spec["kwargs"] = {**spec.get("kwargs", {}), "mean": list(train_set.mean), "std": list(train_set.std)}
        fp_model = build_model(spec).to(device)
        model_spec = spec
    else:
        fp_model = load_model(checkpoint, device)
    spec = {**model_spec, "quant": quant.to_dict()}
    config = {"dataset": dataset, "fraction": fraction, "quant": quant.to_dict(), "reinit": reinit or checkpoint is None,
              "parent": {"path": str(checkpoint) if checkpoint else None, "metrics": parent.get("metrics"),
                         "config": parent.get("config")}}
    result = None
    calib = None
    if quant.needs_calibration:  # PTQ activation ranges, QAT's PACT alpha from the data
        gen = torch.Generator().manual_seed(seed)
        index = torch.randperm(len(train_set), generator=gen)[: quant.calib_images]
        calib = train_set.images[index].float().div_(255).to(device)
        config["calibration"] = {"images": len(index), "batch_size": quant.calib_batch_size, "seed": seed}
    if quant.method == "ptq":
        net = quantize(fp_model, quant, calib_images=calib)
    else:
        train = train or TrainConfig(epochs=60, lr=0.01, schedule="cosine", weight_decay=1e-4, seed=seed)
        kwargs = dict(objective_kwargs or {})
        if objective == "transfer":
            if teacher is None:
                raise ConfigError("objective transfer needs a teacher (the robust full-precision model)")
            kwargs.update(teacher=load_model(teacher, device), teacher_id=str(teacher),
                          student_dim=getattr(fp_model, "feature_dim", None))
        obj = create_objective(objective, **kwargs)
        net = quantize(fp_model, quant, calib_images=calib)
        config["pact_alpha_start"] = pact_alphas(net)
        result = fit(net, train_set, obj, train, device=device, checkpoint_dir=Path(out) / "checkpoints",
                     progress=progress)
        net.eval()
        config.update(objective=obj.config(), train=asdict(train), pact_alpha_end=pact_alphas(net))
    return _finish(net, out=out, spec=spec, kind=f"quantize-{quant.method}", config=config, seed=seed,
                   train_set=train_set, test_set=test_set, result=result, t0=t0,
                   t_train=time.perf_counter() - t0, device=device, progress=progress,
                   extra={"precision": quant.precision})


def pact_alphas(model: torch.nn.Module) -> dict[str, float]:
    """Each PACT layer's clipping level, by module name (recorded before and after QAT)."""
    from robquant.quant import PACT

    return {name: float(m.alpha.detach()) for name, m in model.named_modules() if isinstance(m, PACT) and m.bits < 32}


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
                 out: str | os.PathLike | None = None, surrogate: str | os.PathLike | None = None,
                 surrogate_id: str | None = None, cascade: bool = False,
                 diagnose: dict[str, Any] | None = None, progress: Progress = NULL_PROGRESS) -> dict[str, Any]:
    """Evaluate a saved model's clean and robust accuracy; write the result as JSON.

    Args:
        checkpoint: Model folder (or its weights file).
        attacks: Attack names or ``(name, kwargs)`` pairs. A ``transfer`` attack without a
            ``surrogate`` option uses ``surrogate``.
        eps: Budgets in [0, 1] units.
        n_test: Evaluate the first ``n_test`` test examples.
        dataset: Test data set; defaults to the one the model was trained on.
        out: JSON path; default ``<checkpoint>/attack.json``.
        surrogate: Model folder for transfer attacks (by default the checkpoint's recorded
            full-precision parent, when that folder exists).
        surrogate_id: How records name the surrogate (default: its folder).
        cascade: Run each attack only on what the earlier ones left robust (see
            :func:`~robquant.attacks.evaluate`).
        diagnose: Run :func:`~robquant.attacks.diagnose.diagnose` with these options (``eps`` in
            [0, 1] units required) and record its checks under ``diagnostics``.

    Returns:
        The result record.
    """
    from robquant.attacks.diagnose import diagnose as run_diagnostics

    folder, trained = read_record(checkpoint)
    device = torch.device(device)
    name = dataset or trained.get("config", {}).get("dataset")
    if name is None:
        raise ConfigError(f"{folder / RECORD} names no data set: pass --dataset")
    if surrogate is None:
        parent = ((trained.get("config") or {}).get("parent") or {}).get("path")
        surrogate = parent if parent and (Path(parent) / RECORD).is_file() else None
    specs = []
    for a in attacks:
        attack_name, kw = (a, {}) if isinstance(a, str) else (a[0], dict(a[1]))
        if attack_name == "transfer" and "surrogate" not in kw:
            if surrogate is None:
                raise ConfigError(f"attack transfer: {folder} records no full-precision parent; pass a surrogate")
            kw.update(surrogate=str(surrogate), surrogate_id=surrogate_id)
        specs.append((attack_name, kw))
    test_set = create_dataset(name, data_root, "test", allow_unverified=allow_unverified)
    model = load_model(folder, device)
    ev = evaluate(model, test_set, specs, eps, n=n_test, device=device, batch_size=batch_size,
                  seed=seed, cascade=cascade, progress=progress)
    record = {"kind": "attack", "checkpoint": str(folder), "dataset": name, "seed": seed,
              "created": now_iso(), "data": test_set.provenance, "result": ev.to_dict(),
              "env": environment(device)}
    if diagnose is not None:
        options = {"surrogate": str(surrogate) if surrogate is not None else None, "surrogate_id": surrogate_id,
                   **diagnose}
        record["diagnostics"] = run_diagnostics(model, test_set, batch_size=batch_size, device=device, seed=seed,
                                                progress=progress, **options)
    write_json(Path(out) if out is not None else folder / "attack.json", record)
    return record
