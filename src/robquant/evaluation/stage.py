"""The evaluate stage: clean and robust accuracy of a model under its spec's attack runs, its per-example
outcomes, its add-ons (:mod:`robquant.evaluation.addons`) and its numbers of record
(:class:`EvaluationMetrics`).

The executor (:data:`robquant.pipeline.executor.HANDLERS`) calls :func:`run_evaluate` with the typed spec
(:class:`robquant.pipeline.specs.Evaluate`), the stage context and the stage's work folder.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from robquant.data import ImageDataset
from robquant.errors import ConfigError
from robquant.evaluation.addons import AddOnStep, contributed_checks, run_add_ons
from robquant.evaluation.evaluate import evaluate
from robquant.evaluation.outcomes import OUTCOMES
from robquant.progress import Progress
from robquant.provenance import environment, now_iso


class Context(Protocol):
    """What the handler reads besides its spec (:class:`~robquant.pipeline.executor.StageContext`)."""

    store: Any
    device: torch.device
    progress: Progress

    def dataset(self, ref: Any, split: str) -> ImageDataset: ...
    def model(self, key: str) -> nn.Module: ...


def run_evaluate(spec: Any, ctx: Context, out: os.PathLike) -> dict[str, Any]:
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
        "kind": spec.kind, "dataset": test_set.name, "seed": spec.seed, "created": now_iso(), "config": spec.config(),
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
        bit_errors: Accuracy per bit error rate (the mean over draws; None when not evaluated).
        corruptions: Accuracy per corruption (the mean over severities) and over all (None when not evaluated).
        others: The numbers of record of add-ons without a field here (a plug-in's), by their ``RECORD_KEY``
            (None when there are none).
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
    bit_errors: dict[str, Any] | None = None
    corruptions: dict[str, Any] | None = None
    others: dict[str, Any] | None = None

    @classmethod
    def of(cls, record: dict[str, Any], spec: Any) -> "EvaluationMetrics":
        """From an evaluation's record (its result, trust checks and deployed model) and spec."""
        result, main = record["result"], spec.main.label
        # no input attack (a command asking only for bit flips): no robustness to inputs was measured
        worst = next((r for r in result["worst_case"] if r["eps_255"] == main),
                     {"accuracy": None, "n": 0, "attacks": [], "per_attack": {}})
        ref = spec.reference
        added = {a.RECORD_KEY: a.metrics(record[a.RECORD_KEY]) for a in spec.add_ons if a.RECORD_KEY in record}
        ref_all = next((r for r in result["robust"] if r["attack"] == ref and r["eps_255"] == main), None)
        return cls(result["clean_accuracy"], result["n"], result["robust"], result["worst_case"], worst["accuracy"],
                   worst["n"], worst["attacks"], main, ref,
                   None if ref_all is None else {"accuracy": ref_all["accuracy"], "n": ref_all["n"],
                                                 "accuracy_common": worst["per_attack"].get(ref)},
                   _flags(record, spec), added.pop("deployed", None), added.pop("bitflip", None),
                   added.pop("bit_errors", None), added.pop("corruptions", None), added or None)

    @classmethod
    def read(cls, metrics: dict[str, Any]) -> "EvaluationMetrics":
        """From a record's ``metrics`` (written by :meth:`to_dict`)."""
        return cls(**{f.name: metrics.get(f.name) for f in fields(cls)})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluation_metrics(record: dict[str, Any], spec: Any) -> dict[str, Any]:
    """The evaluation's numbers of record (:class:`EvaluationMetrics`), JSON-ready."""
    return EvaluationMetrics.of(record, spec).to_dict()


def _flags(record: dict[str, Any], spec: Any) -> list[str]:
    """The trust checks that fired, and those the add-ons contributed (the deployed model's check too when
    the trust checks did not run)."""
    flags = list((record.get("diagnostics") or {}).get("flags", []))
    flags += [name for name, check in contributed_checks(spec, record).items() if check.get("flag") and name not in flags]
    return flags
