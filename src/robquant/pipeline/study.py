"""The study file: one YAML document describing a grid of quantization pipelines.

Every field has a default and a description; validation happens once, here, and every error
names the field, the value and what is allowed. A grid (``axes``) expands into cells; cells that
mean nothing (PTQ of random parameters) are dropped with a stated reason. ``cells`` lists cells
explicitly instead (or in addition).

Each section of the file is a ``...Section`` model (``EvalSection``, ``FPSection``, ...): what the user
writes. The stages the planner makes of them are the typed specs of :mod:`robquant.pipeline.specs`.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError, create_model, field_validator,
                      model_validator)

from robquant.errors import CheckpointError, ConfigError
from robquant.quant.config import ACT_QUANTIZERS, PACT_INITS, WEIGHT_QUANTIZERS, PTQConfig, QATConfig
from robquant.quant.uniform import CALIBRATIONS
from robquant.quant.precision import parse_precision
from robquant.quant.pwlq import BREAKPOINTS
from robquant.train import FP_TRAIN, PGD_AT, QAT_FINETUNE, QAT_SCRATCH, HeldOutCheck, TrainConfig
import robquant.zoo as zoo
import robquant.deploy.stage  # noqa: F401 (registers the deployed evaluation, an add-on, with its section)
from robquant.evaluation.addons import AA_ATTACKS, ADD_ONS
from robquant.sections import Switched

class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSection(_Section):
    name: str = Field("digits", description="data set name (see `robquant list`)")
    root: Optional[str] = Field(None, description="data root for cifar10/cifar100/imagefolder")
    allow_unverified: bool = Field(False, description="accept a copy whose checksums differ (recorded)")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from robquant.data import list_datasets

        if v not in list_datasets():
            raise ValueError(f"unknown dataset {v!r}; known: {', '.join(list_datasets())}")
        return v


class ModelSection(_Section):
    name: str = Field("resnet20", description="a registered model (see `robquant list`) or your own, "
                      "'package.module:factory' (importable; called with kwargs)")
    width: Optional[int] = Field(None, ge=1, description="base width (ResNet-20: 16)")
    shortcut: Literal["A", "B"] = Field("A", description="CIFAR ResNet shortcut option")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="your own model's factory options")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        from robquant.models import external, list_models

        if external.is_reference(v):
            external.resolve(v)  # importable and callable, or one message (ConfigError -> the field's error)
            external.allow(v)
        elif v not in list_models():
            raise ValueError(f"unknown model {v!r}; known: {', '.join(list_models())}, or 'package.module:factory'")
        return v

    @model_validator(mode="after")
    def _options_fit(self) -> "ModelSection":
        from robquant.models import external

        if external.is_reference(self.name) and (self.width is not None or self.shortcut != "A"):
            raise ValueError("width and shortcut are options of robquant's ResNets; give your own model's in kwargs")
        if not external.is_reference(self.name) and self.kwargs:
            raise ValueError(f"kwargs are for your own model ('package.module:factory'), not {self.name!r}")
        return self

    def options(self) -> dict[str, Any]:
        """The options the model is built with."""
        from robquant.models import external

        if external.is_reference(self.name):
            return dict(self.kwargs)
        kw: dict[str, Any] = {} if self.width is None else {"width": self.width}
        if self.name.startswith("resnet") and self.shortcut != "A":
            kw["shortcut"] = self.shortcut
        return kw

    def source(self) -> str | None:
        """The sha256 of your own model's source file (None for a registered model)."""
        from robquant.models import external

        return external.source_hash(self.name)["sha256"] if external.is_reference(self.name) else None


# A QAT cell's strategy and the training objective it fine-tunes with (robquant.train.OBJECTIVES),
# the one list of them: the schema's choices, the plan's objective and the library's inverse come from it.
QAT_STRATEGIES = {"vanilla": "clean", "adversarial": "pgd_at", "transfer": "transfer",
                  "fast_adversarial": "fast_adversarial"}
STRATEGY_NAMES = tuple(QAT_STRATEGIES)
INITS = ("random", "non_robust", "robust")
METHODS = ("ptq", "qat")


