"""The deployment stages' handlers, here with what they run: a study's evaluation exports its model
beside the record and measures it on the runtime (:func:`deployed_for_stage`); ``robquant export`` is
an ``export`` stage (:func:`run_export`) and ``robquant attack model.onnx`` an ``evaluate_deployed``
stage (:func:`run_evaluate_deployed`); the study's ``deployed`` option is the evaluation add-on
:class:`DeployedRun` (:mod:`robquant.evaluation.addons`). The pipeline's executor calls them with their typed specs
(:mod:`robquant.pipeline.specs`) and a stage context; the executor adds the record's ``config`` (the spec)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional

from pydantic import Field

import torch

from robquant import __version__
from robquant.attacks import ATTACKS
from robquant.data import ImageDataset, to_unit
from robquant.defaults import (ASSUMED_ACCURACY, ATTACK_STEPS, CHECK_EXAMPLES, CHECK_SQUARE_QUERIES, CHECK_TOL, OPSET,
                               OPSETS, RESTARTS)
from robquant.deploy.export import ExportInfo, export_onnx, needs_onnx
from robquant.deploy.runtime import (RUNTIME_MODELS, RUNTIMES, batched_logits, deployed_evaluation, load_runtime, mismatch_check,
                                     needs_onnxruntime)
from robquant.errors import CheckpointError, ConfigError
from robquant.evaluation import record_mask
from robquant.evaluation.addons import add_on_section, register_add_on
from robquant.sections import Switched
from robquant.keys import KEYED_IF_SET, UNKEYED
from robquant.modelfolder import weights_sha256
from robquant.provenance import environment, now_iso
from robquant.quant.ste import exact_float32

FILE = "model.onnx"  # an export's file, in its stage's folder
SOURCE_KEY = "robquant.source"  # metadata: the model folder an ONNX file was exported from
AGREEMENT_FLOOR = 0.99  # below it, an export's check also runs the file with the runtime's QDQ fusion off


def export_metadata(folder: Path | None, record: dict[str, Any], dataset: str | None) -> dict[str, str]:
    """What an exported file records about where it came from (``folder``: the model folder)."""
    quant = (record.get("model") or {}).get("quant") or {}
    meta = {"robquant.version": __version__, "robquant.dataset": dataset or "",
            "robquant.model": (record.get("model") or {}).get("name", ""),
            "robquant.method": quant.get("method", "fp"), "robquant.precision": quant.get("precision", "A32W32")}
    if folder is not None:
        meta[SOURCE_KEY] = str(folder.resolve())
        meta["robquant.weights_sha256"] = weights_sha256(folder)
    return meta


def file_opset(path: str | Path) -> int:
    """The ONNX opset a file's graph is written in."""
    proto = needs_onnx().load(str(path), load_external_data=False)
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


@exact_float32()
def runtime_agreement(path: str | Path, model: torch.nn.Module, x: torch.Tensor, batch_size: int = 256,
                      fusion: bool = True) -> float:
    """Top-1 agreement of the exported file run by ONNX Runtime (with or without its QDQ fusion)
    with ``model`` on ``x``."""
    device = next(model.parameters()).device
    ours = batched_logits(model.eval(), x, batch_size, device).argmax(1)
    theirs = batched_logits(load_runtime("onnxruntime", path, fusion=fusion), x, batch_size, device).argmax(1)
    return (ours == theirs).double().mean().item() if len(x) else 0.0


def run_export(spec: Any, ctx: Any, out: os.PathLike) -> dict[str, Any]:
    """An ``export`` stage: the ``model`` parent as an ONNX QDQ file (``out/model.onnx``, its metadata
    naming the parent's folder), run by ONNX Runtime on the first ``check_n`` test images and compared
    with the model (skipped without onnxruntime)."""
    if spec.format != "onnx":
        raise ConfigError(f"format must be onnx, got {spec.format!r}")
    model, test_set = ctx.model(spec.model), ctx.dataset(spec.data, "test")
    folder = ctx.store.artifact_dir(spec.model)
    info = export_onnx(model, Path(out) / FILE, (test_set.in_channels, *test_set.image_size), opset=spec.opset,
                       metadata={**export_metadata(folder, ctx.record(spec.model), test_set.name),
                                 "robquant.stage": spec.model})
    check: dict[str, Any] = {"agreement": None, "agreement_unfused": None, "n": 0}
    t0 = time.perf_counter()
    if spec.check_n > 0 and _has_onnxruntime():
        x = to_unit(test_set.head(spec.check_n).images)
        check.update(agreement=runtime_agreement(info.path, model, x), n=len(x))
        if check["agreement"] < AGREEMENT_FLOOR:  # is it the runtime's QDQ fusion?
            check["agreement_unfused"] = runtime_agreement(info.path, model, x, fusion=False)
    return {"kind": spec.kind, "status": "done", "created": now_iso(),
            "export": {**info.to_dict(), "path": FILE}, "check": check,
            "metrics": ExportMetrics(**check, bytes=info.bytes, opset=info.opset).to_dict(),
            "timings": {"export_s": info.seconds, "check_s": time.perf_counter() - t0}, "env": environment(ctx.device)}


