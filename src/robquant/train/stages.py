"""The stages that make a model folder: a model trained from seeded random parameters (``train_fp``),
the user's weights imported (``import_fp``) and a model quantized by PTQ or trained by QAT (``quantize``).

The executor (:data:`robquant.pipeline.executor.HANDLERS`) calls each with its typed spec
(:mod:`robquant.pipeline.specs`: ``TrainFP``, ``ImportFP``, ``Quantize``), the stage context and the stage's
work folder; each writes ``model.safetensors`` and ``record.json`` there and returns the record, whose
``config`` is the spec's own (``spec.config()``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from robquant.data import ImageDataset, to_unit
from robquant.errors import CheckpointError, ConfigError
from robquant.evaluation import evaluate
from robquant.modelfolder import RECORD, ModelMetrics, build_model, load_model, read_record, read_weights, save_model, weights_sha256
from robquant.models import external
from robquant.progress import Progress
from robquant.provenance import environment, now_iso
from robquant.quant import AnyQuantConfig, model_size, quantize
from robquant.quant.coverage import check_coverage
from robquant.train.check import outside_fraction, split_held_out
from robquant.train.loop import TrainResult, convergence_status, fit, seed_everything
from robquant.train.objectives import create_objective


class Context(Protocol):
    """What these handlers read besides their spec (:class:`~robquant.pipeline.executor.StageContext`)."""

    device: torch.device
    progress: Progress

    def dataset(self, ref: Any, split: str) -> ImageDataset: ...
    def splits(self, ref: Any, fraction: float, seed: int) -> tuple[ImageDataset, ImageDataset]: ...
    def model(self, key: str) -> nn.Module: ...
    def record(self, key: str) -> dict[str, Any]: ...


def architecture_spec(model: Any, train_set: ImageDataset) -> dict[str, Any]:
    """How a model folder's record says to rebuild a model of ``model`` for this data: a
    registered model gets the data's normalisation; a user's own (``package.module:factory``) its
    options as given and the hash of its source file."""
    spec = {"name": model.name, "num_classes": train_set.num_classes, "in_channels": train_set.in_channels}
    if external.is_reference(model.name):
        return {**spec, "kwargs": dict(model.kwargs), "source": external.source_hash(model.name)}
    return {**spec, "kwargs": {**model.kwargs, "mean": list(train_set.mean), "std": list(train_set.std)}}


def build_architecture(spec: dict[str, Any], train_set: ImageDataset, device: torch.device) -> nn.Module:
    """A model of ``spec`` with fresh parameters, checked to take the data's images and give its classes."""
    net = build_model(spec).to(device)
    if external.is_reference(spec["name"]):
        external.check_shape(net, spec["name"], train_set.in_channels, train_set.image_size, train_set.num_classes)
    return net


