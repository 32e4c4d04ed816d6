"""Evaluation add-ons: what an evaluate stage runs after its input attacks, each one class.

An add-on is a frozen dataclass of its keyed options, registered where it is defined
(``@register_add_on(field, order)``), one of the tuple :attr:`~robquant.pipeline.specs.Evaluate.add_ons` (``spec``
below) holds, that owns:

- ``FIELD``: its name in the evaluation's key and record ``config``; ``ORDER``: when it runs;
  ``SECTION``: the study's ``evaluation`` option that holds its options, ``Options`` its section (a pydantic
  model declared beside it, ``@add_on_section(field)``, whose ``run_for`` builds the run for each model);
- ``RECORD_KEY``: where its result goes in the evaluation's record;
- ``passes(spec)``: its (forward, backward) image passes at most, for the plan's cost; ``work(spec)``: its
  expected (gradient, forward) passes, for the estimate (:mod:`robquant.pipeline.estimate`);
- ``run(step)``: its work, after the attacks, from an :class:`AddOnStep` (the evaluation's result, the
  model, the test set, ...);
- ``checks(result)``: the trust checks it contributes (``{name: {"flag": bool, ...}}``), which join the
  evaluation's flags and are listed beside the trust checks' own;
- ``metrics(result)``: its numbers of record, under its key in the evaluation's metrics
  (:class:`~robquant.evaluation.stage.EvaluationMetrics`; None: none of its own).

The evaluation handler loops over them (:func:`run_add_ons`); no add-on's result patches another's. An
add-on lives with its domain: the trust checks (:class:`DiagnoseRun`) and the bit-flip attack
(:class:`BitFlipRun`), random bit errors (:class:`BitErrorRun`) and natural corruptions
(:class:`CorruptionRun`) here, the deployed evaluation (:class:`~robquant.deploy.stage.DeployedRun`) with
:mod:`robquant.deploy`; the precision transfer matrix and pixel-valid inputs are attack
runs (:class:`~robquant.evaluation.runs.AttackRun`), not add-ons.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Optional, Protocol

from pydantic import Field, field_validator

from robquant.attacks.autoattack import STANDARD
from robquant.defaults import (ASSUMED_ACCURACY, ASSUMED_SEARCH_FLIPS, ATTACK_STEPS, BITFLIP_N_MAX, BITFLIP_REPEATS, BIT_ERROR_DRAWS, BIT_ERROR_RATES, BITFLIP_ATTACK_BATCH, BITFLIP_METHODS,
                               BITFLIP_RANDOM_CAP, BITFLIP_SEARCH_CAP, CHECK_EXAMPLES, CHECK_SQUARE_QUERIES, CHECK_TOL, COLLAPSE_EPS_255, RESTARTS)
from robquant.errors import ConfigError, check_range
from robquant.evaluation.evaluate import record_mask
from robquant.evaluation.trust import diagnose, diagnose_cost
from robquant.keys import UNKEYED
from robquant.registry import Registry
from robquant.sections import Section, Switched

BIT_ERRORS_FILE = "biterrors.npz"  # an evaluation's per-example evidence under random bit errors
CORRUPTIONS_FILE = "corruptions.npz"  # ... and under natural corruptions
AA_ATTACKS = Literal[STANDARD]  # type: ignore[valid-type]  # AutoAttack's sub-attacks
ADD_ONS: Registry[type] = Registry("evaluation add-on")  # add-on classes by FIELD (register_add_on)


def register_add_on(field: str, order: int, *, section: str | None = None,
                    record_key: str | None = None) -> Any:
    """Class decorator: the class (a frozen dataclass with the :class:`AddOn` methods) becomes an evaluation
    add-on named ``field`` in the key, run at ``order``, its options in the study's ``evaluation.<section>``
    and its result in the record's ``<record_key>`` (both default ``field``)."""

    def add(cls: type) -> type:
        cls.FIELD, cls.ORDER = field, order
        cls.SECTION, cls.RECORD_KEY = section or field, record_key or field
        return ADD_ONS.register(field)(cls)

    return add


def add_on_section(field: str) -> Any:
    """Class decorator: the class (a :class:`~robquant.sections.Section` with ``HELP`` and ``run_for(ev,
    precision, seed)``) holds the study's options of the add-on ``field`` (its ``SECTION`` of ``evaluation``),
    and builds its run for each model."""

    def add(cls: type) -> type:
        ADD_ONS.get(field).Options = cls
        return cls

    return add