def declared_field(option: str, note: str = "") -> Any:
    """A study-file field for the built-in attacks' option ``option``, as they declare it
    (:attr:`robquant.attacks.Attack.DECLARED`): its default, its range and its help, led by the attacks that
    take it (``note`` follows). A field whose study form differs from the declaration (another unit, a
    list of choices) is written by hand."""
    from robquant.attacks import ATTACKS

    takers = [name for name in ATTACKS.names() if option in ATTACKS.get(name).DECLARED]
    if not takers:
        raise ConfigError(f"no registered attack declares the option {option!r}")
    opt = ATTACKS.get(takers[0]).DECLARED[option]
    bounds = {k: v for k, v in (("ge", opt.low), ("le", opt.high)) if v is not None}
    return Field(opt.default, **bounds, description=f"{' / '.join(takers)}: {opt.help}{note}")


class AttackSection(_Section):
    name: str = Field("pgd", description="attack: pgd, fgsm, autoattack, apgd, square, transfer, or one a plug-in "
                      "registers (robquant.plugins)")
    label: Optional[str] = Field(None, min_length=1, description="name the results are reported under (default: name)")
    # the built-in attacks' options a study writes as fields: default, range and help from their declarations
    steps: int = declared_field("steps")
    restarts: int = declared_field("restarts")
    n_queries: int = declared_field("n_queries")
    pixel_grid: bool = declared_field("pixel_grid", " (judged only on such images; keyed when set)")
    # written by hand: the study's step is in /255 units (the attack's in [0, 1]); the sub-attacks' choices
    step_size: Optional[float] = Field(None, gt=0, description="PGD step in /255 units (default eps/4)")
    attacks: Optional[list[AA_ATTACKS]] = Field(None, min_length=1,
                                                description="autoattack/apgd: sub-attacks (default: standard / apgd-ce)")
    n: Optional[int] = Field(None, ge=1, description="attack only the first n test examples (expensive attacks)")
    eps: Optional[list[float]] = Field(None, min_length=1, description="run only at these budgets (/255; a subset "
                                       "of evaluation.eps; default all)")
    params: dict[str, Any] = Field(default_factory=dict, description="further options of the attack, by the names "
                                   "it declares (Attack.OPTIONS; a plug-in's own), in its own units")

    @field_validator("name")
    @classmethod
    def _registered(cls, name: str) -> str:
        from robquant.attacks import ATTACKS

        if name not in ATTACKS:
            raise ValueError(f"unknown attack {name!r}; known: {', '.join(ATTACKS.names())}")
        return name

    @model_validator(mode="after")
    def _subsets(self) -> "AttackSection":
        if self.attacks is not None and self.name not in ("autoattack", "apgd"):
            raise ValueError(f"attacks applies to autoattack and apgd only, not {self.name}")
        if self.name == "apgd" and self.attacks and not set(self.attacks) <= {"apgd-ce", "apgd-t"}:
            raise ValueError(f"apgd attacks must be apgd-ce and/or apgd-t, got {self.attacks}")
        if self.params:
            from robquant.attacks import ATTACKS

            attack = ATTACKS.get(self.name)
            declared = attack.OPTIONS
            unknown = sorted(set(self.params) - set(declared))
            if unknown:
                raise ValueError(f"{self.name} takes no option {', '.join(map(repr, unknown))}; it declares: "
                                 f"{', '.join(declared) or 'none'}")
            try:
                attack.select_options(self.params)  # each value as its declaration allows
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return self

    def options(self) -> dict[str, Any]:
        """The options this attack takes (it says which: ``Attack.OPTIONS``), in [0, 1] units."""
        from robquant.attacks import ATTACKS

        given = {"steps": self.steps, "restarts": self.restarts,
                 "step_size": None if self.step_size is None else self.step_size / 255,
                 "attacks": None if self.attacks is None else list(self.attacks), "n_queries": self.n_queries,
                 "pixel_grid": True if self.pixel_grid else None}  # left out while off: earlier keys stand
        return ATTACKS.get(self.name).select_options(given | self.params)