def _finish(net: nn.Module, spec: Any, ctx: Context, out: os.PathLike, *, model: dict[str, Any], seed: int,
            train_set: ImageDataset, test_set: ImageDataset, result: TrainResult | None, t0: float,
            timings: dict[str, float] | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate clean accuracy, decide the status, write the model and its record (config: the spec)."""
    ev = evaluate(net, test_set, [], [], device=ctx.device, progress=ctx.progress)
    status, reason = (result.status, result.reason) if result is not None else ("done", "")
    if status == "done":
        status, reason = convergence_status(ev.clean_accuracy, train_set.num_classes)
    verified = all(d.provenance.get("verified", True) is not False for d in (train_set, test_set))
    record = {
        "kind": spec.kind, "status": status, "reason": reason, "seed": seed, "created": now_iso(),
        "config": spec.config(),
        "data": {"train": train_set.provenance, "test": test_set.provenance, "verified": verified,
                 "n_train": len(train_set), "n_test": len(test_set)},
        "metrics": ModelMetrics(ev.clean_accuracy, ev.n,
                                result.history[-1]["loss"] if result and result.history else None).to_dict(),
        "train": result.to_dict() if result is not None else None,
        "size": model_size(net),
        "timings": {**(timings or {}), "train_s": result.seconds if result is not None else 0.0,
                    "eval_s": ev.seconds, "total_s": time.perf_counter() - t0},
        "env": environment(ctx.device),
        **(extra or {}),
    }
    save_model(out, net, model, record)
    return record


def run_train_fp(spec: Any, ctx: Context, out: os.PathLike) -> dict[str, Any]:
    """Train a model from seeded random parameters (resuming from ``out/checkpoints``)."""
    t0 = time.perf_counter()
    train_set, test_set = ctx.splits(spec.data, spec.fraction, spec.train.seed)
    held_out = None
    if spec.check is not None:  # its images come out of the training set
        train_set, held_out = split_held_out(train_set, spec.check.n, spec.train.seed)
    objective = create_objective(spec.objective.name, **spec.objective.kwargs)
    seed_everything(spec.train.seed)
    model = architecture_spec(spec.model, train_set)
    net = build_architecture(model, train_set, ctx.device)
    result = fit(net, train_set, objective, spec.train, device=ctx.device, checkpoint_dir=Path(out) / "checkpoints",
                 progress=ctx.progress, check=spec.check, held_out=held_out)
    return _finish(net, spec, ctx, out, model=model, seed=spec.train.seed, train_set=train_set, test_set=test_set,
                   result=result, t0=t0, extra={"objective": objective.config()})


def run_import_fp(spec: Any, ctx: Context, out: os.PathLike) -> dict[str, Any]:
    """The user's weights (see :func:`~robquant.modelfolder.read_weights`) in a model of
    ``spec.model``, or a robquant model folder as it is (quantized or not), evaluated and saved
    like a trained one.

    Raises:
        CheckpointError: weights changed since planned, refused, or not matching the model (naming the keys).
    """
    t0 = time.perf_counter()
    if weights_sha256(spec.source) != spec.sha256:
        raise CheckpointError(f"{spec.source} changed since the study was planned: plan it again")
    train_set, test_set = ctx.splits(spec.data, 1.0, 0)
    folder = Path(spec.source)
    if folder.is_dir() and (folder / RECORD).is_file():  # a model folder brings its own architecture
        model = read_record(folder)[1]["model"]
        net = load_model(folder, ctx.device)
    else:
        model = architecture_spec(spec.model, train_set)
        net = _load_foreign(spec.source, model, build_architecture(model, train_set, ctx.device))
    return _finish(net.to(ctx.device).eval(), spec, ctx, out, model=model, seed=0, train_set=train_set,
                   test_set=test_set, result=None, t0=t0)


def _load_foreign(source: str, model: dict[str, Any], net: nn.Module) -> nn.Module:
    """``net`` with the weights of ``source`` (a state dict trained elsewhere, without robquant's
    normalisation buffers, which keep the data's statistics)."""
    state = read_weights(source)
    own = net.state_dict()
    missing = [k for k in own if k not in state and not k.startswith("normalize.")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise CheckpointError(f"{source} does not fit {model['name']}: missing {missing[:5]}"
                              f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                              f"{' ...' if len(unexpected) > 5 else ''}")
    try:
        net.load_state_dict({**own, **state})
    except RuntimeError as exc:
        raise CheckpointError(f"{source} does not fit {model['name']}: {str(exc).splitlines()[-1].strip()}") from None
    return net


def calibration_images(train_set: ImageDataset, quant: AnyQuantConfig, seed: int, device: torch.device) -> torch.Tensor:
    """The ``quant.calib_images`` training images calibration reads, drawn with ``seed``, in [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    index = torch.randperm(len(train_set), generator=gen)[: quant.calib_images]
    return to_unit(train_set.images[index]).to(device)


def pact_alphas(model: nn.Module) -> dict[str, float]:
    """Each PACT layer's clipping level, by module name (recorded before and after QAT)."""
    from robquant.quant import PACT

    return {name: float(m.alpha.detach()) for name, m in model.named_modules() if isinstance(m, PACT) and m.bits < 32}


def run_quantize(spec: Any, ctx: Context, out: os.PathLike) -> dict[str, Any]:
    """PTQ of the parent, or QAT from it (from seeded random parameters without one); the parent
    is left untouched."""
    t0 = time.perf_counter()
    quant = spec.quant
    train_set, test_set = ctx.splits(spec.data, spec.fraction, spec.seed)
    if spec.checkpoint is None:  # QAT from random parameters
        seed_everything(spec.seed)
        model = architecture_spec(spec.model, train_set)
        fp_model = build_architecture(model, train_set, ctx.device)
    else:
        model, fp_model = ctx.record(spec.checkpoint)["model"], ctx.model(spec.checkpoint)
    extra: dict[str, Any] = {"precision": quant.precision}
    calib = None
    if quant.needs_calibration:  # PTQ activation ranges, QAT's PACT alpha from the data
        calib = calibration_images(train_set, quant, spec.seed, ctx.device)
        extra["calibration"] = {"images": len(calib), "batch_size": quant.calib_batch_size, "seed": spec.seed}
    else:  # quantize() checks on its calibration images; else on two training images here
        check_coverage(fp_model, quant, to_unit(train_set.images[:2]).to(ctx.device))
    t_cal = time.perf_counter()
    net = quantize(fp_model, quant, calib_images=calib)
    timings = {"calibrate_s": time.perf_counter() - t_cal}
    result = None
    if quant.method == "qat":
        if spec.train is None or spec.objective is None:
            raise ConfigError("QAT needs a training recipe and an objective")
        kwargs = dict(spec.objective.kwargs)
        if spec.teacher is not None:
            kwargs.update(teacher=ctx.model(spec.teacher), teacher_id=f"stage {spec.teacher}",
                          student_dim=getattr(fp_model, "feature_dim", None))
        objective = create_objective(spec.objective.name, **kwargs)
        start = pact_alphas(net)
        monitor = None
        if spec.held_out:  # training images the cell's fraction leaves out
            monitor = outside_fraction(ctx.dataset(spec.data, "train"), spec.fraction, spec.seed, spec.held_out,
                                       spec.seed)
            extra["held_out"] = {"n": len(monitor), "seed": spec.seed, "from": "training images outside the fraction"}
        result = fit(net, train_set, objective, spec.train, device=ctx.device,
                     checkpoint_dir=Path(out) / "checkpoints", progress=ctx.progress, monitor=monitor)
        net.eval()
        extra.update(objective=objective.config(), pact_alpha={"start": start, "end": pact_alphas(net)})
    return _finish(net, spec, ctx, out, model={**model, "quant": quant.to_dict()}, seed=spec.seed,
                   train_set=train_set, test_set=test_set, result=result, t0=t0, timings=timings, extra=extra)