@dataclass(frozen=True)
class ExportMetrics:
    """An ``export`` stage's numbers of record: the file's top-1 ``agreement`` with the model on ``n`` test
    images run by ONNX Runtime (None: not checked), without its QDQ fusion where they disagreed
    (``agreement_unfused``), the file's ``bytes`` and ``opset``."""

    agreement: float | None
    agreement_unfused: float | None
    n: int
    bytes: int
    opset: int

    @classmethod
    def read(cls, metrics: dict[str, Any]) -> "ExportMetrics":
        return cls(**{f.name: metrics.get(f.name) for f in dataclasses.fields(cls)})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class BudgetResult:
    """A deployed file's numbers at one budget (``eps_255``) on its runtime: clean accuracy and robustness
    (transfer + Square) on ``n`` test examples, top-1 agreement with the fake-quantized reference, the
    largest difference from it (``mismatch``) and whether the check ``deployed_mismatch`` fired (``flag``)."""

    eps_255: float
    n: int
    clean_accuracy: float
    robustness: float
    clean_agreement: float
    adversarial_agreement: float
    mismatch: float
    flag: bool


@dataclass(frozen=True)
class DeployedFileMetrics:
    """An ``evaluate_deployed`` stage's numbers of record: one :class:`BudgetResult` per budget, and the
    budgets whose check fired (``flags``)."""

    results: tuple[BudgetResult, ...]
    flags: tuple[float, ...]

    @classmethod
    def of(cls, results: list[dict[str, Any]]) -> "DeployedFileMetrics":
        """From the stage's results (:func:`~robquant.deploy.runtime.deployed_evaluation`, one per budget)."""
        kept = tuple(BudgetResult(**{f.name: r[f.name] for f in dataclasses.fields(BudgetResult)}) for r in results)
        return cls(kept, tuple(r.eps_255 for r in kept if r.flag))

    @classmethod
    def read(cls, metrics: dict[str, Any]) -> "DeployedFileMetrics":
        return cls(tuple(BudgetResult(**r) for r in metrics.get("results") or ()), tuple(metrics.get("flags") or ()))

    def to_dict(self) -> dict[str, Any]:
        return {"results": [dataclasses.asdict(r) for r in self.results], "flags": list(self.flags)}


def _has_onnxruntime() -> bool:
    try:
        needs_onnxruntime()
    except ConfigError:
        return False
    return True


def run_evaluate_deployed(spec: Any, ctx: Any, out: os.PathLike) -> dict[str, Any]:
    """An ``evaluate_deployed`` stage: the deployed file (copied into ``out`` as ``model.onnx``, so
    the record keeps what it measured) on its runtime at each of the spec's budgets, against the
    fake-quantized ``reference`` parent it was exported from (see :func:`deployed_evaluation`)."""
    if weights_sha256(spec.source) != spec.sha256:
        raise CheckpointError(f"{spec.source} changed since the stage was planned (sha256 differs): run it again")
    path = Path(out) / FILE
    shutil.copyfile(spec.source, path)
    first = spec.runs[0]
    reference, test_set = ctx.model(spec.reference), ctx.dataset(spec.data, "test")
    runtime = load_runtime(first.runtime, path, spec.threads, first.fusion, reference)
    results = [deployed_evaluation(runtime, reference, test_set, run.eps, label=run.label, n=run.n, steps=run.steps,
                                   restarts=run.restarts, square_queries=run.square_queries, seed=spec.seed,
                                   batch_size=spec.batch_size, device=ctx.device, threshold=run.tol,
                                   progress=ctx.progress)
               for run in spec.runs]
    return {"kind": spec.kind, "status": "done", "created": now_iso(),
            "onnx": spec.source, "reference": str(ctx.store.artifact_dir(spec.reference)), "dataset": test_set.name,
            "seed": spec.seed, "metadata": runtime.metadata, "results": results,
            "metrics": DeployedFileMetrics.of(results).to_dict(),
            "timings": {"evaluate_s": sum(r["seconds"] for r in results)}, "env": environment(ctx.device)}


