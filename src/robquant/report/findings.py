"""The paper's headline findings, each judged on a study's records: reproduced, contradicted, or not
significant at this scale, under the paper's attack (PGD-20 alone) and under the worst case over
every attack run (the robustness of record).

Each finding compares cells seed by seed (a quantized model with the robust FP reference of its
seed, both evaluated on the same test examples), so the interval is that of the paired differences:
mean +- the 95 % t half-width over seeds. A robustness is *kept* when the drop is smaller than
``MARGIN`` (2 points, the smallest effect the trend labels count) with 95 % confidence, and *lost*
when the drop is larger than ``MARGIN`` with 95 % confidence. The trend finding uses the Table-1
trend label (paired bootstrap over seeds; see :mod:`robquant.report.stats`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from robquant.report.stats import format_interval, t_interval, trend_label
from robquant.report.tables import Table

MARGIN = 0.02
REPRODUCED, CONTRADICTED, NOT_SIGNIFICANT, NOT_RUN = ("reproduced", "contradicted", "not significant at this scale",
                                                      "not run")
REFERENCE = ("ptq", None, "robust", "A32W32")  # the robust FP model (PTQ at 32 bits changes nothing)


@dataclass
class Finding:
    """One headline finding of the paper and our verdict under each measure."""

    key: str
    claim: str
    paper: str
    verdicts: dict[str, str] = field(default_factory=dict)  # measure -> verdict
    evidence: list[list[str]] = field(default_factory=list)  # rows: cell, measure, value, delta, verdict
    note: str = ""


def measures(rows: list[dict[str, Any]]) -> dict[str, str]:
    """The robustness measures, ``{name: kind}``: the paper's attack alone (``paper``, when the study
    runs a PGD attack) and the worst case over every attack (``worst``)."""
    ref = next((r["reference_attack"] for r in rows if r.get("reference_attack")), None)
    attacks = next((r.get("worst_attacks", {}) for r in rows if r.get("worst_attacks")), {})
    names = sorted({a for v in attacks.values() for a in (v or [])})
    out = {f"paper's attack ({ref})": "paper"} if ref is not None else {}
    out[f"worst case ({', '.join(names) or 'all attacks'})"] = "worst"
    return out


def _value(r: dict[str, Any], kind: str, eps: float | None = None) -> float | None:
    """A row's robustness under measure ``kind`` at ``eps`` (default: the main eps)."""
    if eps is None:
        return r.get("reference") if kind == "paper" else r.get("robustness")
    return r["robust"].get((r.get("reference_attack"), eps)) if kind == "paper" else r["worst"].get(eps)


def _interval(values: list[float], signed: bool = False) -> str:
    """``mean ± half (n=k)`` in points, the interval clipped to what the quantity can take (0-100 %,
    a difference -100-+100 points); signed for differences."""
    n = len([v for v in values if v is not None and not math.isnan(v)])
    if n == 0:
        return ""
    text = format_interval(values, signed=signed, low=-1.0 if signed else 0.0)
    return f"{text} (n={n})"


def _keeps_or_loses(diffs: list[float], want: str) -> str:
    """Verdict of paired drops ``diffs`` (cell minus reference) for a claim that robustness is
    ``kept`` or ``lost``."""
    mean, half, n = t_interval(diffs)
    if n < 2 or math.isnan(half):
        return NOT_SIGNIFICANT
    kept, lost = mean - half > -MARGIN, mean + half < -MARGIN
    if want == "kept":
        return REPRODUCED if kept else CONTRADICTED if lost else NOT_SIGNIFICANT
    return REPRODUCED if lost else CONTRADICTED if kept else NOT_SIGNIFICANT


def _combine(verdicts: list[str]) -> str:
    if not verdicts:
        return NOT_RUN
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    return REPRODUCED if all(v == REPRODUCED for v in verdicts) else NOT_SIGNIFICANT