def add_on_fields() -> list[str]:
    """Every registered add-on's ``FIELD``, in the order they run."""
    return [name for name, _ in sorted(ADD_ONS.items(), key=lambda item: item[1].ORDER)]


def in_order(add_ons: Any) -> tuple[Any, ...]:
    """``add_ons`` (runs, None for one not run) in the order they run, checked: one of each kind at most.

    Raises:
        ValueError: two runs of one add-on, or an object that is no registered add-on.
    """
    runs, registered = [a for a in add_ons if a is not None], dict(ADD_ONS.items())
    fields = [getattr(type(a), "FIELD", None) for a in runs]
    unknown = [a for a, f in zip(runs, fields) if registered.get(f) is not type(a)]
    if unknown or len(set(fields)) != len(fields):
        raise ValueError(f"an evaluation's add-ons must be registered and distinct, got {[type(a).__name__ for a in runs]}")
    return tuple(sorted(runs, key=lambda a: type(a).ORDER))


@dataclass(frozen=True)
class AddOnStep:
    """What an add-on's ``run`` gets: the evaluation's result (``ev``: an
    :class:`~robquant.evaluation.EvalResult`) and what it ran on."""

    ev: Any
    model: Any
    test_set: Any
    attacks: list[Any]
    out: Path
    device: Any
    batch_size: int
    seed: int
    surrogate: Any = None
    surrogate_id: str | None = None
    progress: Any = None


class AddOn(Protocol):
    FIELD: ClassVar[str]
    SECTION: ClassVar[str]
    ORDER: ClassVar[int]
    RECORD_KEY: ClassVar[str]

    def passes(self, spec: Any) -> tuple[float, float]: ...

    def work(self, spec: Any) -> tuple[float, float]: ...

    def run(self, step: AddOnStep) -> dict[str, Any]: ...

    def checks(self, result: dict[str, Any]) -> dict[str, dict[str, Any]]: ...

    def metrics(self, result: dict[str, Any]) -> dict[str, Any] | None: ...


