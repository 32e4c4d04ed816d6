"""Train, quantize and attack models: on objects in memory (what stages run) and on model folders (what the
CLI runs)."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from robquant.attacks import ATTACKS, evaluate
from robquant.attacks.outcomes import OUTCOMES
from robquant.data import ImageDataset, create_dataset
from robquant.errors import CheckpointError, ConfigError
from robquant.modelfolder import (RECORD, build_model, load_model, read_record, read_weights, save_model,
                                  write_json)
from robquant.models import external
from robquant.progress import NULL_PROGRESS, Progress
from robquant.provenance import environment, now_iso
from robquant.quant import QuantConfig, model_size, quantize
from robquant.quant.coverage import check_coverage
from robquant.train import (QAT_FINETUNE, Objective, TrainConfig, TrainResult, convergence_status, create_objective,
                            fit, seed_everything)

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


def load_splits(dataset: str, data_root: str | None, fraction: float, seed: int, n_test: int | None,
                allow_unverified: bool, download: bool = False) -> tuple[ImageDataset, ImageDataset]:
    """The seeded, class-stratified ``fraction`` of the training split and the first ``n_test`` test examples."""
    data_kw = {"download": download, "allow_unverified": allow_unverified}
    train_set = create_dataset(dataset, data_root, "train", **data_kw).subset(fraction, seed=seed)
    test_set = create_dataset(dataset, data_root, "test", **data_kw).head(n_test)
    return train_set, test_set


def architecture_spec(name: str, kwargs: dict[str, Any], train_set: ImageDataset) -> dict[str, Any]:
    """How a model folder's record says to rebuild a model of architecture ``name`` for this data: a
    registered model gets the data's normalisation; a user's own (``package.module:factory``) its
    options as given and the hash of its source file."""
    spec = {"name": name, "num_classes": train_set.num_classes, "in_channels": train_set.in_channels}
    if external.is_reference(name):
        return {**spec, "kwargs": dict(kwargs), "source": external.source_hash(name)}
    return {**spec, "kwargs": {**kwargs, "mean": list(train_set.mean), "std": list(train_set.std)}}


def build_architecture(spec: dict[str, Any], train_set: ImageDataset, device: torch.device) -> torch.nn.Module:
    """A model of ``spec`` with fresh parameters, checked to take the data's images and give its classes."""
    net = build_model(spec).to(device)
    if external.is_reference(spec["name"]):
        external.check_shape(net, spec["name"], train_set.in_channels, train_set.image_size, train_set.num_classes)
    return net


def check_user_model(name: str, options: dict[str, Any], dataset: ImageDataset,
                     quant_configs: Sequence[QuantConfig] = ()) -> None:
    """Before any work: a user's own model (``package.module:factory``) builds, takes the data's
    images, gives its classes, and can be quantized the ways a study asks (see
    :mod:`robquant.quant.coverage`). Registered models pass at once.

    Raises:
        ConfigError: one message naming what is wrong.
    """
    if not external.is_reference(name):
        return
    net = external.build(name, options, num_classes=dataset.num_classes, in_channels=dataset.in_channels)
    external.check_shape(net, name, dataset.in_channels, dataset.image_size, dataset.num_classes)
    check_coverage(net, list(quant_configs), dataset.images[:2].float().div(255))


def _finish(net: torch.nn.Module, *, out: str | os.PathLike, spec: dict[str, Any], kind: str,
            config: dict[str, Any], seed: int, train_set: Any, test_set: Any, result: TrainResult | None,
            t0: float, timings: dict[str, float], device: torch.device, progress: Progress,
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
        "timings": {**timings, "train_s": result.seconds if result is not None else 0.0, "eval_s": ev.seconds,
                    "total_s": time.perf_counter() - t0},
        "env": environment(device),
        **(extra or {}),
    }
    save_model(out, net, spec, record)
    return record


