"""The paper's headline findings, each judged on a study's records, on the paper's own cells, under
the paper's attack (PGD-20 alone) and under the worst case over every attack run (the robustness of
record).

What a verdict may claim (ALGORITHMS.md sec. 10):

- A cell is compared with the robust FP reference (PTQ from robust at A32W32) of the same seed on
  the same test examples. The difference's interval counts the seeds and the test sample
  (:mod:`robquant.report.intervals`); where every seed shares one FP model the verdict holds for
  that FP model, and says so.
- *kept*: the interval's lower end is above ``-MARGIN`` (2 points). *lost*: the paper's size, the
  cell keeps at most ``LOST_SHARE`` (a quarter) of the reference's robustness (the paper: 0.1 of
  46.43), decided when the interval of ``cell - LOST_SHARE x reference`` is below 0. A drop beyond
  the margin that keeps more than a quarter is *eroded*, a verdict of its own.
- A cell with a non-converged seed is *not comparable*: named, and left out of the verdict.
- A *not significant* verdict states what the design could detect and the test examples / seeds it
  would take to decide, planned from the variance observed.
- Trend claims use the Table-1 rule on per-example draws (:func:`robquant.report.tables.sweep_trend`).
- The regime: the FP references' clean and robust accuracy beside the paper's (:func:`regime_table`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from robquant.report.intervals import MAX_EXAMPLES, Estimate
from robquant.report.records import Row, CLEAN, PAPER, WORST, cell_estimate, cell_name, contrast
from robquant.report.stats import format_estimate
from robquant.report.tables import RESAMPLED, Table, sweep_trend
from robquant.report.sections import report_table

MARGIN = 0.02
LOST_SHARE = 0.25
REPRODUCED, CONTRADICTED, NOT_SIGNIFICANT, NOT_RUN = ("reproduced", "contradicted", "not significant at this scale",
                                                      "not run")
ERODED = "eroded, not lost"  # a drop beyond the margin that keeps more than LOST_SHARE of the robustness
NOT_COMPARABLE = "not comparable (NC)"
REFERENCE = ("ptq", None, "robust", "A32W32")  # the robust FP model (PTQ at 32 bits changes nothing)
PAPER_REGIME = "CIFAR-10, ResNet-20, PGD-20 at 8/255"


@dataclass
class Finding:
    """One headline finding of the paper and our verdict under each measure.

    Attributes:
        evidence: Rows ``[cell, measure, value, delta, verdict, power]`` behind the verdicts.
        scope: What the verdict holds for (one shared FP model, or FP models that vary with the seed).
        points: Each judged cell's difference from the FP reference, ``(cell, measure, mean, low, high,
            verdict)`` (shares; the interval's ends), for the finding's figure.
        bounds: Where a claim of *lost* is decided, per measure: ``(measure, difference)`` at which a cell
            keeps ``LOST_SHARE`` of the reference's mean robustness (shares), drawn in the figure.
    """

    key: str
    claim: str
    paper: str
    verdicts: dict[str, str] = field(default_factory=dict)  # measure -> verdict
    evidence: list[list[str]] = field(default_factory=list)
    note: str = ""
    scope: str = ""
    points: list[tuple[str, str, float, float, float, str]] = field(default_factory=list)
    bounds: list[tuple[str, float]] = field(default_factory=list)


def measures(rows: list[Row]) -> dict[str, str]:
    """The robustness measures, ``{name: what}``: the paper's attack alone (``paper``, when the study
    runs a PGD attack) and the worst case over every attack (``worst``)."""
    ref = next((r.reference_attack for r in rows if r.reference_attack), None)
    attacks = next((r.worst_attacks for r in rows if r.worst_attacks), {})
    names = sorted({a for v in attacks.values() for a in (v or [])})
    out = {f"paper's attack ({ref})": PAPER} if ref is not None else {}
    out[f"worst case ({', '.join(names) or 'all attacks'})"] = WORST
    return out


def _fmt(est: Estimate, signed: bool = False) -> str:
    text = format_estimate(est, signed=signed, low=-1.0 if signed else 0.0)
    return f"{text} (n={est.seeds}x{est.examples})" if text else ""


def power_text(est: Estimate, distance: float, split: int = 0) -> str:
    """What the design detects, and the test examples and seeds that would decide a truth ``distance``
    from the boundary (planned from the variance observed; at most the ``split``'s examples): what a
    *not significant* verdict is given with."""
    text = f"detects >= {100 * est.detectable():.1f} points from the boundary (80 % power)"
    if math.isnan(est.se):
        return text
    where = f"{100 * abs(distance):.1f} points from it"
    if abs(distance) < 0.001:
        return text + "; the estimate sits on the boundary: no size decides it"
    examples, seeds = est.needed(distance, max_examples=split or MAX_EXAMPLES)
    if examples is None:
        if split and est.needed(distance, max_examples=MAX_EXAMPLES)[0] is not None:
            return text + f"; deciding {where} needs more than the test split's {split:,} examples"
        return text + f"; deciding {where} needs more than 100 seeds"
    if seeds > est.seeds:
        return text + (f"; deciding {where} needs more seeds: {seeds} with all {examples:,} test examples (the "
                       "seeds' variance dominates)")
    return text + f"; to decide {where}: about {examples:,} test examples" + (f" of {split:,}" if split else "") + \
        f" with {seeds} seeds"


def _split(runs: list[Row]) -> int:
    """Examples in the test split the runs were evaluated on (0 if unknown)."""
    return max((r.outcomes.split_size for r in runs), default=0)


def _kept(diff: Estimate, split: int = 0) -> tuple[str, str]:
    """Verdict and power text of the claim that a robustness is kept (the drop is within the margin)."""
    if diff.examples == 0 or math.isnan(diff.half):
        return NOT_SIGNIFICANT, ""
    if diff.low > -MARGIN:
        return REPRODUCED, ""
    if diff.high < -MARGIN:
        return CONTRADICTED, ""
    return NOT_SIGNIFICANT, power_text(diff, diff.mean + MARGIN, split)


def _lost(diff: Estimate, share: Estimate, split: int = 0) -> tuple[str, str]:
    """Verdict of the claim that a robustness is lost: ``share`` estimates cell - LOST_SHARE x reference."""
    if diff.examples == 0 or math.isnan(diff.half):
        return NOT_SIGNIFICANT, ""
    if share.high < 0:
        return REPRODUCED, ""
    if diff.low > -MARGIN:
        return CONTRADICTED, ""
    if diff.high < -MARGIN:
        return (ERODED, "") if share.low > 0 else (NOT_SIGNIFICANT, power_text(share, share.mean, split))
    return NOT_SIGNIFICANT, power_text(diff, diff.mean + MARGIN, split)


def _combine(verdicts: list[str]) -> str:
    """One verdict for a claim over several cells (not-comparable cells left out)."""
    verdicts = [v for v in verdicts if v != NOT_COMPARABLE]
    if not verdicts:
        return NOT_COMPARABLE
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    if all(v == REPRODUCED for v in verdicts):
        return REPRODUCED
    return ERODED if all(v in (REPRODUCED, ERODED) for v in verdicts) else NOT_SIGNIFICANT


def holm_retained(tests: list[tuple[list[str], float]], alpha: float = 0.025) -> list[tuple[list[str], float]]:
    """The cells called contradicted on their own (``row[4]``) whose contradiction Holm's step-down
    procedure over all ``tests`` does not keep at one-sided ``alpha`` (the 95 % interval's side): a
    claim over k cells is contradicted when one of them is, so each cell's test is corrected for
    the k (a claim needing every cell, such as reproduced, needs no correction)."""
    order = sorted(tests, key=lambda t: t[1])
    rejected = 0
    for k, (_, p) in enumerate(order):
        if p > alpha / (len(order) - k):
            break
        rejected += 1
    return [t for t in order[rejected:] if t[0][4] == CONTRADICTED]


def _pipe(rows: list[Row], method: str, strategy: str | None, init: str) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for r in rows:
        if (r.method, r.strategy, r.init) == (method, strategy, init):
            out.setdefault(r.precision, []).append(r)
    return out


def scope(runs: list[Row]) -> str:
    """What a comparison over ``runs`` holds for: one FP model shared by every seed, or FP models that
    vary with the seed (random parameters: a fresh initialisation per seed)."""
    fps = {r.fp for r in runs}
    seeds = len({r.seed for r in runs})
    if seeds < 2:
        return "one seed: the seeds' variance is not counted"
    if len(fps) == 1 and None not in fps:
        return "for one FP model (every seed shares it: FP training variance is not in the interval)"
    return "over FP models that vary with the seed"


def _against_reference(rows: list[Row], finding: Finding, pipe: tuple[str, str | None, str],
                       precisions: list[str] | None, claim: str) -> None:
    """Judge ``pipe``'s cells against the robust FP reference, seed by seed and example by example,
    under every measure; ``claim`` is ``kept`` or ``lost``."""
    ref = [r for r in rows if (r.method, r.strategy, r.init, r.precision) == REFERENCE]
    cells = _pipe(rows, *pipe)
    ordered = sorted(cells, key=lambda p: (cells[p][0].act_bits, cells[p][0].weight_bits))
    chosen = [p for p in (precisions or ordered) if p in cells and (pipe, p) != (REFERENCE[:3], REFERENCE[3])]
    label = cell_name(*pipe)
    ref_nc = any(r.status == "NC" for r in ref)
    if not ref or ref_nc or not chosen:
        need = [] if ref else ["PTQ from robust A32W32 (the FP reference)"]
        need += [] if chosen else [f"{label} at {', '.join(precisions or ['any precision'])}"]
        finding.verdicts = {m: NOT_COMPARABLE if ref_nc else NOT_RUN for m in measures(rows)}
        finding.note = "the FP reference did not converge" if ref_nc else "needs " + " and ".join(need)
        return
    nc = [p for p in chosen if any(r.status == "NC" for r in cells[p])]
    finding.scope = scope(ref + [r for p in chosen for r in cells[p]])
    if nc:
        finding.note = f"not comparable (NC): {label} {', '.join(nc)}"
    for measure, what in measures(rows).items():
        reference = cell_estimate(ref, what)
        finding.evidence.append(["robust FP reference (PTQ from robust A32W32)", measure, _fmt(reference), "", "", ""])
        if claim == "lost" and reference.examples:
            finding.bounds.append((measure, -(1 - LOST_SHARE) * reference.mean))
        verdicts, tests = [], []  # tests: (evidence row, p-value of the cell's contradiction)
        judged: list[tuple[list[str], Estimate]] = []
        for precision in chosen:
            runs = cells[precision]
            if precision in nc:
                verdicts.append(NOT_COMPARABLE)  # (the others' verdicts come from their evidence rows)
                finding.evidence.append([f"{label} {precision}", measure, "NC", "", NOT_COMPARABLE, ""])
                continue
            diff = contrast([(runs, what), (ref, what)], (1.0, -1.0))
            if claim == "kept":
                verdict, power = _kept(diff, _split(runs))
            else:
                verdict, power = _lost(diff, contrast([(runs, what), (ref, what)], (1.0, -LOST_SHARE)), _split(runs))
            row = [f"{label} {precision}", measure, _fmt(cell_estimate(runs, what)), _fmt(diff, signed=True), verdict,
                   power]
            finding.evidence.append(row)
            tests.append((row, diff.p_beyond(-MARGIN, below=claim == "kept")))
            judged.append((row, diff))
        for row, _ in holm_retained(tests):
            row[4], row[5] = NOT_SIGNIFICANT, (f"contradicted on its own, not after Holm's correction over the claim's "
                                               f"{len(tests)} cells")
        finding.points += [(row[0], measure, diff.mean, diff.low, diff.high, row[4]) for row, diff in judged]
        finding.verdicts[measure] = _combine([row[4] for row, _ in tests] + [v for v in verdicts])


def _trend(rows: list[Row], finding: Finding, pipe: tuple[str, str | None, str], field_: str,
           eps: float | None, expected: str, cells: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Judge the Table-1 trend of ``pipe`` over ``field_`` (``bits`` or ``act_bits``) at ``eps``:
    reproduced when the label is ``expected``, not significant when ``n.s.``, else contradicted."""
    group = [r for r in rows if (r.method, r.strategy, r.init) == pipe and getattr(r, field_) is not None
             and (field_ == "bits" or r.weight_bits == 32)]
    label = cell_name(*pipe)
    out = {}
    for column, what in measures(rows).items():
        lab, info = sweep_trend(group, field_, what, eps)
        out[column] = (lab, info)
        if len(info["bits"]) < 3:
            finding.verdicts[column] = NOT_RUN if not info["not_comparable"] else NOT_COMPARABLE
            continue
        verdict = REPRODUCED if lab == expected else NOT_SIGNIFICANT if lab == "n.s." else CONTRADICTED
        finding.verdicts[column] = verdict
        measure = column
        by_bits = {b: [r for r in group if getattr(r, field_) == b] for b in info["bits"]}
        if what == WORST:  # name the attacks that ran at this eps
            ran = sorted({a for r in group for a in r.worst_attacks.get(eps, [])})
            measure = f"worst case ({', '.join(ran)})"
        for b in info["bits"]:
            finding.evidence.append([f"{label} {cells.format(b=_bits(b))}", f"{measure} at {eps:g}/255",
                                     _fmt(cell_estimate(by_bits[b], what, eps)), "", "", ""])
        low, high = info["bits"][0], info["bits"][-1]
        ends = contrast([(by_bits[low], what), (by_bits[high], what)], (1.0, -1.0), eps)
        power = ""
        if lab == "n.s.":
            power = (power_text(ends, abs(ends.mean) - MARGIN, _split(group)) if abs(ends.mean) > MARGIN else
                     f"the ends differ by less than {100 * MARGIN:g} points: no size decides a trend")
        finding.evidence.append([f"{label}: trend over {cells.format(b='x')} (x = {', '.join(map(_bits, info['bits']))})",
                                 f"{measure} at {eps:g}/255", f"label {lab} (P(+) {info['p_plus']:.2f}, "
                                 f"P(-) {info['p_minus']:.2f})",
                                 f"{_bits(low)} minus {_bits(high)}: {_fmt(ends, signed=True)}", verdict, power])
    dropped = sorted({b for _, i in out.values() for b in i["dropped"]})
    nc = sorted({b for _, i in out.values() for b in i["not_comparable"]})
    notes = ([f"not comparable (NC): {', '.join(cells.format(b=_bits(b)) for b in nc)}"] if nc else []) + \
            ([f"fewer than 2 seeds, left out: {', '.join(cells.format(b=_bits(b)) for b in dropped)}"] if dropped else [])
    finding.note = "; ".join(filter(None, [finding.note, *notes]))
    finding.scope = scope(group)
    return out


def _bits(b: int) -> str:
    return "32" if b == 32 else str(b)


def _activation_trend(rows: list[Row], weak: float | None) -> list[Finding]:
    """Finding (iv), judged separately for every init the study ran a vanilla QAT activation-only
    sweep from (Table 1 states it for all three); Figure 2's number beside random initialization only."""
    out = []
    for init in ("random", "non_robust", "robust"):
        pipe = ("qat", "vanilla", init)
        sweep = [r for r in rows if (r.method, r.strategy, r.init) == pipe and r.weight_bits == 32]
        if len({r.act_bits for r in sweep}) < 3:
            continue
        how = "trained from scratch" if init == "random" else "fine-tuned"
        paper = ("Figure 2 (left): +33.47 points from FP to 2-bit activations at 1/255; Table 1: +" if init == "random"
                 else "Table 1: + (no number given for this init)")
        f = Finding(f"activation_bits_weak/{init}", f"Against weak attacks ({weak:g}/255), lower activation bits give "
                    f"higher robustness in vanilla QAT from {init} parameters ({how})" if weak is not None else
                    f"Against weak attacks, lower activation bits give higher robustness in vanilla QAT from {init}",
                    paper)
        if weak is None:
            f.verdicts = {m: NOT_RUN for m in measures(rows)}
            f.note = "needs a weak eps (evaluation.weak_eps, or an eps <= main_eps / 4)"
            out.append(f)
            continue
        _trend(rows, f, pipe, "act_bits", weak, "+", "A{b}W32")
        if init == "random":
            _figure2_number(sweep, f, weak)
        _accuracy_converged(sweep, f)
        out.append(f)
    if not out:
        f = Finding("activation_bits_weak", "Against weak attacks, lower activation bits give higher robustness in "
                    "vanilla QAT", "Figure 2 (left), Table 1: +")
        f.verdicts = {m: NOT_RUN for m in measures(rows)}
        f.note = "needs QAT/vanilla at >= 3 activation-only precisions (AxW32, A32W32 included) from some init"
        out.append(f)
    return out


def _figure2_number(sweep: list[Row], f: Finding, weak: float) -> None:
    """Ours beside Figure 2's +33.47 points (2-bit activations minus FP at 1/255, PGD-20)."""
    by_bits = {b: [r for r in sweep if r.act_bits == b] for b in (2, 32)}
    if not all(by_bits.values()) or any(r.status == "NC" for v in by_bits.values() for r in v):
        return
    diff = contrast([(by_bits[2], PAPER), (by_bits[32], PAPER)], (1.0, -1.0), weak)
    if diff.examples:
        f.evidence.append(["A2W32 minus A32W32 (Figure 2: +33.47 at 1/255)", f"paper's attack at {weak:g}/255", "",
                           _fmt(diff, signed=True), "", ""])


def _accuracy_converged(sweep: list[Row], f: Finding) -> None:
    """Name the low-bit cells of a sweep that are less accurate than its A32W32 by more than the
    margin (with confidence): there the trend measures lost accuracy as much as robustness."""
    fp = [r for r in sweep if r.act_bits == 32]
    if not fp or any(r.status == "NC" for r in fp):
        return
    short = []
    for b in sorted({r.act_bits for r in sweep} - {32}):
        runs = [r for r in sweep if r.act_bits == b]
        if any(r.status == "NC" for r in runs):
            continue
        diff = contrast([(runs, CLEAN), (fp, CLEAN)], (1.0, -1.0))
        if diff.examples and diff.high < -MARGIN:
            short.append(f"A{b}W32 {100 * diff.mean:+.1f} ± {100 * diff.half:.1f}")
    if short:
        f.note = "; ".join(filter(None, [f.note, "less accurate than A32W32 (clean, not converged in accuracy): "
                                         + ", ".join(short) + "; the trend there measures lost accuracy as much as "
                                         "robustness"]))


def findings(rows: list[Row], weak_eps: float | None, main_eps: float) -> list[Finding]:
    """Judge the paper's headline findings on ``rows`` (the report's rows, top data fraction only)."""
    top = max((r.fraction for r in rows), default=1.0)
    rows = [r for r in rows if r.fraction == top]
    out = []
    f = Finding("ptq_keeps", f"PTQ of robust parameters keeps the FP model's robustness at A8W8 and A4W4 "
                f"({main_eps:g}/255)", "Table 2: 46.43 (FP) -> 46.58 (A8W8), 47.84 (A4W4)")
    _against_reference(rows, f, ("ptq", None, "robust"), ["A8W8", "A4W4"], "kept")
    out.append(f)
    f = Finding("ptq_trend", f"PTQ of robust parameters: robustness decreases as the bit-width decreases "
                f"({main_eps:g}/255)", "Table 1: - (beside Table 2's numbers, which rise at A4W4)")
    _trend(rows, f, ("ptq", None, "robust"), "bits", main_eps, "-", "A{b}W{b}")
    out.append(f)
    f = Finding("vanilla_qat_loses", f"Vanilla QAT from robust parameters loses the robustness ({main_eps:g}/255)",
                f"Table 2: 46.43 (FP) -> 0.00-0.13 at every precision (lost = at most {LOST_SHARE:g} of the FP "
                "reference kept)")
    _against_reference(rows, f, ("qat", "vanilla", "robust"), None, "lost")
    out.append(f)
    f = Finding("adversarial_qat_keeps", f"Adversarial QAT from robust parameters keeps it ({main_eps:g}/255)",
                "Table 2: 46.43 (FP) -> 47.36-48.48 at A4W4-A8W8")
    _against_reference(rows, f, ("qat", "adversarial", "robust"), None, "kept")
    out.append(f)
    out += _activation_trend(rows, weak_eps)
    return out


@report_table(20, "rows", "main_eps", "setup", "paper_regime")
def regime_table(rows: list[Row], main_eps: float, setup: str, paper: dict[str, Any]) -> Table:
    """The FP references this study's verdicts were judged against, beside the paper's: a verdict
    speaks for the regime it was judged in."""
    top = max((r.fraction for r in rows), default=1.0)
    rows = [r for r in rows if r.fraction == top]
    out = []
    for init in ("robust", "non_robust"):
        ref = [r for r in rows if (r.method, r.init, r.precision) == ("ptq", init, "A32W32")]
        theirs = paper.get(init, {})
        theirs_text = [f"{theirs['clean']:.2f}" if "clean" in theirs else "", f"{theirs['pgd20']:.2f}"
                       if "pgd20" in theirs else ""]
        if ref and not any(r.status == "NC" for r in ref):
            out.append([f"{init} FP (PTQ A32W32 cell)", _fmt(cell_estimate(ref, CLEAN)), _fmt(cell_estimate(ref, PAPER)),
                        _fmt(cell_estimate(ref, WORST)), *theirs_text])
            continue
        fps = {r.fp: r.fp_clean for r in rows if r.init == init and r.fp and r.fp_clean is not None}
        if fps:
            clean = sum(fps.values()) / len(fps)
            out.append([f"{init} FP (its training record; {len(fps)} model{'s' if len(fps) > 1 else ''})",
                        f"{100 * clean:.1f}", "", "", *theirs_text])
    return Table("regime", "The regime: the FP models the verdicts start from, beside the paper's",
                 ["FP model", "clean %", "paper's attack %", "worst case %", "the paper: clean %",
                  "the paper: PGD-20 %"], out,
                 [f"Ours: {setup}, robustness at {main_eps:g}/255; the paper: {PAPER_REGIME}. A verdict speaks for "
                  f"the regime it was judged in. Intervals: {RESAMPLED}; (n=seeds x examples)."])


def findings_tables(found: list[Finding]) -> list[Table]:
    """The Findings summary (first in every report) and the cells behind each verdict."""
    measures_ = list(dict.fromkeys(m for f in found for m in f.verdicts))
    summary = Table("findings", "Findings: the paper's headline claims, judged on this study",
                    ["finding", "the paper", *[f"verdict: {m}" for m in measures_], "holds for"],
                    [[f.claim + (f" [{f.note}]" if f.note else ""), f.paper,
                      *[f.verdicts.get(m, NOT_RUN) for m in measures_], f.scope] for f in found],
                    [f"A cell is compared with the robust FP reference of the same seed on the same test examples; "
                     f"{RESAMPLED}. kept = the interval of the drop lies above -{100 * MARGIN:g} points; lost = at most "
                     f"{LOST_SHARE:g} of the reference's robustness kept (the paper's size); eroded = a drop beyond "
                     f"{100 * MARGIN:g} points that keeps more than that. 'not significant at this scale': the data "
                     "support neither (the cells' rows say what would decide it). A claim over several cells is contradicted "
                     "when one cell is after Holm's correction over its cells (one-sided, 2.5 %); reproduced needs every "
                     "cell. Trends: the Table-1 rule on draws "
                     "over seeds and examples. NC cells are not comparable and left out."], [f.key for f in found])
    evidence = Table("findings_evidence", "Findings: the cells behind each verdict (%, mean ± 95 % half-width over "
                     "seeds and test examples, n = seeds x examples; delta = cell minus the FP reference of the same "
                     "seed on the same examples)",
                     ["finding", "cell", "measure", "value", "delta", "verdict", "power (not significant)"],
                     [[f.key, *e] for f in found for e in f.evidence])
    return [summary, evidence]


def _paper_verdicts(found: list[Finding], rows: list[Row]) -> tuple[dict[str, str], dict[str, str]]:
    """Each finding's verdict under the paper's attack, and each cell's (``finding: cell``) behind it."""
    name = next((n for n, w in measures(rows).items() if w == PAPER), None)
    findings_ = {f.claim: f.verdicts.get(name, NOT_RUN) for f in found}
    cells = {f"{f.claim}: {e[0]}": e[4] for f in found for e in f.evidence if e[1] == name and e[4]}
    return findings_, cells


@report_table(45, "rows", "grid", "weak", "main_eps")
def pixel_grid_table(rows: list[Row], grid: str | None, weak_eps: float | None,
                     main_eps: float) -> Table | None:
    """The paper's attack beside the same attack kept on the 8-bit pixel grid (the attack labelled
    ``grid``, run with ``pixel_grid``), per pipeline and precision at the main eps, paired by seed and
    example; and every verdict (a finding's, or one of its cells') that changes when the pixel-valid
    attack is taken as the paper's attack. None when no row ran it (or the study runs none: ``grid`` None)."""
    from robquant.report.records import by_cell, comparable

    if grid is None:
        return None

    ran = [r for r in comparable(rows) if r.reference_attack and r.reference_attack != grid
           and r.outcomes.attack(grid, r.main_eps) is not None]
    if not ran:
        return None
    ref = ran[0].reference_attack
    on_grid = [r.with_outcomes(r.outcomes, grid) for r in rows]
    base, base_cells = _paper_verdicts(findings(rows, weak_eps, main_eps), rows)
    alt, alt_cells = _paper_verdicts(findings(on_grid, weak_eps, main_eps), on_grid)
    changed = {k: (v, alt_cells.get(k, NOT_RUN)) for k, v in base_cells.items() if alt_cells.get(k, NOT_RUN) != v}
    out = []
    for (method, strategy, init, precision), runs in by_cell(ran).items():
        pipeline = runs[0].pipeline
        cell = cell_name(method, strategy, init, precision)
        flips = [f"{k.split(': ')[0]}: {a} -> {b}" for k, (a, b) in changed.items() if k.endswith(f": {cell}")]
        diff = contrast([(runs, grid), (runs, ref)], (1.0, -1.0))
        out.append([pipeline, precision, str(len(runs)), _fmt(cell_estimate(runs, ref)),
                    _fmt(cell_estimate(runs, grid)), _fmt(diff, signed=True), "; ".join(flips) or "no"])
    notes = [f"At {main_eps:g}/255. {ref}: the paper's attack; {grid}: the same attack with every adversarial input "
             "kept on the 8-bit grid (k/255), as an image that was saved; paired by seed and test example (a "
             "difference > 0: the pixel-valid attack is weaker). Verdict changes: the cell's verdict in a finding "
             "when the pixel-valid attack is taken as the paper's."]
    moved = [f"{claim}: {v} -> {alt.get(claim, NOT_RUN)}" for claim, v in base.items() if alt.get(claim, NOT_RUN) != v]
    notes.append("Findings whose verdict changes under the pixel-valid attack: " + ("; ".join(moved) if moved else
                                                                                    "none"))
    return Table("pixel_grid", f"Pixel-valid inputs: robustness (%) under {ref} and under {grid} (8-bit grid)",
                 ["pipeline", "precision", "seeds", ref, grid, f"{grid} - {ref}", "verdict changes"], out, notes)


@report_table(10, "found")
def findings_table(found: list[Table]) -> Table:
    """The Findings table (first in the report)."""
    return found[0]


@report_table(30, "found")
def evidence_table(found: list[Table]) -> Table:
    """The cells behind each verdict."""
    return found[1]

