"""The stage handlers: the only code that trains, imports, quantizes and evaluates a model for a record.

A study's stages and the CLI's commands (:mod:`robquant.pipeline.api`) both come here, through the
executor core (:func:`~robquant.pipeline.executor.execute_stage`), with a typed spec
(:mod:`robquant.pipeline.specs`). Each handler writes its model folder (``model.safetensors``,
``record.json``) or its evaluation's evidence (``outcomes.npz``) into the stage's work folder and
returns the record; a record's ``config`` is its spec (:func:`~robquant.pipeline.specs.spec_json`).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import nn

from robquant.attacks import evaluate
from robquant.attacks.outcomes import OUTCOMES
from robquant.data import ImageDataset, to_unit
from robquant.errors import CheckpointError, ConfigError
from robquant.modelfolder import RECORD, build_model, load_model, read_record, read_weights, save_model, weights_sha256
from robquant.models import external
from robquant.deploy.stage import run_evaluate_deployed, run_export  # (robquant.deploy registers its trust check)
from robquant.pipeline.addons import AddOnStep, contributed_checks, run_add_ons
from robquant.pipeline.specs import (DataRef, Evaluate, EvaluateDeployed, Export, ImportFP, ModelRef, Quantize,
                                     TrainFP, spec_json)
from robquant.pipeline.store import Store
from robquant.progress import Progress
from robquant.provenance import environment, now_iso
from robquant.quant import AnyQuantConfig, model_size, quantize
from robquant.quant.coverage import check_coverage
from robquant.train import TrainResult, convergence_status, create_objective, fit, seed_everything, split_held_out


class Context(Protocol):
    """What a handler reads besides its spec (:class:`~robquant.pipeline.executor.StageContext`)."""

    store: Store
    device: torch.device
    progress: Progress

    def dataset(self, ref: DataRef, split: str) -> ImageDataset: ...
    def splits(self, ref: DataRef, fraction: float, seed: int) -> tuple[ImageDataset, ImageDataset]: ...
    def model(self, key: str) -> nn.Module: ...
    def record(self, key: str) -> dict[str, Any]: ...


def architecture_spec(model: ModelRef, train_set: ImageDataset) -> dict[str, Any]:
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
        "config": spec_json(spec),
        "data": {"train": train_set.provenance, "test": test_set.provenance, "verified": verified,
                 "n_train": len(train_set), "n_test": len(test_set)},
        "metrics": {"clean_accuracy": ev.clean_accuracy, "n_test": ev.n,
                    "final_train_loss": result.history[-1]["loss"] if result and result.history else None},
        "train": result.to_dict() if result is not None else None,
        "size": model_size(net),
        "timings": {**(timings or {}), "train_s": result.seconds if result is not None else 0.0,
                    "eval_s": ev.seconds, "total_s": time.perf_counter() - t0},
        "env": environment(ctx.device),
        **(extra or {}),
    }
    save_model(out, net, model, record)
    return record


def run_train_fp(spec: TrainFP, ctx: Context, out: os.PathLike) -> dict[str, Any]:
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


def run_import_fp(spec: ImportFP, ctx: Context, out: os.PathLike) -> dict[str, Any]:
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


def run_quantize(spec: Quantize, ctx: Context, out: os.PathLike) -> dict[str, Any]:
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
        result = fit(net, train_set, objective, spec.train, device=ctx.device,
                     checkpoint_dir=Path(out) / "checkpoints", progress=ctx.progress)
        net.eval()
        extra.update(objective=objective.config(), pact_alpha={"start": start, "end": pact_alphas(net)})
    return _finish(net, spec, ctx, out, model={**model, "quant": quant.to_dict()}, seed=spec.seed,
                   train_set=train_set, test_set=test_set, result=result, t0=t0, timings=timings, extra=extra)


def run_evaluate(spec: Evaluate, ctx: Context, out: os.PathLike) -> dict[str, Any]:
    """Clean and robust accuracy of the parent under the spec's attacks (a ``transfer`` attack
    crafts on the surrogate), its per-example outcomes in ``out/outcomes.npz``; with the spec's
    options, the trust checks and the deployed evaluation (the model exported to ``out/model.onnx``
    and run on its runtime)."""
    model, test_set = ctx.model(spec.model), ctx.dataset(spec.data, "test")
    surrogate = ctx.model(spec.surrogate) if spec.surrogate is not None else None
    attacks = []
    for run in spec.attacks:  # the typed runs go to the evaluation as they are, a transfer given its surrogate
        if "source" in run.options:  # a transfer from another stage's model (the precision transfer matrix)
            source = run.options["source"]
            options = {k: v for k, v in run.options.items() if k != "source"}
            run = replace(run, options={**options, "surrogate": ctx.model(source), "surrogate_id": f"stage {source}"})
        elif run.needs_surrogate and "surrogate" not in run.options:
            if surrogate is None:
                raise ConfigError(f"attack {run.name}: the model records no full-precision parent; pass a surrogate")
            run = replace(run, options={**run.options, "surrogate": surrogate,
                                        "surrogate_id": f"stage {spec.surrogate}"})
        attacks.append(run)
    ev = evaluate(model, test_set, attacks, spec.budgets, n=spec.data.n_test, device=ctx.device,
                  batch_size=spec.batch_size, seed=spec.seed, cascade=spec.cascade, progress=ctx.progress)
    record: dict[str, Any] = {
        "kind": spec.kind, "dataset": test_set.name, "seed": spec.seed, "created": now_iso(), "config": spec_json(spec),
        "data": {**test_set.provenance, "sha256": test_set.sha256}, "result": ev.to_dict(),
        "env": environment(ctx.device)}
    record["result"]["outcomes"] = ev.outcomes(None, test_set.sha256, len(test_set)).save(Path(out), OUTCOMES)
    run_add_ons(spec, AddOnStep(ev, model, test_set, attacks, Path(out), ctx.device, spec.batch_size, spec.seed,
                                surrogate, f"stage {spec.surrogate}", ctx.progress), record)
    if spec.skipped:
        record["skipped_attacks"] = dict(spec.skipped)
    record["metrics"] = evaluation_metrics(record, spec)
    record["status"] = (ctx.store.get(spec.model) or {}).get("status", "done")  # an NC model stays NC
    return record


@dataclass(frozen=True)
class EvaluationMetrics:
    """An evaluation's numbers of record, as its record (``metrics``) and the store's index hold them
    and the report reads them: the worst case over attacks at the main budget (on the examples every
    attack covered) and the paper's attack (the first PGD) beside it.

    Attributes:
        clean_accuracy, n: Clean accuracy on the ``n`` test examples evaluated.
        robust, worst_case: Every (attack, budget) accuracy and the worst case per budget, as the
            evaluation's result lists them.
        robustness, robustness_n, robustness_attacks: The worst case at the main budget, the examples
            it is taken over and the attacks it covers.
        main_eps_255: The main budget's label (/255).
        reference_attack: The paper's attack's label (None without a PGD).
        reference: Its accuracy at the main budget on all its examples and on the worst case's.
        flags: The trust checks that fired (the deployed model's among them).
        deployed: The deployed model's numbers on its runtime (None when not evaluated).
        bitflip: Flips to break the model per method (their summary over seeds; None when not evaluated).
    """

    clean_accuracy: float
    n: int
    robust: list[dict[str, Any]]
    worst_case: list[dict[str, Any]]
    robustness: float | None
    robustness_n: int
    robustness_attacks: list[str]
    main_eps_255: float
    reference_attack: str | None
    reference: dict[str, Any] | None
    flags: list[str]
    deployed: dict[str, Any] | None
    bitflip: dict[str, Any] | None = None

    @classmethod
    def of(cls, record: dict[str, Any], spec: Evaluate) -> "EvaluationMetrics":
        """From an evaluation's record (its result, trust checks and deployed model) and spec."""
        result, main = record["result"], spec.main.label
        # no input attack (a command asking only for bit flips): no robustness to inputs was measured
        worst = next((r for r in result["worst_case"] if r["eps_255"] == main),
                     {"accuracy": None, "n": 0, "attacks": [], "per_attack": {}})
        ref = spec.reference
        ref_all = next((r for r in result["robust"] if r["attack"] == ref and r["eps_255"] == main), None)
        return cls(result["clean_accuracy"], result["n"], result["robust"], result["worst_case"], worst["accuracy"],
                   worst["n"], worst["attacks"], main, ref,
                   None if ref_all is None else {"accuracy": ref_all["accuracy"], "n": ref_all["n"],
                                                 "accuracy_common": worst["per_attack"].get(ref)},
                   _flags(record, spec), _deployed_metrics(record.get("deployed")),
                   {**record["bitflip"]["summary"], "target": record["bitflip"]["target"], "n": record["bitflip"]["n"]}
                   if "bitflip" in record else None)

    @classmethod
    def read(cls, metrics: dict[str, Any]) -> "EvaluationMetrics":
        """From a record's ``metrics`` (written by :meth:`to_dict`)."""
        return cls(**{f.name: metrics.get(f.name) for f in fields(cls)})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluation_metrics(record: dict[str, Any], spec: Evaluate) -> dict[str, Any]:
    """The evaluation's numbers of record (:class:`EvaluationMetrics`), JSON-ready."""
    return EvaluationMetrics.of(record, spec).to_dict()


def _flags(record: dict[str, Any], spec: Evaluate) -> list[str]:
    """The trust checks that fired, and those the add-ons contributed (the deployed model's check too when
    the trust checks did not run)."""
    flags = list((record.get("diagnostics") or {}).get("flags", []))
    flags += [name for name, check in contributed_checks(spec, record).items() if check.get("flag") and name not in flags]
    return flags


def _deployed_metrics(deployed: dict[str, Any] | None) -> dict[str, Any] | None:
    """The deployed model's numbers of record (None when it was not evaluated)."""
    if deployed is None:
        return None
    keys = ("runtime", "fusion", "n", "clean_accuracy", "robustness", "record_accuracy", "clean_agreement",
            "adversarial_agreement", "unfused", "accuracy")
    return {**{k: deployed.get(k) for k in keys}, "export_s": deployed["export"]["seconds"],
            "bytes": deployed["export"]["bytes"]}


HANDLERS: dict[type, Callable[[Any, Context, os.PathLike], dict[str, Any]]] = {
    TrainFP: run_train_fp, ImportFP: run_import_fp, Quantize: run_quantize, Evaluate: run_evaluate,
    Export: run_export, EvaluateDeployed: run_evaluate_deployed}  # the deployment stages' live with robquant.deploy