class _EvalBase(_Section):
    """A study's ``evaluation``: the attacks, budgets and test examples; each add-on's options join it as a
    field of :data:`EvalSection` (below), from the add-on's own section."""

    attacks: list[AttackSection] = Field(default_factory=lambda: [AttackSection()], min_length=1)
    eps: list[float] = Field([1, 2, 4, 8], min_length=1, description="budgets in /255 units")
    main_eps: float = Field(8, description="the budget tables report robustness at (/255)")
    weak_eps: Optional[float] = Field(None, description="the weak attack's budget (/255) of Table 1's 'weaker' "
                                      "labels and the activation-bits finding; default the largest eps <= "
                                      "main_eps / 4 (the paper: <= 2/255 at 8/255)")
    n_test: Optional[int] = Field(1000, ge=1, description="test examples (None: all)")
    batch_size: int = Field(256, ge=1)
    cascade: bool = Field(True, description="each attack runs only on the examples the earlier ones left robust "
                          "(AutoAttack's standard evaluation): the same worst case for less work; later attacks' "
                          "own accuracies are then cumulative")
    transfer_matrix: bool = Field(False, description="also attack every model with PGD crafted on its FP parent and "
                                  "on each other precision of its pipeline (same seed and fraction): the precision "
                                  "transfer matrix; every source joins the worst case; turns cascade off (each "
                                  "source's own outcome on every example)")

    @field_validator("eps")
    @classmethod
    def _nonneg(cls, v: list[float]) -> list[float]:
        bad = [e for e in v if not e >= 0]
        if bad:
            raise ValueError(f"eps values must be >= 0 (in /255 units), got {bad}")
        return v

    @model_validator(mode="after")
    def _main_in_eps(self) -> "_EvalBase":
        if self.main_eps not in self.eps:
            raise ValueError(f"main_eps {self.main_eps:g} must be one of eps {self.eps}")
        if self.weak_eps is not None and (self.weak_eps not in self.eps or self.weak_eps >= self.main_eps):
            raise ValueError(f"weak_eps {self.weak_eps:g} must be one of eps {self.eps} and below main_eps "
                             f"{self.main_eps:g}")
        labels = [a.label or a.name for a in self.attacks]
        if len(set(labels)) != len(labels):
            raise ValueError(f"attack labels must be distinct, got {labels}: give repeated attacks a label")
        for a in self.attacks:
            extra = [e for e in a.eps or [] if e not in self.eps]
            if extra:
                raise ValueError(f"attack {a.label or a.name!r} eps {extra} must be among eps {self.eps}")
        return self

    def weak(self) -> float | None:
        """The weak attack's budget (/255): ``weak_eps``, else the largest eps <= main_eps / 4."""
        if self.weak_eps is not None:
            return self.weak_eps
        return max((e for e in self.eps if e <= self.main_eps / 4), default=None)

    def reference_pgd(self) -> "AttackSection | None":
        """The first PGD attack: the paper's attack, and the trust checks' reference PGD."""
        return next((a for a in self.attacks if a.name == "pgd"), None)

    def reference_attack(self) -> str | None:
        """The label of the paper's attack, the first PGD attack (reported beside the worst case)."""
        return next((a.label or a.name for a in self.attacks if a.name == "pgd"), None)

    def add_ons(self, precision: str, seed: int) -> tuple[Any, ...]:
        """The add-on runs of the model of ``seed`` at ``precision`` (:mod:`robquant.evaluation.addons`), each
        built by the section its class names (``SECTION``, its ``run_for``; None: not run). An add-on without a
        section here (a plug-in's) runs where a library caller puts it in the evaluation's ``add_ons``."""
        p = parse_precision(precision)
        sections = [getattr(self, cls.SECTION, None) for _, cls in ADD_ONS.items()]
        return tuple(section.run_for(self, p, seed) for section in sections if section is not None)


def _add_on_field(options: type) -> Any:
    """An add-on's section as a field of ``evaluation``: the trust checks on unless told, the others off
    unless given."""
    off = issubclass(options, Switched)
    return (options, Field(default_factory=(lambda: options(enabled=False)) if off else options,
                           description=options.HELP))


# the study's evaluation: its own fields and each add-on's section, in the order the add-ons run
EvalSection = create_model("EvalSection", __base__=_EvalBase, __module__=__name__,
                           **{cls.SECTION: _add_on_field(cls.Options)
                              for cls in sorted((c for _, c in ADD_ONS.items() if hasattr(c, "Options")),
                                                key=lambda c: c.ORDER)})


