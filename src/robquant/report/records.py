"""A study's results as flat rows, read from the store alone (no model is loaded, nothing is run).

Each row carries its evaluation's per-example outcomes (:class:`robquant.evaluation.Outcomes`); every
number in it is derived from them (:func:`aggregates`), and the report's comparisons pair rows
example by example through :func:`outcome_matrix`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from robquant.deploy.stage import DeployedMetrics
from robquant.evaluation.addons import BIT_ERRORS_FILE, CORRUPTIONS_FILE, BitFlipMetrics
from robquant.evaluation.outcomes import Outcomes, load_grid
from robquant.errors import ConfigError
from robquant.evaluation.stage import EvaluationMetrics
from robquant.modelfolder import ModelMetrics
from robquant.provenance import StageInfo
from robquant.quant.precision import parse_precision
from robquant.report.intervals import Estimate, estimate

CLEAN, PAPER, WORST = "clean", "paper", "worst"  # what a per-example series measures (else: an attack label)


def pipeline_label(method: str, strategy: str | None, init: str) -> str:
    """``PTQ from robust``, ``QAT/adversarial from random``, ..."""
    return f"{method.upper()}{'/' + strategy if strategy else ''} from {init}"


@dataclass(frozen=True)
class Row:
    """One (cell, seed) evaluation of a study, as every table, finding and figure reads it (:func:`collect`).

    Attributes:
        init, method, strategy, pipeline, precision: The cell (``pipeline``: :func:`pipeline_label`).
        act_bits, weight_bits, bits: Its bit-widths (``bits``: the common one when they agree, else None).
        fraction, seed, status: The training data's fraction, the seed, ``done`` or ``NC``.
        outcomes: The per-example evidence; every number below the status is made from it (:func:`aggregates`).
        clean, n: Clean accuracy on the ``n`` examples.
        main_eps: The main budget (/255).
        robustness, robustness_n: The worst case over attacks at the main budget, on the examples every
            attack covered.
        reference, reference_n, reference_attack: The paper's attack (the first PGD) alone at the main
            budget on all its examples (None without one).
        gap: The paper's attack minus the worst case, on the same examples.
        worst, worst_n, worst_attacks: Per budget ``{eps_255: ...}``: the worst case, its examples, its attacks.
        robust, robust_n: Per ``(attack, eps_255)``: accuracy and examples (cumulative when cascaded).
        cascade: Whether the evaluation cascaded.
        flags: The trust checks that fired.
        wall_s, passes: The quantization stage's wall time and image passes.
        bytes: The model's size.
        key: The evaluation's stage key.
        fp, fp_clean: The FP parent's key (None from random parameters) and its recorded clean accuracy.
        deployed, onnx: The deployed model's numbers on its runtimes (:class:`~robquant.deploy.stage.DeployedMetrics`)
            and the exported file (None unless asked).
        bitflip: Flips to break the model per method (:class:`~robquant.evaluation.addons.BitFlipMetrics`; None
            unless asked).
        bit_errors: Random bit errors' evidence (:class:`BitErrorEvidence`; None unless asked).
        corruptions: Natural corruptions' evidence (:class:`CorruptionEvidence`; None unless asked).
        history: The QAT training's per-epoch record (``epoch``, ``train_accuracy``, ``loss``, ...; None for PTQ).
    """

    init: str
    method: str
    strategy: str | None
    pipeline: str
    precision: str
    act_bits: int
    weight_bits: int
    bits: int | None
    fraction: float
    seed: int
    status: str
    outcomes: Outcomes
    clean: float
    n: int
    main_eps: float | None
    robustness: float | None
    robustness_n: int | None
    reference: float | None
    reference_n: int | None
    reference_attack: str | None
    gap: float | None
    worst: dict[float, float]
    worst_n: dict[float, int]
    worst_attacks: dict[float, list[str]]
    robust: dict[tuple[str, float], float]
    robust_n: dict[tuple[str, float], int]
    cascade: bool
    flags: list[str] = field(default_factory=list)
    wall_s: float | None = None
    passes: float | None = None
    bytes: int | None = None
    key: str = ""
    fp: str | None = None
    fp_clean: float | None = None
    deployed: DeployedMetrics | None = None
    onnx: str | None = None
    bitflip: BitFlipMetrics | None = None
    bit_errors: "BitErrorEvidence | None" = None
    corruptions: "CorruptionEvidence | None" = None
    history: list[dict[str, float]] | None = None

    @classmethod
    def of(cls, outcomes: Outcomes, reference_attack: str | None, main_eps: float | None, **cell: Any) -> "Row":
        """A row of the cell's fields, its numbers made from ``outcomes`` (:func:`aggregates`)."""
        return cls(**cell, **aggregates(outcomes, reference_attack, main_eps))

    def with_outcomes(self, outcomes: Outcomes, reference_attack: str | None = None, **changes: Any) -> "Row":
        """This row with other per-example evidence, or another attack as the paper's (its numbers made again),
        and ``changes``."""
        reference = self.reference_attack if reference_attack is None else reference_attack
        return replace(self, **aggregates(outcomes, reference, self.main_eps), **changes)


