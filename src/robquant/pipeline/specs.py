"""Typed stage specs: everything a stage reads, frozen, with its parents named.

The kinds: :class:`TrainFP` (train a full-precision model), :class:`ImportFP` (the user's weights),
:class:`Quantize` (PTQ, or QAT fine-tuning from a ``checkpoint`` parent, with a ``teacher`` for RRM),
:class:`Evaluate` (attack a ``model`` parent, with a ``surrogate`` for transfer attacks and the trust
checks), :class:`Export` (write a model for a runtime) and :class:`EvaluateDeployed` (attack a
deployed file on its runtime). A
stage's key is the sha256 of its spec's canonical JSON (parents by key): change anything a stage
reads and its key changes; fields marked ``UNKEYED`` (where the data lives, the display label)
do not change what a stage computes.

Budgets are in [0, 1] units here; :class:`~robquant.evaluation.runs.Budget` keeps the study's own label
(/255) beside each, so results are keyed by what the user wrote, never by a float converted back.
Attack runs (:class:`~robquant.evaluation.runs.AttackRun`) go to the evaluation as they are.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

from robquant.evaluation.runs import AttackRun, Budget
from robquant.deploy.stage import DeployedRun  # the deployed evaluation (an add-on, registered there)
from robquant.evaluation.addons import AddOn, add_on_fields, in_order
from robquant.keys import BY_FIELD, KEYED_IF_SET, UNKEYED
from robquant.quant import AnyQuantConfig
from robquant.quant.config import is_quant_config
from robquant.train import HeldOutCheck, TrainConfig

STAGE_VERSION = 3  # bump when a stage's computation changes meaning: old results stop matching


def canonical_json(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no spaces, floats as repr."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _keyed(obj: Any, every: bool = False) -> Any:
    """A spec as JSON-ready data, without its unkeyed fields (``every``: with them)."""
    if is_quant_config(obj):  # a method's config is keyed by its flat form (as one config held it)
        return obj.to_dict()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        out = {}
        for f in dataclasses.fields(obj):
            value, keyed = getattr(obj, f.name), f.metadata.get("keyed", True)
            if keyed == "by_field":
                out.update(_by_field(obj, value, every))
            elif every or keyed is True or (keyed == "if_set" and value is not None):
                out[f.name] = _keyed(value, every)
        return out
    if isinstance(obj, dict):
        return {str(k): _keyed(v, every) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_keyed(v, every) for v in obj]
    return obj


def _by_field(obj: Any, runs: tuple[Any, ...], every: bool) -> dict[str, Any]:
    """A ``BY_FIELD`` tuple (an evaluation's add-ons) as entries by each run's ``FIELD``: those present, and
    the owner's ``KEYED_ABSENT`` as null where absent (``every``: every registered add-on's)."""
    present = {type(run).FIELD: run for run in runs}
    names = add_on_fields() if every else [*present, *(n for n in type(obj).KEYED_ABSENT if n not in present)]
    return {name: _keyed(present.get(name), every) for name in names}


@dataclass(frozen=True)
class DataRef:
    """The data set a stage reads, and the test examples its clean accuracy (hence NC) is taken on."""

    name: str
    n_test: int | None
    root: str | None = field(default=None, metadata=UNKEYED)
    allow_unverified: bool = field(default=False, metadata=UNKEYED)


@dataclass(frozen=True)
class ModelRef:
    """A registered architecture, or a user's own (``package.module:factory``, with the sha256 of
    its source file: changed code, new key), and its options."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    source: str | None = None


@dataclass(frozen=True)
class ObjectiveRef:
    """A training objective by registry name, with its options ([0, 1] units)."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def cost(self) -> tuple[int, int]:
        """``(forward passes, forward+backward passes)`` per training image, as the objective declares."""
        from robquant.train.objectives import OBJECTIVES

        return OBJECTIVES.get(self.name).cost(**self.kwargs)


class _Stage:
    """What every stage spec answers besides its fields: the handlers (which live with their domains and
    know no spec module) ask a spec for its record's ``config``."""

    def config(self) -> dict[str, Any]:
        """The stage record's ``config`` (:func:`spec_json`)."""
        return spec_json(self)  # type: ignore[arg-type]


@dataclass(frozen=True)
class TrainFP(_Stage):
    """Train a full-precision model (``init`` non_robust: clean; robust: PGD adversarial training)."""

    kind: ClassVar[str] = "train_fp"
    data: DataRef
    model: ModelRef
    init: str
    objective: ObjectiveRef
    fraction: float
    train: TrainConfig
    label: str = field(default="", metadata=UNKEYED)
    check: HeldOutCheck | None = field(default=None, metadata=KEYED_IF_SET)  # held-out PGD check (robust FP)

    def parents(self) -> dict[str, str]:
        return {}


@dataclass(frozen=True)
class ImportFP(_Stage):
    """The user's trained weights as an FP model (no training): keyed by the file's sha256."""

    kind: ClassVar[str] = "import_fp"
    data: DataRef
    model: ModelRef
    init: str
    sha256: str
    source: str = field(default="", metadata=UNKEYED)  # where the weights are (a copy elsewhere is the same stage)
    label: str = field(default="", metadata=UNKEYED)

    def parents(self) -> dict[str, str]:
        return {}