class TrainSection(_Section):
    """A training recipe; the defaults are :data:`robquant.train.FP_TRAIN` (the paper's)."""

    epochs: int = Field(FP_TRAIN.epochs, ge=1)
    lr: float = Field(FP_TRAIN.lr, gt=0)
    batch_size: int = Field(FP_TRAIN.batch_size, ge=1)
    momentum: float = Field(FP_TRAIN.momentum, ge=0, lt=1)
    weight_decay: float = Field(FP_TRAIN.weight_decay, ge=0)
    schedule: Literal["multistep", "cosine", "constant"] = FP_TRAIN.schedule  # type: ignore[assignment]
    milestones: Optional[list[int]] = None
    autocast: Optional[Literal["bf16"]] = Field(None, description="bf16: training under bfloat16 autocast "
                                                "(evaluation stays float32); keyed when set")

    @classmethod
    def of(cls, cfg: TrainConfig) -> "TrainSection":
        return cls(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, momentum=cfg.momentum,
                   weight_decay=cfg.weight_decay, schedule=cfg.schedule,
                   milestones=None if cfg.milestones is None else list(cfg.milestones), autocast=cfg.autocast)


class PGDSection(_Section):
    """PGD adversarial training; the defaults are :data:`robquant.train.PGD_AT` (Madry's PGD-7)."""

    eps: float = Field(round(PGD_AT.eps * 255, 6), ge=0, description="/255 units")
    step: float = Field(round(PGD_AT.step_size * 255, 6), gt=0, description="/255 units")
    steps: int = Field(PGD_AT.steps, ge=1)
    bn_mode: Literal["eval", "train"] = PGD_AT.bn_mode  # type: ignore[assignment]

    def kwargs(self) -> dict[str, Any]:
        return {"eps": self.eps / 255, "step_size": self.step / 255, "steps": self.steps, "bn_mode": self.bn_mode}


class CheckSection(_Section):
    """The held-out PGD check of adversarial FP training (:class:`~robquant.train.HeldOutCheck`)."""

    n: int = Field(HeldOutCheck.n, ge=1, description="training images held out for the check (not trained on)")
    steps: int = Field(HeldOutCheck.steps, ge=1, description="the check's PGD steps (eps fp.pgd.eps, step eps/4)")
    drop: float = Field(round(HeldOutCheck.drop * 100, 6), gt=0, le=100,
                        description="stop when held-out PGD accuracy falls this many points below its best")

    def config(self, eps: float) -> HeldOutCheck:
        """The check at budget ``eps`` (/255 units)."""
        return HeldOutCheck(n=self.n, eps=eps / 255, step_size=eps / 4 / 255, steps=self.steps, drop=self.drop / 100)


class FPTrainSection(TrainSection):
    fraction: Optional[float] = Field(None, description="training data for this FP model (default fp.fraction)")

    @field_validator("fraction")
    @classmethod
    def _frac(cls, v: Optional[float]) -> Optional[float]:
        return None if v is None else _check_fraction(v)


class FPWeightsSection(_Section):
    """Your own trained weights as the FP model: no FP training runs."""

    checkpoint: str = Field(..., min_length=1, description="a zoo model (zoo:NAME), a safetensors file, a robquant model folder, or a "
                            "PyTorch state_dict saved with torch.save (read weights-only); relative to the study file")

    @field_validator("checkpoint")
    @classmethod
    def _exists(cls, v: str) -> str:
        if zoo.is_reference(v):  # a zoo model: its folder, its files checked against the zoo's sha256
            try:
                return str(zoo.resolve(v))
            except (ConfigError, CheckpointError) as exc:
                raise ValueError(str(exc)) from None
        if not Path(v).exists():
            raise ValueError(f"no such file or folder: {v!r}")
        return v


def _fp_kind(v: Any) -> str:
    """A training recipe, or (with ``checkpoint``) your own weights."""
    return "<weights>" if isinstance(v, FPWeightsSection) or (isinstance(v, dict) and "checkpoint" in v) else "<recipe>"


FPModel = Annotated[Union[Annotated[FPTrainSection, Tag("<recipe>")], Annotated[FPWeightsSection, Tag("<weights>")]],
                    Discriminator(_fp_kind)]