def deployed_for_stage(model: torch.nn.Module, test_set: ImageDataset, out: str | os.PathLike, options: dict[str, Any],
                       *, device: torch.device, seed: int, batch_size: int,
                       shared: dict[Any, Any] | None = None) -> tuple[dict[str, Any], ExportInfo]:
    """An evaluation stage's deployed model: export ``model`` to ``out/model.onnx`` (kept beside the
    record) and evaluate it on its runtime (``options['runtime']``) at ``options['eps']``."""
    path = Path(out) / FILE
    info = export_onnx(model, path, (test_set.in_channels, *test_set.image_size),
                       opset=options.get("opset", OPSET),
                       metadata={"robquant.version": __version__, "robquant.dataset": test_set.name})
    result = evaluate_file(path, options.get("runtime", "onnxruntime"), model, test_set, options, device=device,
                           seed=seed, batch_size=batch_size, shared=shared)
    return result, info


def evaluate_file(path: Path, runtime: str, model: torch.nn.Module, test_set: ImageDataset, options: dict[str, Any],
                  *, device: torch.device, seed: int, batch_size: int,
                  shared: dict[Any, Any] | None = None) -> dict[str, Any]:
    """The exported file ``path`` on the runtime ``runtime`` against ``model`` (:func:`deployed_evaluation`
    with the deployed evaluation's ``options``; ``shared``: the work on ``model`` kept for the next runtime)."""
    return deployed_evaluation(load_runtime(runtime, path, options.get("threads"), options.get("fusion", True), model),
                               model, test_set, options["eps"], n=options["n"], steps=options["steps"],
                               restarts=options["restarts"], square_queries=options["square_queries"], seed=seed,
                               batch_size=batch_size, device=device, threshold=options["tol"],
                               label=options.get("label"), shared=shared)


