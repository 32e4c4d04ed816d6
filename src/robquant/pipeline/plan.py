"""The planner: a study becomes a DAG of typed, content-addressed stages.

train_fp (per init and FP seed) -> quantize (PTQ or QAT; per cell and seed) -> evaluate. Each
stage is a frozen spec (:mod:`robquant.pipeline.specs`) keyed by its hash, so an FP model shared
by many cells (and by other studies using the same store) is trained once. This module is the
boundary where the study's units (/255) become [0, 1] units. A stage's planned cost is asked of the
objects that run it: the objective's and each attack's declared passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from robquant.defaults import ATTACK_STEPS
from robquant.modelfolder import weights_sha256
from robquant.pipeline.specs import (AttackRun, Budget, DataRef, Evaluate,
                                     ImportFP, ModelRef, ObjectiveRef, Quantize, StageSpec, TrainFP, spec_config,
                                     spec_key)
from robquant.pipeline.study import QAT_STRATEGIES, Cell, FPWeightsSection, Study, TrainSection
from robquant.quant import AnyQuantConfig, PTQConfig, QATConfig
from robquant.quant.precision import parse_precision
from robquant.train import TrainConfig


@dataclass
class Stage:
    """One unit of work: its spec, key and planned cost (forward / backward image passes, counted
    when first asked: training costs need the training set's size)."""

    spec: StageSpec
    key: str
    count: Callable[[], dict[str, float]] = field(default=dict, repr=False)
    estimated_s: float | None = None  # wall time on this device (pipeline.estimate), when estimated

    @property
    def cost(self) -> dict[str, float]:
        if not hasattr(self, "_cost"):
            self._cost = self.count()
        return self._cost

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def label(self) -> str:
        return self.spec.label

    @property
    def parents(self) -> list[str]:
        """The parents' keys (distinct, in the spec's order)."""
        return list(dict.fromkeys(self.spec.parents().values()))

    @property
    def config(self) -> dict[str, Any]:
        """The keyed fields as JSON-ready data (what the store's index shows)."""
        return spec_config(self.spec)


@dataclass
class Plan:
    """Stages in dependency order, the cells they answer, and the dropped cells with reasons."""

    study: Study
    stages: dict[str, Stage]
    cells: list[tuple[Cell, int, str]]  # (cell, seed, evaluate-stage key)
    dropped: list[tuple[dict[str, Any], str]]
    n_train: Callable[[], int] = field(default=lambda: 0)  # the training-set size (loaded once, on demand)
    n_test_split: Callable[[], int] = field(default=lambda: 10_000)  # the test split's size (likewise)

    def order(self) -> list[Stage]:
        return list(self.stages.values())  # inserted parents first


def split_size(study: Study, split: str = "train") -> Callable[[], int]:
    """``size()``: how many examples the study's ``split`` holds, loaded on first call only."""
    sizes: dict[str, int] = {}

    def size() -> int:
        if "n" not in sizes:
            from robquant.data import create_dataset

            ds = study.dataset
            sizes["n"] = len(create_dataset(ds.name, ds.root, split, allow_unverified=ds.allow_unverified))
        return sizes["n"]

    return size


def training_set_size(study: Study) -> Callable[[], int]:
    """``n_train()``: the study's training-set size, loaded on first call only."""
    return split_size(study, "train")


def train_config(spec: TrainSection, seed: int) -> TrainConfig:
    """The :class:`~robquant.train.TrainConfig` of a study recipe (an FP recipe's fraction is the stage's)."""
    cfg = spec.model_dump(exclude={"fraction"})
    if cfg.get("milestones") is not None:
        cfg["milestones"] = tuple(cfg["milestones"])
    return TrainConfig(**cfg, seed=seed)


class _Planner:
    def __init__(self, study: Study, n_train: Callable[[], int]) -> None:
        self.study, self.n_train = study, n_train
        ds, ev = study.dataset, study.evaluation
        self.data = DataRef(ds.name, ev.n_test, ds.root, ds.allow_unverified)
        self.model = ModelRef(study.model.name, study.model.options(), study.model.source())
        self.stages: dict[str, Stage] = {}
        self.cells: list[Cell] = []

    def add(self, spec: StageSpec, count: Callable[[], dict[str, float]]) -> str:
        key = spec_key(spec)
        self.stages.setdefault(key, Stage(spec, key, count))
        return key

    def training_cost(self, objective: ObjectiveRef, epochs: int, fraction: float,
                      extra_forwards: float = 0.0, extra_passes: float = 0.0) -> Callable[[], dict[str, float]]:
        def count() -> dict[str, float]:
            forwards, passes = objective.cost()
            n = epochs * max(1, round(self.n_train() * fraction))
            return {"forward": float(n * forwards + extra_forwards), "backward": float(n * passes + extra_passes)}
        return count

    def fp(self, init: str, seed: int) -> str:
        study = self.study
        spec, fraction = study.fp.spec(init), study.fp.fraction_of(init)
        if isinstance(spec, FPWeightsSection):  # the user's weights: one stage whatever the seed
            digest = weights_sha256(spec.checkpoint)
            return self.add(ImportFP(self.data, self.model, init, digest, spec.checkpoint,
                                     label=f"import {init} FP weights ({Path(spec.checkpoint).name})"),
                            lambda: {"forward": 0.0, "backward": 0.0})
        seed = seed if study.fp.seed is None else study.fp.seed
        objective = ObjectiveRef(*study.fp.objective(init))
        check = study.fp.held_out_check(init)
        stage = TrainFP(self.data, self.model, init, objective, fraction, train_config(spec, seed),
                        label=f"train {init} FP (seed {seed})", check=check)
        check_passes = 0.0 if check is None else float(spec.epochs * check.n * check.passes())
        return self.add(stage, self.training_cost(objective, spec.epochs, fraction, check_passes, check_passes))

    def quantize(self, cell: Cell, seed: int) -> str:
        study = self.study
        checkpoint = None if cell.init == "random" else self.fp(cell.init, seed)
        quant = quant_config(study, cell)
        label = f"{cell.label} (seed {seed})"
        if cell.method == "ptq":
            spec = Quantize(self.data, self.model, cell.init, "ptq", cell.precision, cell.fraction, seed, quant,
                            checkpoint=checkpoint, label=label)
            return self.add(spec, lambda: {"forward": float(quant.calib_images), "backward": 0.0})
        recipe = study.qat.scratch if cell.init == "random" else study.qat.finetune
        objective = qat_objective(study, cell)
        teacher = self.fp("robust", seed) if cell.strategy == "transfer" else None
        held_out = study.qat.held_out or None
        spec = Quantize(self.data, self.model, cell.init, "qat", cell.precision, cell.fraction, seed, quant,
                        strategy=cell.strategy, train=train_config(recipe, seed), objective=objective,
                        checkpoint=checkpoint, teacher=teacher, held_out=held_out, label=label)
        calib = quant.calib_images if quant.needs_calibration else 0
        return self.add(spec, self.training_cost(objective, recipe.epochs, cell.fraction,
                                                 calib + recipe.epochs * (held_out or 0)))

    def transfer_sources(self, cell: Cell, seed: int, attacks: tuple[AttackRun, ...]) -> tuple[AttackRun, ...]:
        """The precision transfer matrix's attacks on ``cell``: PGD (the paper's attack's settings and examples,
        its full course) crafted on the FP parent (``transfer:FP``) and on each other precision of the cell's
        pipeline, seed and fraction (``transfer:AxWy``; PTQ at A32W32 is the FP parent itself, so not again),
        each a run whose ``source`` is that model's stage."""
        from robquant.attacks import ATTACKS

        pgd = self.study.evaluation.reference_pgd()
        # the white-box attack's own settings (steps, step, restarts, pixel grid), so that every cell compares alike
        options = ATTACKS.get("transfer").select_options(pgd.options() if pgd is not None else {"steps": ATTACK_STEPS})
        n = pgd.n if pgd is not None else None  # on the paper's attack's examples
        runs = []
        if cell.init != "random":
            runs.append(AttackRun("transfer", "transfer:FP", {**options, "source": self.fp(cell.init, seed)}, n))
        for other in self.cells:
            if (other.method, other.strategy, other.init, other.fraction) == (cell.method, cell.strategy, cell.init,
                                                                              cell.fraction) \
                    and other.precision != cell.precision \
                    and not (other.method == "ptq" and parse_precision(other.precision).is_fp):  # PTQ at 32 bits: FP
                runs.append(AttackRun("transfer", f"transfer:{other.precision}",
                                      {**options, "source": self.quantize(other, seed)}, n))
        taken = {a.label for a in attacks}
        return tuple(r for r in runs if r.label not in taken)

    def evaluate(self, cell: Cell, seed: int, model: str) -> str:
        ev = self.study.evaluation
        attacks = attack_runs(self.study)
        budgets = tuple(Budget.of(e) for e in sorted(cell.eps or ev.eps))
        wants_surrogate = ev.diagnostics.enabled or any(a.needs_surrogate for a in attacks)
        surrogate = self.fp(cell.init, seed) if wants_surrogate and cell.init != "random" else None
        skipped = tuple((a.label, "no full-precision parent to transfer from (random init)") for a in attacks
                        if a.needs_surrogate and surrogate is None)
        attacks = tuple(a for a in attacks if any(a.runs_at(b) for b in budgets)  # runs at one of the cell's
                        and (not a.needs_surrogate or surrogate is not None))
        if ev.transfer_matrix:
            attacks += self.transfer_sources(cell, seed, attacks)
        # the transfer matrix needs each source's own outcome on every example: no cascade (a cascaded
        # attack's outcome is cumulative, robust under it and every earlier attack)
        cascade = ev.cascade and not ev.transfer_matrix
        spec = Evaluate(self.data, model, attacks, budgets, Budget.of(ev.main_eps), seed, ev.batch_size, cascade,
                        surrogate=surrogate, skipped=skipped, architecture=self.model,
                        label=f"evaluate {cell.label} (seed {seed})",
                        add_ons=ev.add_ons(cell.precision, seed))  # each built by its study section
        return self.add(spec, lambda: evaluation_cost(spec))


def build_plan(study: Study, n_train: Callable[[], int] | None = None) -> Plan:
    """Expand ``study`` into stages. ``n_train()`` gives the training-set size (for the cost);
    by default the training set is loaded once, when a stage's cost is first asked."""
    n_train = n_train or training_set_size(study)
    planner = _Planner(study, n_train)
    cells, dropped = study.expand()
    planner.cells = cells  # the grid (the precision transfer matrix attacks a cell from its siblings)
    planned = []
    for seed in study.seeds:
        for cell in cells:
            model = planner.quantize(cell, seed)
            planned.append((cell, seed, planner.evaluate(cell, seed, model)))
    return Plan(study, planner.stages, planned, dropped, n_train, split_size(study, "test"))


def attack_runs(study: Study) -> tuple[AttackRun, ...]:
    """The study's attacks, in [0, 1] units."""
    runs = []
    for a in study.evaluation.attacks:
        budgets = None if a.eps is None else tuple(Budget.of(e) for e in a.eps)
        runs.append(AttackRun(a.name, a.label or a.name, a.options(), a.n, budgets))
    return tuple(runs)


def quant_config(study: Study, cell: Cell) -> AnyQuantConfig:
    """The method's config (:class:`~robquant.quant.PTQConfig` or :class:`~robquant.quant.QATConfig`) of a cell."""
    q = study.quant
    common = {"precision": cell.precision, "quantize_first_last": q.quantize_first_last,
              "calib_images": q.calib_images, "calib_batch_size": q.calib_batch_size, "per_channel": q.per_channel}
    if cell.method == "ptq":
        return PTQConfig(**common, weight_quantizer=q.ptq_weights, act_quantizer=q.ptq_acts, breakpoint=q.breakpoint,
                         act_placement=q.act_placement, calibration=q.calibration)
    # PACT's from-scratch alpha for random parameters; from the data otherwise
    return QATConfig(**common, weight_quantizer=q.qat_weights, act_quantizer=q.qat_acts, pact_alpha=q.pact_alpha,
                     pact_init="fixed" if cell.init == "random" else q.pact_init, pact_percentile=q.pact_percentile)


def qat_objective(study: Study, cell: Cell) -> ObjectiveRef:
    """The training objective of a QAT cell's strategy (:data:`~robquant.pipeline.study.QAT_STRATEGIES`) with
    the study's options for it."""
    name = QAT_STRATEGIES[cell.strategy or "vanilla"]
    kwargs = {"pgd_at": lambda: study.qat.pgd.kwargs(), "fast_adversarial": lambda: {"eps": study.qat.fast_eps / 255},
              "transfer": lambda: {"lam": study.qat.transfer_lambda}}.get(name, dict)()
    return ObjectiveRef(name, kwargs)


def evaluation_cost(spec: Evaluate) -> dict[str, float]:
    """Forward/backward passes of one evaluate stage (each attack at each of its budgets, plus the
    trust checks), counting every example as attacked for every step (an upper bound)."""
    n_test = spec.data.n_test or 0
    fwd = bwd = float(n_test)
    for a in spec.attacks:
        c = a.cost()
        n = min(a.n or n_test, n_test) * sum(a.runs_at(b) for b in spec.budgets)
        fwd, bwd = fwd + (c.gradients + c.forwards) * n, bwd + c.gradients * n
    for addon in spec.add_ons:  # the trust checks, the deployed evaluation, bit flips
        f, b = addon.passes(spec)
        fwd, bwd = fwd + f, bwd + b
    return {"forward": fwd, "backward": bwd}