class FPSection(_Section):
    non_robust: Optional[FPModel] = Field(default_factory=FPTrainSection, description="clean training, or your weights")
    robust: Optional[FPModel] = Field(default_factory=lambda: FPTrainSection(weight_decay=2e-4),
                                      description="PGD adversarial training (the RRM teacher), or your weights")
    pgd: PGDSection = Field(default_factory=PGDSection)
    robust_objective: Literal["pgd_at", "fast_adversarial", "n_fgsm"] = Field(
        "pgd_at", description="the robust FP model's adversarial training at fp.pgd.eps: PGD (fp.pgd), FGSM-RS "
        "(Wong et al.) or N-FGSM (de Jorge et al.)")
    check: Optional[CheckSection] = Field(None, description="held-out PGD check of the robust FP training after every "
                                       "epoch (stops on catastrophic overfitting, keeps the best epoch)")
    fraction: float = Field(1.0, description="class-stratified, seeded fraction of the training set the FP models "
                            "train on")
    seed: Optional[int] = Field(None, description="null: each study seed trains its own FP models; a number: every "
                                "seed's cells share the FP models trained with this seed (their intervals then "
                                "cover quantization, fine-tuning and attack randomness given one FP model)")

    @field_validator("fraction")
    @classmethod
    def _frac(cls, v: float) -> float:
        return _check_fraction(v)

    def spec(self, init: str) -> FPTrainSection | FPWeightsSection:
        """The training recipe, or the user's weights, of the ``robust`` or ``non_robust`` FP model."""
        spec = self.robust if init == "robust" else self.non_robust
        assert spec is not None  # the study's validation guarantees it
        return spec

    def objective(self, init: str) -> tuple[str, dict[str, Any]]:
        """The training objective (name, options) of the ``robust`` or ``non_robust`` FP model."""
        if init != "robust":
            return "clean", {}
        if self.robust_objective == "pgd_at":
            return "pgd_at", self.pgd.kwargs()
        return self.robust_objective, {"eps": self.pgd.eps / 255}

    def held_out_check(self, init: str) -> HeldOutCheck | None:
        """The robust FP model's held-out check (None for the non-robust one, or when off)."""
        return self.check.config(self.pgd.eps) if init == "robust" and self.check is not None else None

    def fraction_of(self, init: str) -> float:
        spec = self.spec(init)
        f = spec.fraction if isinstance(spec, FPTrainSection) else None
        return self.fraction if f is None else f


class QATSection(_Section):
    finetune: TrainSection = Field(default_factory=lambda: TrainSection.of(QAT_FINETUNE), description="QAT from FP parameters")
    scratch: TrainSection = Field(default_factory=lambda: TrainSection.of(QAT_SCRATCH), description="QAT from random parameters")
    pgd: PGDSection = Field(default_factory=PGDSection, description="the adversarial strategy's attack")
    fast_eps: float = Field(8, ge=0, description="fast_adversarial budget (/255)")
    transfer_lambda: float = Field(0.005, ge=0, description="RRM cross-entropy weight")
    held_out: int = Field(0, ge=0, description="after every QAT epoch, clean accuracy on this many training images "
                          "outside the cell's fraction (0: none); the report judges fine-tuning's convergence on it")


class QuantSection(_Section):
    """The quantization options of every cell; the choices and defaults are the method configs'
    (:class:`~robquant.quant.PTQConfig`, :class:`~robquant.quant.QATConfig`) and the quantizers registered
    for each method (:data:`~robquant.quant.WEIGHT_QUANTIZERS`)."""

    ptq_weights: str = Field(PTQConfig.weight_quantizer, description="PTQ weight quantizer, registered for PTQ "
                             f"({', '.join(WEIGHT_QUANTIZERS.names('ptq'))})")
    qat_weights: str = Field(QATConfig.weight_quantizer, description="QAT weight quantizer, registered for QAT "
                             f"({', '.join(WEIGHT_QUANTIZERS.names('qat'))})")
    ptq_acts: str = Field(PTQConfig.act_quantizer, description="PTQ activation quantizer, registered for PTQ "
                          f"({', '.join(ACT_QUANTIZERS.names('ptq'))})")
    qat_acts: str = Field(QATConfig.act_quantizer, description="QAT activation quantizer, registered for QAT "
                          f"({', '.join(ACT_QUANTIZERS.names('qat'))})")
    per_channel: bool = Field(PTQConfig.per_channel, description="uniform weights per output channel (else per "
                              "tensor)")
    calibration: Literal[CALIBRATIONS] = Field(PTQConfig.calibration,  # type: ignore[valid-type]
                                               description="PTQ activation range rule: topk_median (PWLQ's) or "
                                               "minmax")
    quantize_first_last: bool = PTQConfig.quantize_first_last
    breakpoint: Literal[BREAKPOINTS] = PTQConfig.breakpoint  # type: ignore[valid-type]
    calib_images: int = Field(PTQConfig.calib_images, ge=1, description="calibration images (PTQ ranges, QAT's "
                              "PACT alpha)")
    calib_batch_size: int = Field(PTQConfig.calib_batch_size, ge=1, description="images per calibration batch "
                                  "(PWLQ's code: 4)")
    act_placement: Literal[PTQConfig.ACT_PLACEMENTS] = Field(  # type: ignore[valid-type]
        PTQConfig.act_placement, description="PTQ activations: inputs of every conv, linear and pooling layer "
        "(PWLQ's code) or ReLU outputs")
    pact_alpha: float = Field(QATConfig.pact_alpha, gt=0, description="PACT alpha of QAT from random parameters "
                              "(PACT's 10)")
    pact_init: Literal[PACT_INITS] = Field(QATConfig.pact_init,  # type: ignore[valid-type]
                                           description="QAT from trained parameters: alpha from the data (a "
                                           "percentile of each layer's activations) or pact_alpha")
    pact_percentile: float = Field(QATConfig.pact_percentile, gt=0, le=100, description="percentile of pact_init data")

    @field_validator("ptq_weights", "qat_weights", "ptq_acts", "qat_acts")
    @classmethod
    def _registered(cls, v: str, info: Any) -> str:
        method, kind = info.field_name[:3], info.field_name[4:]
        registry, what = (WEIGHT_QUANTIZERS, "weight") if kind == "weights" else (ACT_QUANTIZERS, "activation")
        if v not in registry.names(method):
            raise ValueError(f"unknown {what} quantizer {v!r} for {method}; known: {', '.join(registry.names(method))}")
        return v