def collect(plan: Any, store: Any) -> list[Row]:
    """One :class:`Row` per (cell, seed) whose evaluation is finished."""
    rows, fp_clean = [], {}
    for cell, seed, key in plan.cells:
        row = store.get(key)
        if row is None or row["status"] not in ("done", "NC"):
            continue
        m = EvaluationMetrics.read(row["metrics"] or {})
        outcomes = Outcomes.load(store.artifact_dir(key))
        quant = store.get(row["parents"][0]) if row["parents"] else None
        q = (quant or {}).get("record") or {}  # the index holds each stage's full record
        p = parse_precision(cell.precision)
        train, made = q.get("train") or {}, StageInfo.read(q)
        planned = (made.planned_cost if made else None) or {}
        passes = train.get("passes_total")
        if passes is None:  # PTQ: calibration forwards only
            passes = planned.get("forward", 0) + planned.get("backward", 0)
        fp = made.parents.get("checkpoint") if made else None
        if fp is not None and fp not in fp_clean:  # the FP parent's clean accuracy, as its record states it
            fp_clean[fp] = ModelMetrics.read((store.get(fp) or {}).get("record") or {}).clean_accuracy
        rows.append(Row.of(
            outcomes, m.reference_attack, m.main_eps_255,
            init=cell.init, method=cell.method, strategy=cell.strategy,
            pipeline=pipeline_label(cell.method, cell.strategy, cell.init),
            precision=cell.precision, act_bits=p.act_bits, weight_bits=p.weight_bits,
            bits=p.act_bits if p.act_bits == p.weight_bits else None,
            fraction=cell.fraction, seed=seed, status=row["status"], flags=list(m.flags or []),
            wall_s=made.wall_s if made else None, passes=passes, bytes=(q.get("size") or {}).get("bytes"),
            key=key, fp=fp, fp_clean=fp_clean.get(fp), deployed=DeployedMetrics.read(m.deployed), onnx=_onnx(store, key), bitflip=BitFlipMetrics.read(m.bitflip),
            bit_errors=BitErrorEvidence.read(store.artifact_dir(key), m.bit_errors),
            corruptions=CorruptionEvidence.read(store.artifact_dir(key), m.corruptions),
            history=train.get("history") or None))
    return rows


@dataclass(frozen=True)
class BitErrorEvidence:
    """An evaluation's random bit errors, per example (``evaluation.bit_errors``; read by :meth:`read`).

    Attributes:
        rates: The bit error rates, in the order of ``correct``'s first axis.
        correct: ``(rates, draws, n)`` bool: each example right under each draw of each rate.
        clean_accuracy: The model's accuracy without errors on the same ``n`` examples.
        total_bits: The stored bits each rate applies to.
    """

    rates: list[float]
    correct: np.ndarray
    clean_accuracy: float
    total_bits: int

    @classmethod
    def read(cls, folder: Path, metrics: dict[str, Any] | None) -> "BitErrorEvidence | None":
        """From an evaluation's folder (its per-example file) and its metrics (None when it ran none)."""
        if metrics is None:
            return None
        axes, correct = load_grid(folder / BIT_ERRORS_FILE)
        return cls([float(r) for r in axes["rates"]], correct, metrics["clean_accuracy"], metrics["total_bits"])

    def at(self, rate: float, n: int) -> np.ndarray:
        """``(draws, n)``: the first ``n`` examples' outcomes under each draw at ``rate``."""
        return self.correct[self.rates.index(rate), :, :n]


@dataclass(frozen=True)
class CorruptionEvidence:
    """An evaluation's natural corruptions, per example (``evaluation.corruptions``; read by :meth:`read`).

    Attributes:
        names, severities: The corruptions and severities, in the order of ``correct``'s first two axes.
        correct: ``(names, severities, n)`` bool: each example right under each corruption and severity.
        clean_accuracy: The model's accuracy on the same ``n`` clean examples.
    """

    names: list[str]
    severities: list[int]
    correct: np.ndarray
    clean_accuracy: float

    @classmethod
    def read(cls, folder: Path, metrics: dict[str, Any] | None) -> "CorruptionEvidence | None":
        """From an evaluation's folder (its per-example file) and its metrics (None when it ran none)."""
        if metrics is None:
            return None
        axes, correct = load_grid(folder / CORRUPTIONS_FILE)
        return cls(list(axes["names"]), list(axes["severities"]), correct, metrics["clean_accuracy"])

    @property
    def n(self) -> int:
        return self.correct.shape[-1]

    def of(self, name: str, n: int) -> np.ndarray:
        """``(severities, n)``: the first ``n`` examples' outcomes under corruption ``name``."""
        return self.correct[self.names.index(name), :, :n]