@dataclass(frozen=True)
class Quantize(_Stage):
    """PTQ of the ``checkpoint`` parent, or QAT from it (from random parameters without one)."""

    kind: ClassVar[str] = "quantize"
    data: DataRef
    model: ModelRef
    init: str
    method: str
    precision: str
    fraction: float
    seed: int
    quant: AnyQuantConfig
    strategy: str | None = None
    train: TrainConfig | None = None  # QAT
    objective: ObjectiveRef | None = None  # QAT
    checkpoint: str | None = None  # the FP parent's key (None: random parameters)
    teacher: str | None = None  # RRM's robust FP model's key
    held_out: int | None = field(default=None, metadata=KEYED_IF_SET)  # QAT: clean accuracy per epoch on these
    label: str = field(default="", metadata=UNKEYED)

    def parents(self) -> dict[str, str]:
        return {k: v for k, v in (("checkpoint", self.checkpoint), ("teacher", self.teacher)) if v is not None}


@dataclass(frozen=True)
class Evaluate(_Stage):
    """Clean and robust accuracy of the ``model`` parent under ``attacks`` at ``budgets``."""

    kind: ClassVar[str] = "evaluate"
    # 2: the record holds per-example outcomes (older evaluations run again; their models are kept)
    RECORD_VERSION: ClassVar[int] = 2
    # keyed as null when not run: the trust checks were keyed so before the add-ons were one tuple
    KEYED_ABSENT: ClassVar[tuple[str, ...]] = ("diagnose",)
    data: DataRef
    model: str  # the quantize stage's key
    attacks: tuple[AttackRun, ...]
    budgets: tuple[Budget, ...]
    main: Budget  # the budget of record
    seed: int
    batch_size: int
    cascade: bool
    # what runs after the attacks (robquant.evaluation.addons), in order; keyed by each one's FIELD
    add_ons: tuple[AddOn, ...] = field(default=(), metadata=BY_FIELD)
    surrogate: str | None = None  # the FP parent's key (transfer attacks, the trust checks)
    skipped: tuple[tuple[str, str], ...] = field(default=(), metadata=UNKEYED)  # (attack label, why)
    architecture: ModelRef | None = field(default=None, metadata=UNKEYED)  # the study's model (its parents' own)
    label: str = field(default="", metadata=UNKEYED)

    def __post_init__(self) -> None:
        object.__setattr__(self, "add_ons", in_order(self.add_ons))

    def parents(self) -> dict[str, str]:
        """The model, the surrogate, and each transfer source (a model of another precision: an attack
        run whose option ``source`` names its stage)."""
        out = {k: v for k, v in (("model", self.model), ("surrogate", self.surrogate)) if v is not None}
        out.update({f"source {a.label}": a.options["source"] for a in self.attacks if "source" in a.options})
        return out

    def add_on(self, name: str) -> AddOn | None:
        """The run of the add-on whose ``FIELD`` is ``name`` (``"diagnose"``, ``"deployed"``, ...), None if not run."""
        return next((a for a in self.add_ons if type(a).FIELD == name), None)

    @property
    def reference(self) -> str | None:
        """The paper's attack: the first PGD (reported beside the worst case)."""
        return next((a.label for a in self.attacks if a.name == "pgd"), None)


@dataclass(frozen=True)
class Export(_Stage):
    """The ``model`` parent written in a deployment ``format`` (``model.onnx`` in the stage's folder,
    at ``opset``), run on the runtime and compared with the model on the first ``check_n`` test images."""

    kind: ClassVar[str] = "export"
    data: DataRef
    model: str  # the model stage's key
    format: str
    opset: int
    check_n: int
    architecture: ModelRef | None = field(default=None, metadata=UNKEYED)  # the parent's model
    label: str = field(default="", metadata=UNKEYED)

    def parents(self) -> dict[str, str]:
        return {"model": self.model}


@dataclass(frozen=True)
class EvaluateDeployed(_Stage):
    """A deployed model file (keyed by its ``sha256``) on its runtime at each run's budget, against
    the fake-quantized ``reference`` parent it was exported from."""

    kind: ClassVar[str] = "evaluate_deployed"
    data: DataRef
    sha256: str
    reference: str  # the model stage's key
    runs: tuple[DeployedRun, ...]  # one per budget
    seed: int
    batch_size: int
    source: str = field(default="", metadata=UNKEYED)  # where the file is (a copy elsewhere is the same stage)
    threads: int | None = field(default=None, metadata=UNKEYED)
    architecture: ModelRef | None = field(default=None, metadata=UNKEYED)
    label: str = field(default="", metadata=UNKEYED)

    def parents(self) -> dict[str, str]:
        return {"reference": self.reference}


StageSpec = Union[TrainFP, ImportFP, Quantize, Evaluate, Export, EvaluateDeployed]


def architecture_of(spec: StageSpec) -> ModelRef | None:
    """The study's model a stage builds or loads."""
    return spec.architecture if isinstance(spec, (Evaluate, Export, EvaluateDeployed)) else spec.model


def spec_config(spec: StageSpec) -> dict[str, Any]:
    """What the key is taken over: the version (and the kind's own record version, where it has
    one), the kind and every keyed field (parents by key)."""
    own = getattr(type(spec), "RECORD_VERSION", None)
    return {"v": STAGE_VERSION, **({"rv": own} if own is not None else {}), "kind": spec.kind, **_keyed(spec)}


def spec_json(spec: StageSpec) -> dict[str, Any]:
    """A stage record's ``config``: the kind and every field of its spec (parents by key, budgets
    in [0, 1] units with their labels), unkeyed ones too."""
    return {"kind": spec.kind, **_keyed(spec, every=True)}


def spec_key(spec: StageSpec) -> str:
    """sha256 of the spec's canonical JSON."""
    return hashlib.sha256(canonical_json(spec_config(spec)).encode()).hexdigest()