def _check_precision(v: str) -> str:
    try:
        return str(parse_precision(v))
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def _check_fraction(v: float) -> float:
    if not 0 < v <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {v}")
    return v


class Axes(_Section):
    init: list[Literal[INITS]] = Field(["non_robust", "robust"], min_length=1)
    method: list[Literal[METHODS]] = Field(list(METHODS), min_length=1)
    strategy: list[Literal[STRATEGY_NAMES]] = Field(["vanilla"], min_length=1)
    precision: list[str] = Field(["A32W32", "A8W8", "A4W4"], min_length=1)
    fraction: list[float] = Field([1.0], min_length=1)

    @field_validator("precision")
    @classmethod
    def _prec(cls, v: list[str]) -> list[str]:
        return [_check_precision(p) for p in v]

    @field_validator("fraction")
    @classmethod
    def _frac(cls, v: list[float]) -> list[float]:
        return [_check_fraction(f) for f in v]


class Cell(_Section):
    """One pipeline: where its parameters start, how it is quantized, and on how much data."""

    init: Literal[INITS]
    method: Literal[METHODS]
    strategy: Optional[Literal[STRATEGY_NAMES]] = None
    precision: str
    fraction: float = 1.0
    eps: Optional[tuple[float, ...]] = Field(None, min_length=1, description="evaluate at these budgets only (/255; a "
                                       "subset of evaluation.eps that holds main_eps; default all)")

    @field_validator("precision")
    @classmethod
    def _prec(cls, v: str) -> str:
        return _check_precision(v)

    @field_validator("fraction")
    @classmethod
    def _frac(cls, v: float) -> float:
        return _check_fraction(v)

    @property
    def label(self) -> str:
        strat = f"/{self.strategy}" if self.strategy else ""
        return f"{self.method}{strat} from {self.init} {self.precision} f={self.fraction:g}"