def _cells(rows: list[dict[str, Any]], method: str, strategy: str | None, init: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if (r["method"], r["strategy"], r["init"]) == (method, strategy, init):
            out.setdefault(r["precision"], []).append(r)
    return out


def _against_reference(rows: list[dict[str, Any]], finding: Finding, pipe: tuple[str, str | None, str],
                       precisions: list[str] | None, want: str) -> None:
    """Judge ``pipe``'s cells against the robust FP reference, seed by seed, under every measure."""
    label = "/".join(p for p in pipe if p)
    ref = {r["seed"]: r for r in rows if (r["method"], r["strategy"], r["init"], r["precision"]) == REFERENCE
           and r["status"] == "done"}
    cells = _cells(rows, *pipe)
    chosen = [p for p in (precisions or sorted(cells)) if p in cells and (p, pipe) != (REFERENCE[3], REFERENCE[:3])]
    if not ref or not chosen:
        need = [] if ref else ["PTQ from robust A32W32 (the FP reference)"]
        need += [] if chosen else [f"{label} at {', '.join(precisions or ['any precision'])}"]
        finding.verdicts = {m: NOT_RUN for m in measures(rows)}
        finding.note = "needs " + " and ".join(need)
        return
    for measure, kind in measures(rows).items():
        def value(r: dict[str, Any]) -> float | None:
            return _value(r, kind)

        base = [value(r) for r in ref.values() if value(r) is not None]
        finding.evidence.append([f"{'/'.join(p for p in REFERENCE[:3] if p)} A32W32 (FP reference)", measure,
                                 _interval(base), "", ""])
        verdicts = []
        for precision in chosen:
            runs = cells[precision]
            if any(r["status"] == "NC" for r in runs):
                verdicts.append(CONTRADICTED if want == "kept" else REPRODUCED)
                finding.evidence.append([f"{label} {precision}", measure, "NC", "", verdicts[-1]])
                continue
            diffs = [value(r) - value(ref[r["seed"]]) for r in runs
                     if r["seed"] in ref and value(r) is not None and value(ref[r["seed"]]) is not None]
            verdicts.append(_keeps_or_loses(diffs, want))
            finding.evidence.append([f"{label} {precision}", measure,
                                     _interval([value(r) for r in runs if value(r) is not None]),
                                     _interval(diffs, signed=True), verdicts[-1]])
        finding.verdicts[measure] = _combine(verdicts)


def _activation_trend(rows: list[dict[str, Any]], finding: Finding, weak_eps: float | None) -> None:
    pipes = [("qat", "vanilla", i) for i in ("random", "non_robust", "robust")]
    sweep = {p: [r for r in rows if (r["method"], r["strategy"], r["init"]) == p and r["weight_bits"] == 32
                 and r["status"] == "done"] for p in pipes}
    pipe = next((p for p in pipes if len({r["act_bits"] for r in sweep[p]}) >= 3), None)
    if pipe is None or weak_eps is None:
        finding.verdicts = {m: NOT_RUN for m in measures(rows)}
        finding.note = ("needs an evaluation eps <= 2/255" if weak_eps is None else
                        "needs QAT/vanilla at >= 3 activation-only precisions (AxW32, A32W32 included)")
        return
    label = f"QAT/vanilla from {pipe[2]}"
    for measure, kind in measures(rows).items():
        values: dict[int, dict[int, float]] = {}
        for r in sweep[pipe]:
            v = _value(r, kind, weak_eps)
            if v is not None:
                values.setdefault(r["act_bits"], {})[r["seed"]] = v
        label_, info = trend_label(values)
        verdict = (REPRODUCED if label_ == "+" else NOT_SIGNIFICANT if label_ == "n.s." else CONTRADICTED)
        finding.verdicts[measure] = verdict
        for bits in sorted(values):
            finding.evidence.append([f"{label} A{bits}W32", f"{measure} at {weak_eps:g}/255",
                                     _interval(list(values[bits].values())), "", ""])
        finding.evidence.append([f"{label}: trend over activation bits", f"{measure} at {weak_eps:g}/255",
                                 f"label {label_}", f"P(+) = {info['p_plus']:.2f}", verdict])


def findings(rows: list[dict[str, Any]], eps_list: list[float], main_eps: float) -> list[Finding]:
    """Judge the paper's headline findings on ``rows`` (the report's rows, top data fraction only)."""
    top = max((r["fraction"] for r in rows), default=1.0)
    rows = [r for r in rows if r["fraction"] == top]
    weak = max((e for e in eps_list if e <= 2), default=None)
    out = []
    f = Finding("ptq_keeps", f"PTQ of robust parameters keeps the FP model's robustness at A8W8 and A4W4 "
                f"({main_eps:g}/255)", "Table 2: 46.43 (FP) -> 46.58 (A8W8), 47.84 (A4W4)")
    _against_reference(rows, f, ("ptq", None, "robust"), ["A8W8", "A4W4"], "kept")
    out.append(f)
    f = Finding("vanilla_qat_loses", f"Vanilla QAT from robust parameters loses the robustness ({main_eps:g}/255)",
                "Table 2: 46.43 (FP) -> 0.00-0.13 at every precision")
    _against_reference(rows, f, ("qat", "vanilla", "robust"), None, "lost")
    out.append(f)
    f = Finding("adversarial_qat_keeps", f"Adversarial QAT from robust parameters keeps it ({main_eps:g}/255)",
                "Table 2: 46.43 (FP) -> 47.36-48.48 at A4W4-A8W8")
    _against_reference(rows, f, ("qat", "adversarial", "robust"), None, "kept")
    out.append(f)
    f = Finding("activation_bits_weak", "Against weak attacks (eps <= 2/255), lower activation bits give higher "
                "robustness in vanilla QAT", "Figure 2 (left), Table 1: + (e.g. +33.47 points from FP to 2-bit "
                "activations at 1/255)")
    _activation_trend(rows, f, weak)
    out.append(f)
    return out


def findings_tables(found: list[Finding]) -> list[Table]:
    """The Findings summary (first in every report) and the cells behind each verdict."""
    measures_ = list(dict.fromkeys(m for f in found for m in f.verdicts))
    summary = Table("findings", "Findings: the paper's headline claims, judged on this study",
                    ["finding", "the paper", *[f"verdict: {m}" for m in measures_]],
                    [[f.claim + (f" [{f.note}]" if f.note else ""), f.paper,
                      *[f.verdicts.get(m, NOT_RUN) for m in measures_]] for f in found],
                    [f"Cells are compared with the robust FP reference of the same seed on the same test examples: "
                     f"kept = the drop is below {100 * MARGIN:g} points with 95 % confidence (t interval of the "
                     f"paired differences over seeds), lost = above it. 'not significant at this scale': the "
                     f"seeds support neither. The trend uses the Table-1 rule (paired over seeds)."])
    evidence = Table("findings_evidence", "Findings: the cells behind each verdict (robustness %, mean ± 95 % t "
                     "half-width over seeds; delta = cell minus the FP reference of the same seed)",
                     ["finding", "cell", "measure", "robustness", "delta", "verdict"],
                     [[f.key, *e] for f in found for e in f.evidence])
    return [summary, evidence]