@register_add_on("deployed", 10)
@dataclass(frozen=True)
class DeployedRun:
    """The deployed evaluation's options (:func:`robquant.deploy.deployed_evaluation`), at ``eps``
    ([0, 1] units), with the reference PGD's ``steps`` and ``restarts`` for the transfer."""

    eps: float
    n: int
    steps: int
    restarts: int
    square_queries: int
    opset: int
    tol: float
    runtime: str = "onnxruntime"
    fusion: bool = True  # the runtime's QDQ fusion, as it ships
    label: float | None = field(default=None, metadata=UNKEYED)  # eps as the study wrote it (/255)
    also_on: tuple[str, ...] | None = field(default=None, metadata=KEYED_IF_SET)  # the same file on more runtimes

    def options(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def cost(self):
        """Per example: the transfer PGD (gradients) and Square's queries (forwards on the runtime)."""
        pgd = ATTACKS.get("pgd").cost(steps=self.steps, restarts=self.restarts)
        return type(pgd)(pgd.gradients, pgd.forwards + self.square_queries + 4)

    def passes(self, spec: Any) -> tuple[float, float]:
        """The transfer PGD and the reference's Square once, each runtime's Square and forwards."""
        c, runtimes = self.cost(), 1 + len(self.also_on or ())
        per_runtime = self.square_queries + 4
        return self.n * (c.gradients + c.forwards + (runtimes - 1) * per_runtime), self.n * c.gradients

    def work(self, spec: Any) -> tuple[float, float]:
        """The transfer PGD and every runtime's Square on the examples classified correctly (a runtime's
        forward counted as the model's)."""
        c, runtimes = self.cost(), 1 + len(self.also_on or ())
        examples = self.n * ASSUMED_ACCURACY
        return examples * c.gradients, examples * (c.forwards + (runtimes - 1) * (self.square_queries + 4))

    def run(self, step: Any) -> dict[str, Any]:
        """The model exported to ``model.onnx`` beside the record and evaluated on its runtime, with the
        trust check ``deployed_mismatch`` judged against the evaluation's robustness of record on the same
        examples; with ``also_on``, the same file on each further runtime (``also``: its result, by name),
        and the check judged on every runtime."""
        options, shared = self.options(), {}  # the reference's work, done once for every runtime
        result, info = deployed_for_stage(step.model, step.test_set, step.out, options, device=step.device,
                                          seed=step.seed, batch_size=step.batch_size, shared=shared)
        kept = record_mask(step.ev.robust_correct, options["eps"])
        n = result["n"]
        record_accuracy = kept[:n].double().mean().item() if kept is not None and len(kept) >= n else None
        result.update(record_accuracy=record_accuracy, export=info.to_dict(),
                      check=mismatch_check(result, record_accuracy))
        if self.also_on:
            result["also"] = {}
            for name in self.also_on:
                other = evaluate_file(Path(step.out) / FILE, name, step.model, step.test_set, options,
                                      device=step.device, seed=step.seed, batch_size=step.batch_size, shared=shared)
                result["also"][name] = {**other, "record_accuracy": record_accuracy,
                                        "check": mismatch_check(other, record_accuracy)}
        return result

    def checks(self, result: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """``deployed_mismatch``: the runtime of record's, or with more runtimes the worst of them (``by_runtime``
        keeps each)."""
        also = result.get("also") or {}
        if not also:
            return {"deployed_mismatch": result["check"]}
        checks = {result["runtime"].split()[0]: result["check"], **{k: v["check"] for k, v in also.items()}}
        worst = max(checks.values(), key=lambda c: c["value"])
        return {"deployed_mismatch": {**worst, "flag": any(c["flag"] for c in checks.values()),
                                      "by_runtime": {k: {"flag": c["flag"], "value": c["value"]}
                                                     for k, c in checks.items()}}}

    def metrics(self, result: dict[str, Any]) -> dict[str, Any] | None:
        """The deployed model's numbers of record (:class:`DeployedMetrics`), JSON-ready."""
        return DeployedMetrics.of(result).to_dict()


@dataclass(frozen=True)
class RuntimeMetrics:
    """A deployed model's numbers of record on one runtime (the runtime of record's, or a further one's).

    Attributes:
        runtime: The runtime and its version (``onnxruntime 1.32.0``).
        fusion: Whether the runtime's QDQ fusion was on.
        n: The test examples evaluated.
        clean_accuracy, robustness: Clean accuracy and robustness (transfer + Square) on the runtime.
        record_accuracy: The evaluation's robustness of record on the same examples (None: unknown).
        clean_agreement, adversarial_agreement: Top-1 agreement with the fake-quantized model.
        unfused: The same file without QDQ fusion where they disagreed (its result; None otherwise).
        accuracy: Accuracy per attack on the runtime (``transfer``, ``square``).
        robust_mask: Per example, robust on the runtime (kept where a further runtime is compared).
        settings: The runtime's settings as run (a further runtime's).
    """

    runtime: str
    fusion: bool | None
    n: int
    clean_accuracy: float
    robustness: float
    record_accuracy: float | None
    clean_agreement: float
    adversarial_agreement: float
    unfused: dict[str, Any] | None
    accuracy: dict[str, float]
    robust_mask: list[bool] | None = None
    settings: dict[str, Any] | None = None

    KEYS: ClassVar[tuple[str, ...]] = ()  # the fields every record keeps (all but the two kept where compared)

    @classmethod
    def read(cls, metrics: dict[str, Any]) -> "RuntimeMetrics":
        """From a record's metrics (fields it lacks, as older records do, are None)."""
        return cls(**{f.name: metrics.get(f.name) for f in dataclasses.fields(cls)})

    @property
    def lowest_agreement(self) -> float:
        return min(self.clean_agreement, self.adversarial_agreement)


RuntimeMetrics.KEYS = tuple(f.name for f in dataclasses.fields(RuntimeMetrics)
                            if f.name not in ("robust_mask", "settings"))


@dataclass(frozen=True)
class DeployedMetrics(RuntimeMetrics):
    """The deployed evaluation's numbers of record: the runtime of record's (:class:`RuntimeMetrics`), the
    export's time and size, and each further runtime's (``also``, by name)."""

    export_s: float | None = None
    bytes: int | None = None
    also: dict[str, RuntimeMetrics] = field(default_factory=dict)

    @classmethod
    def of(cls, result: dict[str, Any]) -> "DeployedMetrics":
        """From a deployed evaluation's result (:meth:`DeployedRun.run`)."""
        also = {name: RuntimeMetrics.read(r) for name, r in (result.get("also") or {}).items()}
        return cls(**{k: result.get(k) for k in RuntimeMetrics.KEYS},
                   robust_mask=result["robust_mask"] if also else None,  # for the report's paired comparison
                   export_s=result["export"]["seconds"], bytes=result["export"]["bytes"], also=also)

    @classmethod
    def read(cls, metrics: dict[str, Any] | None) -> "DeployedMetrics | None":
        """From a record's ``metrics["deployed"]`` (None when the evaluation deployed nothing)."""
        if not metrics:
            return None
        own = {f.name: metrics.get(f.name) for f in dataclasses.fields(cls) if f.name != "also"}
        return cls(**own, also={k: RuntimeMetrics.read(v) for k, v in (metrics.get("also") or {}).items()})

    def to_dict(self) -> dict[str, Any]:
        """As the record keeps it (the per-example mask and ``also`` only where a further runtime ran)."""
        out = {k: getattr(self, k) for k in (*RuntimeMetrics.KEYS, "export_s", "bytes")}
        if self.also:
            out["robust_mask"] = self.robust_mask
            out["also"] = {name: {k: getattr(r, k) for k in (*RuntimeMetrics.KEYS, "robust_mask", "settings")}
                           for name, r in self.also.items()}
        return out


@add_on_section("deployed")
class DeployedSection(Switched):
    """Every quantized model exported to ONNX (QDQ) and attacked on its runtime at the main eps
    (:mod:`robquant.deploy`): transfer from the fake-quantized model, Square on the runtime, top-1
    agreement, and the trust check ``deployed_mismatch``; ``also_on`` runs the same file on more runtimes.
    ``deployed: true`` turns it on with the defaults."""

    HELP: ClassVar[str] = "true, or the deployed evaluation's options (off unless given)"

    enabled: bool = Field(False, description="evaluate the deployed (ONNX Runtime) model of every quantized model")
    runtime: Literal[RUNTIMES] = Field("onnxruntime", description="the runtime of record")  # type: ignore[valid-type]
    also_on: Optional[list[Literal[RUNTIMES]]] = Field(  # type: ignore[valid-type]
        None, min_length=1, description="more runtimes the same exported model is attacked on, each beside the "
        "runtime of record in the report (e.g. [openvino]; executorch runs the same integer model as an ExecuTorch "
        "program, from the optional extra robquant[executorch])")
    n: int = Field(CHECK_EXAMPLES, ge=1, description="test examples")
    square_queries: int = Field(CHECK_SQUARE_QUERIES, ge=1, description="Square's queries per example on the runtime")
    opset: int = Field(OPSET, ge=min(OPSETS), le=max(OPSETS), description="ONNX opset of the export")
    fusion: bool = Field(True, description="the runtime's QDQ fusion, on as it ships (it quantizes float weights "
                         "beside quantized activations to int8); false runs the graph as written")
    tol: float = Field(100 * CHECK_TOL, ge=0, description="deployed_mismatch: the largest top-1 disagreement with the "
                       "fake-quantized model, or Square accuracy difference, in accuracy points, not flagged")
    seeds: Optional[list[int]] = Field(None, min_length=1, description="evaluate only the models of these seeds "
                                       "(default: every model)")

    def check_installed(self) -> None:
        """Before any work: each runtime this section names has its package (ConfigError naming the install
        command otherwise); nothing to check when it is off."""
        if self.enabled:
            for name in dict.fromkeys((self.runtime, *(self.also_on or ()))):
                RUNTIME_MODELS[name].package()

    def run_for(self, ev: Any, precision: Any, seed: int) -> Any:
        """The deployed evaluation's run for a quantized model of ``seed`` (None for FP models and where it does
        not apply), its transfer PGD the study's first."""
        if not self.applies(seed) or precision.is_fp:
            return None
        pgd = ev.reference_pgd()
        also_on = tuple(dict.fromkeys(r for r in self.also_on or () if r != self.runtime)) or None
        return DeployedRun(ev.main_eps / 255, self.n, pgd.steps if pgd else ATTACK_STEPS,
                           pgd.restarts if pgd else RESTARTS, self.square_queries, self.opset, self.tol / 100,
                           self.runtime, self.fusion, label=ev.main_eps, also_on=also_on)