def train_new(spec: dict[str, Any], *, train_set: ImageDataset, test_set: ImageDataset, objective: Objective,
              train: TrainConfig, out: str | os.PathLike, device: torch.device, config: dict[str, Any],
              progress: Progress = NULL_PROGRESS) -> dict[str, Any]:
    """Build the model ``spec`` names from seeded random parameters, train it on ``train_set``
    (resuming from ``out/checkpoints``), save it with its record, and return the record."""
    t0 = time.perf_counter()
    seed_everything(train.seed)
    net = build_architecture(spec, train_set, device)
    result = fit(net, train_set, objective, train, device=device, checkpoint_dir=Path(out) / "checkpoints",
                 progress=progress)
    return _finish(net, out=out, spec=spec, kind="train", config=config, seed=train.seed, train_set=train_set,
                   test_set=test_set, result=result, t0=t0, timings={}, device=device, progress=progress)


def import_weights(source: str | os.PathLike, spec: dict[str, Any], *, train_set: ImageDataset,
                   test_set: ImageDataset, out: str | os.PathLike, device: torch.device, config: dict[str, Any],
                   progress: Progress = NULL_PROGRESS) -> dict[str, Any]:
    """The user's trained weights (see :func:`~robquant.modelfolder.read_weights`) in a model
    of ``spec`` (a robquant model folder brings its own spec), saved as a model folder with its
    record (clean accuracy, status) like a trained one.

    Raises:
        CheckpointError: weights refused, or not matching the model (naming the keys).
    """
    t0 = time.perf_counter()
    folder = Path(source)
    if folder.is_dir() and (folder / RECORD).is_file():
        spec = read_record(folder)[1]["model"]
        if spec.get("quant"):
            raise CheckpointError(f"{folder} holds a quantized model; an FP model is needed")
    net = build_architecture(spec, train_set, device)
    state = read_weights(source)
    own = net.state_dict()
    # robquant's models normalise inside: weights trained elsewhere keep the data's statistics
    missing = [k for k in own if k not in state and not k.startswith("normalize.")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise CheckpointError(f"{source} does not fit {spec['name']}: missing {missing[:5]}"
                              f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                              f"{' ...' if len(unexpected) > 5 else ''}")
    try:
        net.load_state_dict({**own, **state})
    except RuntimeError as exc:
        raise CheckpointError(f"{source} does not fit {spec['name']}: {str(exc).splitlines()[-1].strip()}") from None
    return _finish(net.to(device).eval(), out=out, spec=spec, kind="import", config=config, seed=0, train_set=train_set,
                   test_set=test_set, result=None, t0=t0, timings={}, device=device, progress=progress)


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
    train_set, test_set = load_splits(dataset, data_root, fraction, train.seed, n_test, allow_unverified, download)
    obj = create_objective(objective, **(objective_kwargs or {}))
    config = {"dataset": dataset, "fraction": fraction, "model": model, "model_kwargs": model_kwargs or {},
              "objective": obj.config(), "train": asdict(train), "n_test": n_test}
    return train_new(architecture_spec(model, model_kwargs or {}, train_set), train_set=train_set, test_set=test_set,
                     objective=obj, train=train, out=out, device=torch.device(device), config=config,
                     progress=progress)


def calibration_images(train_set: ImageDataset, quant: QuantConfig, seed: int, device: torch.device) -> torch.Tensor:
    """The ``quant.calib_images`` training images calibration reads, drawn with ``seed``, in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(train_set), generator=gen)[: quant.calib_images]
    return train_set.images[index].float().div_(255).to(device)


def quantize_loaded(fp_model: torch.nn.Module, spec: dict[str, Any], *, quant: QuantConfig,
                    train_set: ImageDataset, test_set: ImageDataset, out: str | os.PathLike, seed: int,
                    config: dict[str, Any], train: TrainConfig | None = None, objective: Objective | None = None,
                    device: torch.device, progress: Progress = NULL_PROGRESS) -> dict[str, Any]:
    """Quantize ``fp_model`` (left untouched) by PTQ, or by QAT with ``objective`` and ``train``;
    save the result in ``out`` with its record (``config`` extended) and return the record."""
    t0 = time.perf_counter()
    config = {**config, "quant": quant.to_dict()}
    timings: dict[str, float] = {}
    calib = None
    if quant.needs_calibration:  # PTQ activation ranges, QAT's PACT alpha from the data
        calib = calibration_images(train_set, quant, seed, device)
        config["calibration"] = {"images": len(calib), "batch_size": quant.calib_batch_size, "seed": seed}
    if calib is None:  # quantize() checks on its calibration images; else on two training images here
        check_coverage(fp_model, quant, train_set.images[:2].float().div(255).to(device))
    t_cal = time.perf_counter()
    net = quantize(fp_model, quant, calib_images=calib)
    timings["calibrate_s"] = time.perf_counter() - t_cal
    result = None
    if quant.method == "qat":
        if train is None or objective is None:
            raise ConfigError("QAT needs a training recipe and an objective")
        config["pact_alpha_start"] = pact_alphas(net)
        result = fit(net, train_set, objective, train, device=device, checkpoint_dir=Path(out) / "checkpoints",
                     progress=progress)
        net.eval()
        config.update(objective=objective.config(), train=asdict(train), pact_alpha_end=pact_alphas(net))
    return _finish(net, out=out, spec={**spec, "quant": quant.to_dict()}, kind=f"quantize-{quant.method}",
                   config=config, seed=seed, train_set=train_set, test_set=test_set, result=result, t0=t0,
                   timings=timings, device=device, progress=progress, extra={"precision": quant.precision})


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
    (default: :data:`~robquant.train.QAT_FINETUNE`, seeded with ``seed``), resuming from
    ``out/checkpoints``. ``reinit=True`` discards the checkpoint's weights (QAT from random initial
    parameters), keeping its architecture and data set; with ``checkpoint=None``, ``model_spec``
    (``name`` and ``kwargs``) and ``dataset`` say what to build from random parameters.
    ``teacher`` is the robust model folder the ``transfer`` (RRM) objective matches.

    Returns:
        The record (with the quantization config, model size and the parent checkpoint).
    """
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
    train_set, test_set = load_splits(dataset, data_root, fraction, seed, n_test, allow_unverified)
    if checkpoint is None or reinit:
        seed_everything(seed)
        spec = architecture_spec(model_spec["name"], model_spec.get("kwargs", {}), train_set)
        fp_model = build_architecture(spec, train_set, device)
    else:
        spec = model_spec
        fp_model = load_model(checkpoint, device)
    obj = None
    if quant.method == "qat":
        train = train or replace(QAT_FINETUNE, seed=seed)
        kwargs = dict(objective_kwargs or {})
        if objective == "transfer":
            if teacher is None:
                raise ConfigError("objective transfer needs a teacher (the robust full-precision model)")
            kwargs.update(teacher=load_model(teacher, device), teacher_id=str(teacher),
                          student_dim=getattr(fp_model, "feature_dim", None))
        obj = create_objective(objective, **kwargs)
    config = {"dataset": dataset, "fraction": fraction, "reinit": reinit or checkpoint is None,
              "parent": {"path": str(checkpoint) if checkpoint else None, "metrics": parent.get("metrics"),
                         "config": parent.get("config")}}
    return quantize_loaded(fp_model, spec, quant=quant, train_set=train_set, test_set=test_set, out=out, seed=seed,
                           config=config, train=train, objective=obj, device=device, progress=progress)


def pact_alphas(model: torch.nn.Module) -> dict[str, float]:
    """Each PACT layer's clipping level, by module name (recorded before and after QAT)."""
    from robquant.quant import PACT

    return {name: float(m.alpha.detach()) for name, m in model.named_modules() if isinstance(m, PACT) and m.bits < 32}


def attack_loaded(model: torch.nn.Module, test_set: ImageDataset, *,
                  attacks: Sequence[tuple[str, dict[str, Any]]], eps: Sequence[float], n_test: int | None = None,
                  device: torch.device, batch_size: int = 256, seed: int = 0, cascade: bool = False,
                  surrogate: torch.nn.Module | None = None, surrogate_id: str | None = None,
                  diagnose: dict[str, Any] | None = None, deployed: dict[str, Any] | None = None,
                  out: str | os.PathLike | None = None, labels: Mapping[float, float] | None = None,
                  evidence: str | os.PathLike | None = None, progress: Progress = NULL_PROGRESS) -> dict[str, Any]:
    """Evaluate ``model`` under ``attacks`` (a ``transfer`` attack crafts on ``surrogate``) and,
    with ``diagnose`` options, run the trust checks; with ``deployed`` options, export the model to
    ``out/model.onnx`` and evaluate it on its runtime (:func:`deployed_after`).

    The per-example outcomes go to ``evidence`` (default ``out/outcomes.npz``; none without
    either), described under ``result.outcomes`` in the record. Budgets are named by ``labels``
    (``{eps: label /255}``, the study's own). Returns the record (not written)."""

    specs = []
    for name, kw in attacks:
        if ATTACKS.get(name).NEEDS_SURROGATE and "surrogate" not in kw:
            if surrogate is None:
                raise ConfigError(f"attack {name}: the model records no full-precision parent; pass a surrogate")
            kw = {**kw, "surrogate": surrogate, "surrogate_id": surrogate_id}
        specs.append((name, kw))
    ev = evaluate(model, test_set, specs, eps, n=n_test, device=device, batch_size=batch_size,
                  seed=seed, cascade=cascade, progress=progress)
    record = {"kind": "attack", "dataset": test_set.name, "seed": seed, "created": now_iso(),
              "data": {**test_set.provenance, "sha256": test_set.sha256}, "result": ev.to_dict(labels),
              "env": environment(device)}
    if evidence is None and out is not None:
        evidence = Path(out) / OUTCOMES
    if evidence is not None:
        evidence = Path(evidence)
        record["result"]["outcomes"] = ev.outcomes(labels, test_set.sha256, len(test_set)).save(evidence.parent, evidence.name)
    if diagnose is not None:
        record["diagnostics"] = _diagnose_after(ev, model, test_set, specs, diagnose, batch_size=batch_size,
                                                device=device, seed=seed, surrogate=surrogate,
                                                surrogate_id=surrogate_id, progress=progress)
    if deployed is not None:
        if out is None:
            raise ConfigError("a deployed evaluation needs a folder to export the model to")
        record["deployed"] = deployed_after(ev, model, test_set, deployed, out, device=device, seed=seed,
                                            batch_size=batch_size)
        if "diagnostics" in record:  # the trust checks list it beside their own
            diag = record["diagnostics"]
            diag["checks"]["deployed_mismatch"] = record["deployed"]["check"]
            diag["flags"] = [k for k, c in diag["checks"].items() if c["flag"]]
    return record


def deployed_after(ev: Any, model: torch.nn.Module, test_set: ImageDataset, options: dict[str, Any],
                   out: str | os.PathLike, **kw: Any) -> dict[str, Any]:
    """The deployed evaluation after an evaluation (:mod:`robquant.deploy`), with the trust check
    ``deployed_mismatch`` judged against the evaluation's robustness of record on the same examples."""
    from robquant.attacks import record_mask
    from robquant.deploy import mismatch_check
    from robquant.deploy.stage import deployed_for_stage

    result, info = deployed_for_stage(model, test_set, out, options, **kw)
    kept = record_mask(ev.robust_correct, options["eps"])
    n = result["n"]
    record_accuracy = kept[:n].double().mean().item() if kept is not None and len(kept) >= n else None
    result.update(record_accuracy=record_accuracy, export=info.to_dict(),
                  check=mismatch_check(result, record_accuracy))
    return result


def _diagnose_after(ev: Any, model: torch.nn.Module, test_set: ImageDataset, attacks: list[tuple[str, dict[str, Any]]],
                    options: dict[str, Any], **kw: Any) -> dict[str, Any]:
    """The trust checks after an evaluation, judged against its robustness of record at the checks'
    budget and reusing its reference PGD when that is the same attack run the same way."""
    from robquant.attacks import diagnose, record_mask

    eps, n = options["eps"], min(options.get("n", 200), ev.n)
    kept = record_mask(ev.robust_correct, eps)  # per example: robust under every attack run at eps
    reference = None
    # the first PGD's own mask (cascaded, only the first attack's is its own)
    first = next((i for i, (name, _) in enumerate(attacks) if name == "pgd"), None)
    if first is not None and (first == 0 or not ev.cascade):
        pgd = attacks[first][1]
        same = (pgd.get("steps", 20) == options.get("steps", 20) and pgd.get("restarts", 1) == options.get("restarts", 1)
                and set(pgd) <= {"steps", "restarts", "label", "n", "eps"})
        mask = ev.robust_correct.get((pgd.get("label", "pgd"), eps))
        if same and mask is not None and len(mask) >= n:
            reference = mask[:n]
    return diagnose(model, test_set, record=kept[:n] if kept is not None and len(kept) >= n else None,
                    reference=reference, **kw, **{**options, "n": n})


def attack_model(checkpoint: str | os.PathLike, *, attacks: Sequence[str | tuple[str, dict[str, Any]]],
                 eps: Sequence[float], n_test: int | None = None, dataset: str | None = None,
                 data_root: str | None = None, allow_unverified: bool = False,
                 device: str | torch.device = "cpu", batch_size: int = 256, seed: int = 0,
                 out: str | os.PathLike | None = None, surrogate: str | os.PathLike | None = None,
                 cascade: bool = False, diagnose: dict[str, Any] | None = None,
                 progress: Progress = NULL_PROGRESS) -> dict[str, Any]:
    """Evaluate a saved model's clean and robust accuracy; write the result as JSON.

    Args:
        checkpoint: Model folder (or its weights file).
        attacks: Attack names or ``(name, kwargs)`` pairs. A ``transfer`` attack without a
            ``surrogate`` option crafts its examples on ``surrogate``.
        eps: Budgets in [0, 1] units.
        n_test: Evaluate the first ``n_test`` test examples.
        dataset: Test data set; defaults to the one the model was trained on.
        out: JSON path; default ``<checkpoint>/attack.json``.
        surrogate: Model folder for transfer attacks and the trust checks (by default the
            checkpoint's recorded full-precision parent, when that folder exists).
        cascade: Run each attack only on what the earlier ones left robust (see
            :func:`~robquant.attacks.evaluate`).
        diagnose: Run :func:`~robquant.attacks.diagnose` with these options (``eps`` in [0, 1]
            units required) and record its checks under ``diagnostics``.

    Returns:
        The result record.
    """
    folder, trained = read_record(checkpoint)
    device = torch.device(device)
    name = dataset or trained.get("config", {}).get("dataset")
    if name is None:
        raise ConfigError(f"{folder / RECORD} names no data set: pass --dataset")
    if surrogate is None:
        parent = ((trained.get("config") or {}).get("parent") or {}).get("path")
        surrogate = parent if parent and (Path(parent) / RECORD).is_file() else None
    attacks = [(a, {}) if isinstance(a, str) else (a[0], dict(a[1])) for a in attacks]
    test_set = create_dataset(name, data_root, "test", allow_unverified=allow_unverified)
    path = Path(out) if out is not None else folder / "attack.json"
    record = attack_loaded(load_model(folder, device), test_set, attacks=attacks, eps=eps, n_test=n_test,
                           device=device, batch_size=batch_size, seed=seed, cascade=cascade,
                           surrogate=load_model(surrogate, device) if surrogate is not None else None,
                           surrogate_id=str(surrogate) if surrogate is not None else None,
                           diagnose=diagnose, evidence=path.with_name(path.stem + "." + OUTCOMES),
                           progress=progress)
    record = {"checkpoint": str(folder), **record}
    write_json(path, record)
    return record