def corruption_outcomes(runs: Sequence[Row], names: Sequence[str] | None = None) -> np.ndarray:
    """``(seeds, n)``: per seed and example, the share of the (corruption, severity) pairs it is right under
    (``names``: those corruptions, default every one all runs measured; examples cut to the fewest)."""
    runs = [r for r in runs if r.corruptions]
    if not runs:
        return np.zeros((0, 0))
    common = [c for c in runs[0].corruptions.names if all(c in r.corruptions.names for r in runs)]
    names = common if names is None else [c for c in names if c in common]
    n = min(r.corruptions.n for r in runs)
    return np.stack([np.concatenate([r.corruptions.of(c, n) for c in names]).mean(0) for r in runs])


def bit_error_curve(runs: Sequence[Row]) -> dict[float, Estimate]:
    """Accuracy per bit error rate of one cell's models (``runs``: its seeds, each with ``bit_errors``), with
    intervals that count the test examples and the draws: with several seeds each seed's outcomes are its
    mean over its draws (a seed's draws and its model vary together), with one seed its draws are the rows
    (:func:`~robquant.report.intervals.estimate`). Rates every run measured, ascending."""
    runs = [r for r in runs if r.bit_errors]
    if not runs:
        return {}
    common = sorted(set.intersection(*(set(r.bit_errors.rates) for r in runs)))
    n = min(r.bit_errors.correct.shape[-1] for r in runs)
    out = {}
    for rate in common:
        per_run = [r.bit_errors.at(rate, n) for r in runs]
        y = per_run[0].astype(float) if len(runs) == 1 else np.stack([c.mean(0) for c in per_run])
        out[rate] = estimate(y)
    return out


def aggregates(outcomes: Outcomes, reference_attack: str | None, main_eps: float | None) -> dict[str, Any]:
    """A row's numbers, all made from its per-example ``outcomes``.

    Fields: outcomes, clean (accuracy), n, robustness (worst case over attacks at the main eps, on
    the examples every attack covered: ``robustness_n``), reference (the paper's attack, the first
    PGD, alone at the main eps on all its examples; None without one), reference_attack,
    reference_n, gap (the paper's attack minus the worst case, on the same examples), worst
    ``{eps_255: acc}``, worst_n, worst_attacks ``{eps_255: [labels]}``, robust ``{(attack,
    eps_255): acc}`` and robust_n (each attack on its own examples; cumulative when the evaluation
    cascaded), cascade, main_eps.
    """
    s = outcomes.summary()
    worst_main = outcomes.worst(main_eps) if main_eps is not None else None
    ref = outcomes.attack(reference_attack, main_eps) if reference_attack and main_eps is not None else None
    gap = None
    if ref is not None and worst_main is not None and len(worst_main):
        gap = float(ref[: len(worst_main)].mean() - worst_main.mean())
    return {
        "outcomes": outcomes, "clean": s["clean_accuracy"], "n": s["n"], "main_eps": main_eps,
        "robustness": None if worst_main is None else s["worst_case"][main_eps][0],
        "robustness_n": None if worst_main is None else len(worst_main),
        "reference": None if ref is None else float(ref.mean()) if len(ref) else math.nan,
        "reference_n": None if ref is None else len(ref),
        "reference_attack": reference_attack, "gap": gap,
        "worst": {e: acc for e, (acc, _) in s["worst_case"].items()},
        "worst_n": {e: n for e, (_, n) in s["worst_case"].items()},
        "worst_attacks": {e: outcomes.attacks(e) for e in outcomes.budgets()},
        "robust": {k: acc for k, (acc, _) in s["robust"].items()},
        "robust_n": {k: n for k, (_, n) in s["robust"].items()},
        "cascade": outcomes.cascade,
    }


def per_example(row: Row, what: str, eps: float | None = None) -> np.ndarray | None:
    """A row's per-example outcomes of ``what`` at ``eps`` (default the main eps): ``clean``,
    ``paper`` (the paper's attack alone), ``worst`` (the robustness of record) or an attack label;
    ``(n_what,)`` bool over the first ``n_what`` of the row's examples, None if it was not run."""
    o = row.outcomes
    eps = row.main_eps if eps is None else eps
    if what == CLEAN:
        return o.clean
    if what == WORST:
        return o.worst(eps)
    if what == PAPER:
        return o.attack(row.reference_attack, eps) if row.reference_attack else None
    return o.attack(what, eps)