class Study(_Section):
    """A grid of pipelines over one data set and model."""

    name: str = Field("study", min_length=1)
    dataset: DatasetSection = Field(default_factory=DatasetSection)
    model: ModelSection = Field(default_factory=ModelSection)
    seeds: list[int] = Field([0], min_length=1)
    evaluation: EvalSection = Field(default_factory=EvalSection)
    fp: FPSection = Field(default_factory=FPSection)
    qat: QATSection = Field(default_factory=QATSection)
    quant: QuantSection = Field(default_factory=QuantSection)
    axes: Optional[Axes] = None
    cells: Optional[list[Cell]] = None
    store: Optional[str] = Field(None, description="store folder (default: runs/store beside the study file)")

    @model_validator(mode="after")
    def _consistent(self) -> "Study":
        if self.axes is None and not self.cells:
            raise ValueError("a study needs axes (a grid) or cells (a list), or both")
        cells, _ = self.expand()
        needs = {c.init for c in cells} | ({"robust"} if any(c.strategy == "transfer" for c in cells) else set())
        if "robust" in needs and self.fp.robust is None:
            raise ValueError("init robust and strategy transfer (its teacher) need fp.robust")
        if "non_robust" in needs and self.fp.non_robust is None:
            raise ValueError("init non_robust needs fp.non_robust")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        whole = [c.label for c in cells if c.method == "qat" and c.fraction == 1.0]
        if self.qat.held_out and whole:
            raise ValueError(f"qat.held_out {self.qat.held_out} takes training images outside a cell's fraction, and "
                             f"{whole[0]} trains on all of them: give its cells a fraction below 1, or held_out 0")
        ev = self.evaluation
        for c in self.cells or []:
            if c.eps is not None and (not set(c.eps) <= set(ev.eps) or ev.main_eps not in c.eps):
                raise ValueError(f"cell {c.label}: eps {list(c.eps)} must be a subset of evaluation.eps {ev.eps} that "
                                 f"holds main_eps {ev.main_eps:g}")
        return self

    def expand(self) -> tuple[list[Cell], list[tuple[dict[str, Any], str]]]:
        """Cells of the grid plus the explicit ones (duplicates once), and the dropped ``(cell, reason)``."""
        cells: list[Cell] = []
        dropped: list[tuple[dict[str, Any], str]] = []
        if self.axes is not None:
            a = self.axes
            for init, method, prec, frac in itertools.product(a.init, a.method, a.precision, a.fraction):
                base = {"init": init, "method": method, "precision": prec, "fraction": frac}
                if method == "ptq" and init == "random":
                    dropped.append((base, "PTQ of random parameters is meaningless"))
                elif method == "ptq":
                    cells.append(Cell(**base))
                else:
                    cells.extend(Cell(**base, strategy=s) for s in a.strategy)
            if "ptq" in a.method and a.strategy != ["vanilla"]:
                dropped.append(({"method": "ptq", "strategy": a.strategy},
                                "PTQ has no training strategy: one PTQ cell per init, precision, fraction"))
        for c in self.cells or []:
            if c.method == "ptq" and c.init == "random":
                dropped.append((c.model_dump(), "PTQ of random parameters is meaningless"))
            elif c.method == "ptq" and c.strategy is not None:
                dropped.append((c.model_dump(), "a strategy applies to QAT only"))
            elif c.method == "qat" and c.strategy is None:
                cells.append(c.model_copy(update={"strategy": "vanilla"}))
            else:
                cells.append(c)
        unique = list(dict.fromkeys(cells))
        return unique, dropped


def _format_errors(path: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-after", "<")))
        msg = err["msg"].removeprefix("Value error, ")
        value = err.get("input")
        shown = "" if isinstance(value, dict) or "got " in msg else f" (got {value!r})"
        if err["type"] == "extra_forbidden":
            msg, shown = "unknown key (not a study field)", ""
        lines.append(f"{loc or 'study'}: {msg}{shown}")
    return f"{path}: invalid study:\n  " + "\n  ".join(lines)


def parse_study(data: Any, source: str = "study") -> Study:
    """Validate a parsed YAML document.

    Raises:
        ConfigError: one message listing each bad field, its value and what is allowed.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a study file must be a YAML mapping, got {type(data).__name__}")
    try:
        return Study.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None


def load_study(path: str | Path) -> Study:
    """Read and validate a study file.

    Raises:
        ConfigError: if the file cannot be read, is not UTF-8 text, is not valid YAML, or fails validation.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read study file {str(path)!r}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: a study file must be UTF-8 text (YAML); byte {exc.start} is "
                          f"0x{exc.object[exc.start]:02x}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    for init in ("non_robust", "robust"):  # your weights are found beside the study file
        fp = (data.get("fp") or {}) if isinstance(data, dict) else {}
        spec = fp.get(init) if isinstance(fp, dict) else None
        if isinstance(spec, dict) and isinstance(spec.get("checkpoint"), str) and not zoo.is_reference(spec["checkpoint"]):
            spec["checkpoint"] = str((path.resolve().parent / spec["checkpoint"]).resolve())
    study = parse_study(data, str(path))
    if study.store is None:
        study = study.model_copy(update={"store": str(path.resolve().parent / "runs" / "store")})
    return study