def contributed_checks(spec: Any, record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every trust check the spec's add-ons contributed, from their results in ``record``."""
    return {name: check for addon in spec.add_ons if addon.RECORD_KEY in record
            for name, check in addon.checks(record[addon.RECORD_KEY]).items()}


def run_add_ons(spec: Any, step: AddOnStep, record: dict[str, Any]) -> None:
    """Run the spec's add-ons in order, each result under its key in ``record``; the checks they
    contribute are listed beside the trust checks' own (when those ran)."""
    for addon in spec.add_ons:
        record[addon.RECORD_KEY] = addon.run(step)
    contributed = contributed_checks(spec, record)
    diag = record.get(DiagnoseRun.RECORD_KEY)
    if diag is not None and contributed:
        checks = {**diag["checks"], **contributed}
        record[DiagnoseRun.RECORD_KEY] = {**diag, "checks": checks, "flags": [k for k, c in checks.items() if c["flag"]]}


@register_add_on("diagnose", 0, section="diagnostics", record_key="diagnostics")  # first: the others' checks join its list
@dataclass(frozen=True)
class DiagnoseRun:
    """The trust checks' options (:func:`robquant.evaluation.diagnose`), budgets in [0, 1] units."""

    eps: float
    n: int
    steps: int
    restarts: int
    square_queries: int
    autoattack: tuple[str, ...] | None
    collapse_eps: float
    tol: float
    integer: bool
    label: float | None = field(default=None, metadata=UNKEYED)  # eps as the study wrote it (/255)

    @classmethod
    def at(cls, eps_255: float, *, n: int = CHECK_EXAMPLES, steps: int = ATTACK_STEPS, restarts: int = RESTARTS,
           square_queries: int = CHECK_SQUARE_QUERIES, autoattack: Any = ("apgd-ce",),
           collapse_eps_255: float = COLLAPSE_EPS_255, tol: float = CHECK_TOL, integer: bool = True) -> "DiagnoseRun":
        """The trust checks at ``eps_255`` (/255), the defaults for what is not given: the one place a
        study's ``diagnostics`` and ``robquant attack --diagnose`` build it. ``tol`` is a fraction (0.01: one
        accuracy point); ``autoattack`` None or empty skips the AutoAttack comparison."""
        return cls(eps_255 / 255, n, steps, restarts, square_queries, tuple(autoattack) if autoattack else None,
                   collapse_eps_255 / 255, tol, integer, label=eps_255)

    def options(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["autoattack"] = list(self.autoattack) if self.autoattack else None
        return out

    def cost(self, surrogate: bool):
        return diagnose_cost(self.steps, self.square_queries, self.autoattack, surrogate, self.restarts)

    def passes(self, spec: Any) -> tuple[float, float]:
        c = self.cost(spec.surrogate is not None)
        return self.n * (c.gradients + c.forwards), self.n * c.gradients

    def work(self, spec: Any) -> tuple[float, float]:
        """The attacks on the examples classified correctly."""
        c, examples = self.cost(spec.surrogate is not None), self.n * ASSUMED_ACCURACY
        return examples * c.gradients, examples * c.forwards

    def run(self, step: AddOnStep) -> dict[str, Any]:
        """The trust checks, judged against the evaluation's robustness of record at their budget and
        reusing its reference PGD when that is the same attack run the same way."""
        options, ev = self.options(), step.ev
        eps, n = options["eps"], min(options["n"], ev.n)
        kept = record_mask(ev.robust_correct, eps)  # per example: robust under every attack run at eps
        reference = None
        # the first PGD's own mask (cascaded, only the first attack's is its own)
        first = next((i for i, run in enumerate(step.attacks) if run.name == "pgd"), None)
        if first is not None and (first == 0 or not ev.cascade):
            pgd = step.attacks[first]
            same = (pgd.options.get("steps", options["steps"]) == options["steps"]
                    and pgd.options.get("restarts", options["restarts"]) == options["restarts"]
                    and set(pgd.options) <= {"steps", "restarts"})
            mask = ev.robust_correct.get((pgd.label, eps))
            if same and mask is not None and len(mask) >= n:
                reference = mask[:n]
        return diagnose(step.model, step.test_set, record=kept[:n] if kept is not None and len(kept) >= n else None,
                        reference=reference, batch_size=step.batch_size, device=step.device, seed=step.seed,
                        surrogate=step.surrogate, surrogate_id=step.surrogate_id, progress=step.progress,
                        **{**options, "n": n})

    def checks(self, result: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {}  # its checks are the trust checks themselves

    def metrics(self, result: dict[str, Any]) -> dict[str, Any] | None:
        return None  # the checks that fired are the evaluation's flags


@register_add_on("bitflip", 20)
@dataclass(frozen=True)
class BitFlipRun:
    """The bit-flip attack's options (:func:`robquant.attacks.bitflip.bitflip_evaluation`): flips to bring
    clean accuracy on the first ``n`` test examples to chance + 1 point, per method and seed."""

    n: int
    seeds: tuple[int, ...]
    methods: tuple[str, ...]
    attack_batch: int
    search_cap: int
    random_cap: int

    @classmethod
    def of(cls, n: int, seeds: Any, methods: Any = BITFLIP_METHODS, *,
           attack_batch: int = BITFLIP_ATTACK_BATCH, search_cap: int = BITFLIP_SEARCH_CAP,
           random_cap: int = BITFLIP_RANDOM_CAP) -> "BitFlipRun":
        """The bit-flip run, checked, the defaults for what is not given: the one place a study's ``bitflip``
        and ``robquant attack --attack bitflip`` build it.

        Raises:
            ConfigError: an unknown or no method, no seed, a number below 1 (naming the option).
        """
        methods, seeds = tuple(methods), tuple(int(s) for s in seeds)
        bad = [m for m in methods if m not in BITFLIP_METHODS]
        if bad or not methods:
            raise ConfigError(f"bitflip methods must be among {', '.join(BITFLIP_METHODS)}, got {', '.join(bad) or 'none'}")
        if not seeds:
            raise ConfigError("bitflip seeds must name at least one seed")
        return cls(int(check_range("bitflip n", n, 1)), seeds, methods,
                   int(check_range("bitflip attack_batch", attack_batch, 1)),
                   int(check_range("bitflip search_cap", search_cap, 1)),
                   int(check_range("bitflip random_cap", random_cap, 1)))

    def options(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def cost(self, layers: int = 20, search_flips: int | None = None) -> tuple[float, float]:
        """(forward, backward) image passes: per search flip a gradient on the attack batch, one forward
        recorded, each layer's candidate tried (from its layer on: half a forward on average), accuracy
        on ``n``; random: accuracy at 1, 2, 4, ... flips up to the cap and a bisection. ``search_flips``
        per search (default the cap: at most)."""
        flips = self.search_cap if search_flips is None else min(search_flips, self.search_cap)
        fwd = bwd = 0.0
        if "search" in self.methods:
            fwd += flips * (self.attack_batch * (2 + layers / 2) + self.n)
            bwd += flips * self.attack_batch
        if "random" in self.methods:
            fwd += 2 * (math.log2(self.random_cap) + 1) * self.n
        return fwd * len(self.seeds), bwd * len(self.seeds)

    def passes(self, spec: Any) -> tuple[float, float]:
        return self.cost()

    def work(self, spec: Any) -> tuple[float, float]:
        """A search that breaks the model in :data:`~robquant.defaults.ASSUMED_SEARCH_FLIPS` flips (a gradient
        pass counts as one backward and one forward)."""
        forwards, backwards = self.cost(search_flips=ASSUMED_SEARCH_FLIPS)
        return backwards, forwards - backwards

    def run(self, step: AddOnStep) -> dict[str, Any]:
        """The flips to break the model, per method and seed (:mod:`robquant.attacks.bitflip`)."""
        from robquant.attacks.bitflip import bitflip_evaluation

        return bitflip_evaluation(step.model, step.test_set, device=step.device, progress=step.progress,
                                  **self.options())

    def checks(self, result: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {}

    def metrics(self, result: dict[str, Any]) -> dict[str, Any] | None:
        """Flips to break the model per method (the summary over seeds), the target accuracy and ``n``
        (:class:`BitFlipMetrics`), JSON-ready."""
        return BitFlipMetrics(result["summary"], result["target"], result["n"]).to_dict()


@dataclass(frozen=True)
class BitFlipMetrics:
    """The bit-flip attack's numbers of record: per method (``search``, ``random``) its runs' flips to break
    the model (None: not broken within ``cap``) with their summary
    (:func:`robquant.attacks.bitflip.flips_summary`), the target accuracy, and ``n`` test examples judged.
    The record keeps the methods beside ``target`` and ``n`` in one mapping (:meth:`to_dict`)."""

    methods: dict[str, dict[str, Any]]
    target: float | None
    n: int | None

    @classmethod
    def read(cls, metrics: dict[str, Any] | None) -> "BitFlipMetrics | None":
        """From a record's ``metrics["bitflip"]`` (None when the evaluation flipped no bits)."""
        if not metrics:
            return None
        return cls({k: v for k, v in metrics.items() if k not in ("target", "n")}, metrics.get("target"),
                   metrics.get("n"))

    def to_dict(self) -> dict[str, Any]:
        return {**self.methods, "target": self.target, "n": self.n}

    def flips(self, method: str) -> list[int | None]:
        """The flips of each run of ``method`` (None: not broken within its cap); empty when it did not run."""
        return list(self.methods.get(method, {}).get("flips", []))

    def cap(self, method: str) -> int:
        return self.methods[method]["cap"]


@register_add_on("bit_errors", 30)
@dataclass(frozen=True)
class BitErrorRun:
    """Random bit errors' options (:func:`robquant.attacks.biterrors.bit_error_evaluation`): accuracy on the
    first ``n`` test examples with each stored bit flipped with probability ``rate``, ``draws`` draws per
    rate, seeded by ``seed``."""

    n: int
    rates: tuple[float, ...]
    draws: int
    seed: int

    @classmethod
    def of(cls, n: int, rates: Any = BIT_ERROR_RATES, draws: int = BIT_ERROR_DRAWS, seed: int = 0) -> "BitErrorRun":
        """The run, checked: the one place a study's ``bit_errors`` builds it.

        Raises:
            ConfigError: no rate, a rate outside [0, 1], fewer than one draw or example (naming the option).
        """
        rates = tuple(sorted({float(check_range("bit_errors rates", r, 0.0, 1.0)) for r in rates}))
        if not rates:
            raise ConfigError("bit_errors rates must name at least one rate in [0, 1]")
        return cls(int(check_range("bit_errors n", n, 1)), rates, int(check_range("bit_errors draws", draws, 1)),
                   int(seed))

    def passes(self, spec: Any) -> tuple[float, float]:
        """A clean pass and one per rate and draw over the ``n`` examples; no gradient."""
        return float((1 + len(self.rates) * self.draws) * self.n), 0.0

    def work(self, spec: Any) -> tuple[float, float]:
        return 0.0, self.passes(spec)[0]

    def run(self, step: AddOnStep) -> dict[str, Any]:
        """Accuracy per rate and draw; the per-example outcomes go to ``biterrors.npz`` beside the record
        (``correct``: (rates, draws, n) bool) and the record keeps its sha256."""
        from robquant.attacks.biterrors import bit_error_evaluation
        from robquant.evaluation.outcomes import save_grid

        result, correct = bit_error_evaluation(step.model, step.test_set, n=self.n, rates=self.rates,
                                               draws=self.draws, seed=self.seed, batch_size=step.batch_size,
                                               device=step.device, progress=step.progress)
        return {**result, **save_grid(step.out / BIT_ERRORS_FILE, correct, rates=self.rates,
                                      draws=list(range(self.draws)))}

    def checks(self, result: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {}

    def metrics(self, result: dict[str, Any]) -> dict[str, Any] | None:
        """Mean accuracy per rate over its draws, the clean accuracy, ``n`` and the stored bits."""
        return {"rates": result["rates"], "accuracy": [sum(a) / len(a) for a in result["accuracy"]],
                "clean_accuracy": result["clean_accuracy"], "n": result["n"], "draws": result["draws"],
                "total_bits": result["total_bits"]}


@register_add_on("corruptions", 40)
@dataclass(frozen=True)
class CorruptionRun:
    """Natural corruptions' options (:mod:`robquant.data.corruptions`): clean accuracy on the first ``n``
    test examples corrupted by each of ``names`` at each of ``severities``, the corruptions seeded by ``seed``."""

    n: int
    names: tuple[str, ...]
    severities: tuple[int, ...]
    seed: int = 0

    @classmethod
    def of(cls, n: int, names: Any = None, severities: Any = (1, 2, 3, 4, 5), seed: int = 0) -> "CorruptionRun":
        """The run, checked: the one place a study's ``corruptions`` builds it.

        Raises:
            ConfigError: an unknown corruption, a severity outside 1..5, or none of either (naming the option).
        """
        from robquant.data.corruptions import CORRUPTIONS, SEVERITIES

        names = tuple(CORRUPTIONS) if names is None else tuple(names)
        bad = [c for c in names if c not in CORRUPTIONS]
        if bad or not names:
            raise ConfigError(f"corruptions names must be among {', '.join(CORRUPTIONS)}, got {', '.join(bad) or 'none'}")
        severities = tuple(sorted({int(v) for v in severities}))
        if not severities or any(v not in SEVERITIES for v in severities):
            raise ConfigError(f"corruptions severities must be among 1..5, got {list(severities)}")
        return cls(int(check_range("corruptions n", n, 1)), names, severities, int(seed))

    def passes(self, spec: Any) -> tuple[float, float]:
        """One forward pass over the ``n`` examples per corruption and severity."""
        return float(len(self.names) * len(self.severities) * self.n), 0.0

    def work(self, spec: Any) -> tuple[float, float]:
        return 0.0, self.passes(spec)[0]

    def run(self, step: AddOnStep) -> dict[str, Any]:
        """Accuracy per corruption and severity; the per-example outcomes go to ``corruptions.npz``."""
        from robquant.evaluation.corruption import corruption_evaluation
        from robquant.evaluation.outcomes import save_grid

        result, correct = corruption_evaluation(step.model, step.test_set, n=self.n, names=self.names,
                                                severities=self.severities, seed=self.seed,
                                                batch_size=step.batch_size, device=step.device,
                                                progress=step.progress)
        return {**result, **save_grid(step.out / CORRUPTIONS_FILE, correct, names=self.names,
                                      severities=self.severities)}

    def checks(self, result: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {}

    def metrics(self, result: dict[str, Any]) -> dict[str, Any] | None:
        """Mean accuracy per corruption (over its severities), over all, and ``n``."""
        acc = result["accuracy"]
        return {"per_corruption": {c: sum(v) / len(v) for c, v in acc.items()},
                "mean": sum(sum(v) for v in acc.values()) / sum(len(v) for v in acc.values()),
                "clean_accuracy": result["clean_accuracy"], "n": result["n"]}


# The study's options of each add-on (its section of ``evaluation``), whose ``run_for`` builds its run.

@add_on_section("diagnose")
class DiagnoseSection(Section):
    """The trust checks of :func:`robquant.evaluation.trust.diagnose`, run at the main eps."""

    HELP: ClassVar[str] = "the trust checks' options (on unless enabled: false)"

    enabled: bool = Field(True, description="run the checks on every evaluated model")
    seeds: Optional[list[int]] = Field(None, min_length=1, description="check only the models of these seeds "
                                       "(default: every model)")
    n: int = Field(CHECK_EXAMPLES, ge=1, description="test examples the checks use")
    steps: Optional[int] = Field(None, ge=1, description="reference PGD steps (default: the first PGD attack's; "
                                 "its restarts are that attack's)")
    square_queries: int = Field(CHECK_SQUARE_QUERIES, ge=1, description="Square's query budget")
    autoattack: Optional[list[AA_ATTACKS]] = Field(["apgd-ce"], description="AutoAttack sub-attacks compared with PGD "
                                                   "(null: skip)")
    collapse_eps: float = Field(COLLAPSE_EPS_255, gt=0,
                                description="budget (/255) by which accuracy must have collapsed")
    tol: float = Field(100 * CHECK_TOL, ge=0, description="tolerance of the attack comparisons, in accuracy points")
    integer: bool = Field(True, description="compare quantized models with their integer execution")

    def applies(self, seed: int) -> bool:
        return self.enabled and (self.seeds is None or seed in self.seeds)

    def run_for(self, ev: Any, precision: Any, seed: int) -> Any:
        """The trust checks' run for the model of ``seed`` (None where they do not apply), their reference PGD
        the study's first."""
        if not self.applies(seed):
            return None
        pgd = ev.reference_pgd()
        return DiagnoseRun.at(ev.main_eps, n=self.n, steps=self.steps or (pgd.steps if pgd else ATTACK_STEPS),
                              restarts=pgd.restarts if pgd else RESTARTS, square_queries=self.square_queries,
                              autoattack=self.autoattack, collapse_eps_255=self.collapse_eps, tol=self.tol / 100,
                              integer=self.integer)


@add_on_section("bitflip")
class BitFlipSection(Switched):
    """Every model with quantized weights attacked in its stored weights (:mod:`robquant.attacks.bitflip`):
    the flips that bring its clean accuracy to chance + 1 point, by the progressive bit search and by
    random flips. ``bitflip: true`` turns it on with the defaults."""

    HELP: ClassVar[str] = "true, or the bit-flip attack's options (off unless given)"

    enabled: bool = Field(False, description="count the bit flips that break every model with quantized weights")
    n: Optional[int] = Field(None, ge=1, description="test examples accuracy is judged on (default: the "
                             f"evaluation's n_test, at most {BITFLIP_N_MAX})")
    repeats: int = Field(BITFLIP_REPEATS, ge=1, description="attack batches per model, each a run of every method (the model of "
                         "seed s draws batches s*repeats .. (s+1)*repeats-1: no two models share one)")
    methods: list[Literal[BITFLIP_METHODS]] = Field(list(BITFLIP_METHODS), min_length=1,
                                                       description="search (progressive bit search), random")
    attack_batch: int = Field(BITFLIP_ATTACK_BATCH, ge=1, description="the search's examples, drawn from the test examples after "
                              "the first n")
    search_cap: int = Field(BITFLIP_SEARCH_CAP, ge=1, description="flips the search may make")
    random_cap: int = Field(BITFLIP_RANDOM_CAP, ge=1, description="flips the random baseline may make")
    seeds: Optional[list[int]] = Field(None, min_length=1, description="only the models of these seeds (default: "
                                       "every model)")

    def run_for(self, ev: Any, precision: Any, seed: int) -> Any:
        """The bit-flip run for a model of ``seed`` with quantized weights (None otherwise): attack batches of
        its own per seed, so that pooled runs are independent draws."""
        if not self.applies(seed) or precision.weight_bits >= 32:
            return None
        return BitFlipRun.of(self.n or min(ev.n_test or BITFLIP_N_MAX, BITFLIP_N_MAX),
                             range(seed * self.repeats, (seed + 1) * self.repeats), self.methods,
                             attack_batch=self.attack_batch, search_cap=self.search_cap, random_cap=self.random_cap)


@add_on_section("bit_errors")
class BitErrorsSection(Switched):
    """Every model with quantized weights evaluated with random bit errors in its stored weights
    (:mod:`robquant.attacks.biterrors`): each stored bit flipped independently with probability ``rate``
    (the bit error rate), ``draws`` draws per rate; the report plots accuracy against the rate.
    ``bit_errors: true`` turns it on with the defaults."""

    HELP: ClassVar[str] = "true, or the random bit errors' options (off unless given)"

    enabled: bool = Field(False, description="evaluate every model with quantized weights under random bit errors")
    rates: list[float] = Field(list(BIT_ERROR_RATES), min_length=1, description="bit error rates, each in [0, 1]: "
                               "the probability that one stored bit is flipped")
    draws: int = Field(BIT_ERROR_DRAWS, ge=1, description="independent draws of the flipped bits per rate (the model "
                       "of seed s draws from seed s)")
    n: Optional[int] = Field(None, ge=1, description="test examples accuracy is judged on (default: the "
                             f"evaluation's n_test, at most {BITFLIP_N_MAX})")
    seeds: Optional[list[int]] = Field(None, min_length=1, description="only the models of these seeds (default: "
                                       "every model)")

    @field_validator("rates")
    @classmethod
    def _rates(cls, v: list[float]) -> list[float]:
        bad = [r for r in v if not 0 <= r <= 1]
        if bad:
            raise ValueError(f"bit error rates must be in [0, 1] (a probability per stored bit), got {bad}")
        return v

    def run_for(self, ev: Any, precision: Any, seed: int) -> Any:
        """The bit errors' run for a model of ``seed`` with quantized weights (None otherwise): the model of seed
        s draws its errors from seed s, so that pooled draws are independent."""
        if not self.applies(seed) or precision.weight_bits >= 32:
            return None
        return BitErrorRun.of(self.n or min(ev.n_test or BITFLIP_N_MAX, BITFLIP_N_MAX), self.rates, self.draws, seed)


@add_on_section("corruptions")
class CorruptionsSection(Switched):
    """Every model evaluated on corrupted test images (:mod:`robquant.data.corruptions`, after CIFAR-10-C):
    clean accuracy per corruption and severity, beside the model's FP reference. ``corruptions: true``
    turns it on with the defaults."""

    HELP: ClassVar[str] = "true, or the natural corruptions' options (off unless given)"

    enabled: bool = Field(False, description="evaluate every model on corrupted test images")
    names: Optional[list[str]] = Field(None, min_length=1, description="the corruptions (default: every one "
                                       "robquant.data.corruptions defines)")
    severities: list[int] = Field([1, 2, 3, 4, 5], min_length=1, description="severities, each in 1..5")
    n: Optional[int] = Field(None, ge=1, description="test examples (default: the evaluation's n_test, at most "
                             f"{BITFLIP_N_MAX})")
    seeds: Optional[list[int]] = Field(None, min_length=1, description="only the models of these seeds (default: "
                                       "every model)")

    @field_validator("names")
    @classmethod
    def _names(cls, v: Optional[list[str]]) -> Optional[list[str]]:
        from robquant.data.corruptions import CORRUPTIONS

        bad = [c for c in v or [] if c not in CORRUPTIONS]
        if bad:
            raise ValueError(f"unknown corruptions {bad}; known: {', '.join(CORRUPTIONS)}")
        return v

    @field_validator("severities")
    @classmethod
    def _severities(cls, v: list[int]) -> list[int]:
        bad = [x for x in v if x not in (1, 2, 3, 4, 5)]
        if bad:
            raise ValueError(f"severities must be in 1..5, got {bad}")
        return v

    def run_for(self, ev: Any, precision: Any, seed: int) -> Any:
        """The corruptions' run for the model of ``seed``, every model's (the FP references among them)."""
        if not self.applies(seed):
            return None
        return CorruptionRun.of(self.n or min(ev.n_test or BITFLIP_N_MAX, BITFLIP_N_MAX), self.names, self.severities)