def outcome_matrix(conditions: Sequence[tuple[Sequence[Row], str]], eps: float | None = None
                   ) -> tuple[np.ndarray, list[int]]:
    """The per-example outcomes of ``k`` conditions, each ``(rows, what)`` (rows: one per seed; what:
    as :func:`per_example` takes it), on the seeds and examples they share: ``(y (S, n, k) float,
    seeds)``. Conditions are paired by seed (a seed missing from one condition is left out) and by
    example (the test indices every row covered); ``y`` is empty when one of them was not run.

    Raises:
        ConfigError: if the rows were evaluated on different data (the split's sha256 differs).
    """
    by_seed = [{r.seed: r for r in rows} for rows, _ in conditions]
    seeds = sorted(set.intersection(*(set(b) for b in by_seed))) if by_seed else []
    empty = np.zeros((0, 0, len(conditions))), []
    series = {}
    for c, (b, (_, what)) in enumerate(zip(by_seed, conditions)):
        for s in seeds:
            mask = per_example(b[s], what, eps)
            if mask is None:
                return empty
            series[(c, s)] = (b[s].outcomes.indices[: len(mask)], mask)
    if not series:
        return empty
    digests = {b[s].outcomes.dataset_sha256 for b in by_seed for s in seeds} - {""}
    if len(digests) > 1:
        raise ConfigError(f"cannot pair evaluations made on different test data (sha256 {sorted(digests)})")
    common = None
    for idx, _ in series.values():
        common = idx if common is None else np.intersect1d(common, idx)
    y = np.zeros((len(seeds), len(common), len(conditions)))
    for (c, s), (idx, mask) in series.items():
        order = np.argsort(idx, kind="stable")
        pos = order[np.searchsorted(idx, common, sorter=order)]
        y[seeds.index(s), :, c] = mask[pos]
    return y, seeds


def cell_estimate(rows: Sequence[Row], what: str, eps: float | None = None) -> Estimate:
    """The mean of ``what`` over a cell's seeds and examples, with its interval (seeds and test
    sample counted, :func:`robquant.report.intervals.estimate`)."""
    y, _ = outcome_matrix([(rows, what)], eps)
    return estimate(y[:, :, 0] if y.size else np.zeros((0, 0)))


def contrast(conditions: Sequence[tuple[Sequence[Row], str]], weights: Sequence[float],
             eps: float | None = None) -> Estimate:
    """The estimate of ``sum_k weights[k] * condition_k``, paired by seed and by example (a
    difference cell minus reference: weights ``(1, -1)``)."""
    y, _ = outcome_matrix(conditions, eps)
    return estimate(y @ np.asarray(weights, dtype=float) if y.size else np.zeros((0, 0)))


def nc_cells(rows: Sequence[Row]) -> set[tuple[str, str, float]]:
    """The cells ``(pipeline, precision, fraction)`` with a non-converged seed: *not comparable*,
    left out (and named) by every verdict, trend label, table and figure alike."""
    return {(r.pipeline, r.precision, r.fraction) for r in rows if r.status == "NC"}


def cell_name(method: str, strategy: str | None, init: str, precision: str | None = None) -> str:
    """``method/strategy/init`` (no strategy for PTQ), then `` precision`` when given: how the report names
    a pipeline and a cell (and how the paper's numbers are keyed)."""
    pipe = "/".join(p for p in (method, strategy, init) if p)
    return pipe if precision is None else f"{pipe} {precision}"


def by_cell(rows: Sequence[Row]) -> dict[tuple[str, str | None, str, str], list[Row]]:
    """``rows`` grouped by cell ``(method, strategy, init, precision)``, in the order first met."""
    out: dict[tuple[str, str | None, str, str], list[Row]] = {}
    for r in rows:
        out.setdefault((r.method, r.strategy, r.init, r.precision), []).append(r)
    return out


def comparable(rows: Sequence[Row]) -> list[Row]:
    """``rows`` without the not-comparable cells (:func:`nc_cells`)."""
    nc = nc_cells(rows)
    return [r for r in rows if (r.pipeline, r.precision, r.fraction) not in nc]


def _onnx(store: Any, key: str) -> str | None:
    """The ONNX file an evaluation exported (a deployed evaluation), if any."""
    path = store.artifact_dir(key) / "model.onnx"
    return str(path) if path.is_file() else None
