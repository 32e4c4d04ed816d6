"""The paper's tables from report rows, with mean +- 95 % t interval over seeds, and their renderings."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from robquant.deploy.stage import DeployedMetrics
from robquant.report.intervals import Estimate, estimate
from robquant.report.records import (Row, CLEAN, PAPER, WORST, bit_error_curve, by_cell, cell_estimate, cell_name,
                                     contrast, corruption_outcomes, outcome_matrix, per_example)
from robquant.report.stats import format_estimate, format_interval, trend_label_examples
from robquant.report.sections import report_table


@dataclass
class Table:
    """A rendered-agnostic table: a title, column names, rows of strings and notes."""

    name: str
    title: str
    columns: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    row_keys: list[str] = field(default_factory=list)  # what each row is about, where other tables refer to it

    def markdown(self) -> str:
        out = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |",
               "|" + "|".join("---" for _ in self.columns) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in self.rows]
        out += [""] + [f"{n}" for n in self.notes]
        return "\n".join(out).rstrip() + "\n"

    def csv(self) -> str:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(self.columns)
        writer.writerows(self.rows)
        return buf.getvalue()

    def latex(self) -> str:
        def esc(s: str) -> str:
            for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                         ("±", r"$\pm$"), ("~", r"$\sim$")):
                s = s.replace(a, b)
            return s

        lines = [r"\begin{table}[t]", r"\centering", rf"\caption{{{esc(self.title)}}}",
                 r"\begin{tabular}{" + "l" * len(self.columns) + "}", r"\toprule",
                 " & ".join(esc(c) for c in self.columns) + r" \\", r"\midrule"]
        lines += [" & ".join(esc(c) for c in r) + r" \\" for r in self.rows]
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        from robquant.report.page import table_html  # the page's renderer (it imports this module)

        return table_html(self)


def _fmt(values: Sequence[float]) -> str:
    return format_interval(values)


def _estimate(runs: list[Row], what: str) -> Estimate:
    """A cell's estimate of ``what`` (``gap``: the paper's attack minus the worst case, paired)."""
    if what == "gap":
        return contrast([(runs, PAPER), (runs, WORST)], (1.0, -1.0))
    return cell_estimate(runs, what)


def _cell(runs: list[Row], what: str, n_all: int, mark: bool = True) -> str:
    if not runs:
        return ""
    if any(r.status == "NC" for r in runs):
        return "NC"
    est = _estimate(runs, what)
    text = format_estimate(est, signed=what == "gap", low=-1.0 if what == "gap" else 0.0)
    if len(runs) != n_all:
        text += f" (n={len(runs)})"
    return text + (" !" if mark and any(r.flags for r in runs) else "")


RESAMPLED = ("the 95 % interval counts the seeds and the test sample (crossed seeds x examples: every seed is "
             "evaluated on the same test examples; see robquant.report.intervals)")


def _seeds_note(rows: list[Row]) -> str:
    n = len({r.seed for r in rows})
    return (f"Cells: mean over seeds and test examples ± half-width of the 95 % interval; {RESAMPLED}; n = {n} seeds "
            "unless marked; an interval that would leave 0-100 % is clipped and shown as (low–high); "
            "NC: a seed did not converge (not comparable: left out of every verdict, trend and figure); "
            "!: a trust check fired (see the diagnostics).")


def _precisions(rows: list[Row]) -> list[str]:
    def order(p: str) -> tuple[int, int]:
        r = next(r for r in rows if r.precision == p)
        return (r.act_bits if r.act_bits == r.weight_bits else 100 + r.act_bits, r.weight_bits)
    return sorted({r.precision for r in rows}, key=order)


PIPELINE_ORDER = [(m, s, i) for m, s in (("ptq", None), ("qat", "vanilla"), ("qat", "adversarial"),
                                         ("qat", "transfer"), ("qat", "fast_adversarial"))
                  for i in ("random", "non_robust", "robust")]


def _by_cell(rows: list[Row]) -> list[tuple[str, list[dict[str, Any]]]]:
    """``(precision, runs)`` per cell that has rows, pipelines and precisions in the tables' order."""
    pipes, precisions, cells = _pipelines(rows), _precisions(rows), by_cell(rows)
    order = sorted(cells, key=lambda k: (pipes.index(k[:3]), precisions.index(k[3])))
    return [(k[3], cells[k]) for k in order]


def _pipelines(rows: list[Row]) -> list[tuple[str, str | None, str]]:
    present = {(r.method, r.strategy, r.init) for r in rows}
    return [p for p in PIPELINE_ORDER if p in present] + sorted(present - set(PIPELINE_ORDER), key=str)


def _at_fraction(rows: list[Row]) -> tuple[list[dict[str, Any]], float | None]:
    if not rows:
        return rows, None
    top = max(r.fraction for r in rows)
    return [r for r in rows if r.fraction == top], top


def _pair_cells(rows: list[Row], first: str, second: str) -> tuple[list[str], list[list[str]]]:
    """Rows method x strategy x init, columns precision, cells ``first / second`` (record fields, in %);
    the second one marked ``!`` where a trust check fired."""
    n_all = len({r.seed for r in rows})
    precisions = _precisions(rows)
    out = []
    for method, strategy, init in _pipelines(rows):
        group = [r for r in rows if (r.method, r.strategy, r.init) == (method, strategy, init)]
        line = [method.upper(), strategy or "", init]
        for p in precisions:
            runs = [r for r in group if r.precision == p]
            a, b = _cell(runs, first, n_all, False), _cell(runs, second, n_all)
            line.append("NC" if a == "NC" else (f"{a} / {b}" if runs else ""))
        out.append(line)
    return precisions, out


@report_table(50, "rows", "main_eps")
def table2(rows: list[Row], main_eps: float) -> Table:
    """Rows method x strategy x init, columns precision, cells 'accuracy / robustness' in %."""
    rows, top = _at_fraction(rows)
    precisions, out = _pair_cells(rows, CLEAN, WORST)
    return Table("table2", f"Table 2: accuracy / robustness (%, worst case over attacks at {main_eps:g}/255), "
                 f"fraction {top:g}", ["method", "strategy", "init", *precisions], out, [_seeds_note(rows)])


@report_table(60, "rows", "main_eps")
def table2_reference(rows: list[Row], main_eps: float) -> Table | None:
    """Table 2 under the paper's attack alone (the first PGD) beside the gap to the worst case.

    Cells: ``paper's attack / gap`` in %, the gap being the paper's attack minus the worst case on the
    examples every attack covered (how much robustness the paper's attack alone would have claimed
    that a stronger attack takes away). None when the study runs no PGD attack.
    """
    rows, top = _at_fraction(rows)
    ref = next((r.reference_attack for r in rows if r.reference_attack), None)
    if ref is None:
        return None
    precisions, out = _pair_cells(rows, PAPER, "gap")
    n_ref = sorted({r.reference_n for r in rows if r.reference_n})
    n_worst = sorted({r.robustness_n for r in rows if r.robustness_n})
    return Table("table2_paper_attack", f"Table 2 under the paper's attack ({ref} alone) / the gap to the worst case "
                 f"(%, {main_eps:g}/255), fraction {top:g}", ["method", "strategy", "init", *precisions], out,
                 [_seeds_note(rows) + f" {ref} alone on {'/'.join(map(str, n_ref))} test examples; gap = {ref} minus "
                  f"the worst case on the {'/'.join(map(str, n_worst))} examples every attack covered."])


@report_table(70, "rows", "main_eps")
def table3(rows: list[Row], main_eps: float) -> Table | None:
    """Data fraction x precision for QAT/transfer from robust (else the first pipeline with several fractions)."""
    candidates = [p for p in _pipelines(rows) if len({r.fraction for r in rows
                                                      if (r.method, r.strategy, r.init) == p}) > 1]
    if not candidates:
        return None
    chosen = ("qat", "transfer", "robust") if ("qat", "transfer", "robust") in candidates else candidates[0]
    group = [r for r in rows if (r.method, r.strategy, r.init) == chosen]
    n_all = len({r.seed for r in group})
    precisions = _precisions(group)
    out = []
    for frac in sorted({r.fraction for r in group}):
        line = [f"{100 * frac:g}%"]
        for p in precisions:
            runs = [r for r in group if r.precision == p and r.fraction == frac]
            acc, rob = _cell(runs, CLEAN, n_all, False), _cell(runs, WORST, n_all)
            line.append("NC" if acc == "NC" else (f"{acc} / {rob}" if runs else ""))
        out.append(line)
    from robquant.report.records import pipeline_label

    return Table("table3", f"Table 3: {pipeline_label(*chosen)}, accuracy / robustness (%, {main_eps:g}/255) "
                 "by data fraction", ["data", *precisions], out, [_seeds_note(group)])


@report_table(80, "rows", "main_eps")
def table45(rows: list[Row], main_eps: float) -> list[Table]:
    """Tables 4 (accuracy) and 5 (robustness) of QAT/transfer: init x precision."""
    group, top = _at_fraction([r for r in rows if r.method == "qat" and r.strategy == "transfer"])
    if not group:
        return []
    n_all = len({r.seed for r in group})
    precisions = _precisions(group)
    tables = []
    for name, what, metric, mark in (("table4", "accuracy", CLEAN, False),
                                     ("table5", f"robustness at {main_eps:g}/255", WORST, True)):
        out = []
        for init in ("random", "non_robust", "robust"):
            runs_init = [r for r in group if r.init == init]
            if runs_init:
                out.append([init, *[_cell([r for r in runs_init if r.precision == p], metric, n_all, mark)
                                     for p in precisions]])
        tables.append(Table(name, f"Table {name[-1]}: QAT with robust transfer, {what} (%), fraction {top:g}",
                            ["init", *precisions], out, [_seeds_note(group)]))
    return tables


def trend_labels(rows: list[Row], weak_eps: float | None, main_eps: float,
                 **kwargs: Any) -> dict[tuple[str, str | None, str], dict[str, tuple[str, dict[str, Any]]]]:
    """Table-1 labels per pipeline: ``{(method, strategy, init): {"weaker"|"normal": (label, info)}}``.

    Weaker attack: ``weak_eps`` (the study's, see ``EvalSection.weak``); normal: the main eps.
    Robustness is the worst case at that eps, per example; bit-widths are the precisions with equal
    activation and weight bits (full precision as 32). A bit-width whose cell has an NC seed is not
    comparable (``info["not_comparable"]``); one with fewer than 2 seeds (when the pipeline has
    more) is dropped (``info["dropped"]``); the draws count seeds and test examples.
    """
    rows, _ = _at_fraction(rows)
    strengths = {"weaker": weak_eps, "normal": main_eps}
    out: dict[tuple[str, str | None, str], dict[str, tuple[str, dict[str, Any]]]] = {}
    for pipe in _pipelines(rows):
        group = [r for r in rows if (r.method, r.strategy, r.init) == pipe and r.bits is not None]
        labels = {}
        for strength, eps in strengths.items():
            if eps is None:
                continue
            labels[strength] = sweep_trend(group, "bits", WORST, eps, **kwargs)
        out[pipe] = labels
    return out


def sweep_trend(group: list[Row], field: str, what: str, eps: float,
                **kwargs: Any) -> tuple[str, dict[str, Any]]:
    """The trend label of ``what`` at ``eps`` over the values of ``field`` (``bits``, ``act_bits``)
    in one pipeline's rows, NC cells left out and named, per-example draws over seeds and examples."""
    nc = sorted({getattr(r, field) for r in group if r.status == "NC"})
    ok = [r for r in group if getattr(r, field) not in nc and per_example(r, what, eps) is not None]
    by_bits: dict[int, list[dict[str, Any]]] = {}
    for r in ok:
        by_bits.setdefault(getattr(r, field), []).append(r)
    most = max((len(v) for v in by_bits.values()), default=0)
    dropped = sorted(b for b, v in by_bits.items() if len(v) < min(2, most))
    bits = sorted(b for b in by_bits if b not in dropped)
    y, seeds = outcome_matrix([(by_bits[b], what) for b in bits], eps) if bits else (np.zeros((0, 0, 0)), [])
    label, info = trend_label_examples(y, bits, **kwargs)
    info.update(dropped=dropped, not_comparable=nc, bits=bits, seeds=seeds)
    return label, info


@report_table(90, "labels", "weak", "main_eps", "paper_table1")
def table1(labels: dict[tuple[str, str | None, str], dict[str, tuple[str, dict[str, Any]]]],
           weak: float | None, main_eps: float, paper: dict[str, dict[str, str]] | None = None) -> Table:
    """Table 1 derived: rows = method/strategy, columns = init, cells 'weaker: x, normal: y', each
    label followed by the paper's and the verdict when ``paper`` (``{"ptq/robust": {"weaker": "+"}}``,
    as ``paper_numbers.yaml`` holds them) has it."""
    pipes = sorted({(m, s) for m, s, _ in labels}, key=lambda p: [q[:2] for q in PIPELINE_ORDER].index(p)
                   if p in [q[:2] for q in PIPELINE_ORDER] else 99)
    out = []
    for m, s in pipes:
        line = [f"{m.upper()}{' (' + s + ')' if s else ''}"]
        for init in ("random", "non_robust", "robust"):
            cell = labels.get((m, s, init))
            theirs = (paper or {}).get(cell_name(m, s, init), {})
            line.append("" if cell is None else ", ".join(
                f"{k}: {v[0]}" + (f" (paper {theirs[k]}: {label_verdict(v[0], theirs[k])})" if k in theirs else "")
                for k, v in cell.items()))
        out.append(line)
    notes = [f"Robustness vs bit-width: + lower bits -> higher robustness, - the opposite, ~ a middle bit-width is "
             f"best, n.s. not supported by the data (2,000 draws of the bit-widths' means counting the seeds and the "
             f"test examples, paired by seed and by example; Spearman rank correlation and peak position, 95 %). "
             f"A bit-width with an NC seed is left out. weaker = "
             f"{'%g/255' % weak if weak is not None else 'none run'}, normal = {main_eps:g}/255."]
    if paper:
        notes.append("(paper x: verdict): the paper's label; agree, disagree, or not significant (ours n.s.).")
    return Table("table1", "Table 1 (derived): trend of robustness vs bit-width", ["pipeline", "random", "non_robust",
                                                                                   "robust"], out, notes)


def label_verdict(ours: str, theirs: str) -> str:
    """Our Table-1 label against the paper's: agree, disagree, or not significant (ours n.s.)."""
    if ours == "n.s.":
        return "not significant"
    return "agree" if ours == theirs else "disagree"


# a QAT run has converged when its last epoch changed its held-out clean accuracy (without a held-out set: its
# training accuracy) by less than this many points (mean over seeds)
CONVERGED_POINTS = 1.0


@report_table(125, "rows")
def finetune_table(rows: list[Row]) -> Table | None:
    """QAT's fine-tuning, per cell: accuracy by epoch (mean over seeds), the last epoch's change, and the
    cell's clean test accuracy beside its FP parent's. The accuracy is clean accuracy on held-out training
    images where the study measured it (``qat.held_out``), else training accuracy; ``converged`` when the
    last epoch changed it by less than :data:`CONVERGED_POINTS`. None when no QAT cell kept its history."""
    out = []
    measures = set()
    for p, runs in _by_cell([r for r in rows if r.history]):
        epochs = min(len(r.history) for r in runs)
        key = "held_out_clean" if all("held_out_clean" in h for r in runs for h in r.history[:epochs]) \
            else "train_accuracy"
        measures.add(key)
        curve = [float(np.mean([r.history[e][key] for r in runs])) for e in range(epochs)]
        last = [r.history[epochs - 1][key] - r.history[epochs - 2][key] for r in runs] if epochs > 1 else []
        change = 100 * float(np.mean(last)) if last else None
        parent = [r.fp_clean for r in runs if r.fp_clean is not None]
        verdict = ("one epoch: not judged" if change is None else
                   "converged" if abs(change) < CONVERGED_POINTS else
                   "still rising" if change > 0 else "still falling")
        out.append([runs[0].pipeline, p, str(len(runs)), str(epochs),
                    "held-out clean" if key == "held_out_clean" else "training",
                    " → ".join(f"{100 * a:.1f}" for a in curve),
                    "" if change is None else f"{change:+.1f} ({100 * min(last):+.1f} to {100 * max(last):+.1f})",
                    _fmt([r.clean for r in runs]), f"{100 * float(np.mean(parent)):.1f}" if parent else "", verdict])
    if not out:
        return None
    notes = []
    if "held_out_clean" in measures:
        notes.append("Held-out clean: clean accuracy, in eval mode, after each epoch, on training images outside "
                     "the cell's fraction (qat.held_out): never trained on by QAT, though an FP parent trained on "
                     "all of them has seen them; its change is what counts.")
    if "train_accuracy" in measures:
        notes.append("Training: accuracy on the epoch's training inputs as trained (augmented; the adversarial "
                     "strategy's are its attack's), in train mode; set qat.held_out to judge on held-out images.")
    notes.append(f"Converged: the last epoch changed the accuracy by less than {CONVERGED_POINTS:g} point (mean "
                 "over seeds). FP parent clean: its record's, on its own test examples.")
    return Table("finetune", "QAT fine-tuning: accuracy by epoch and whether it converged",
                 ["pipeline", "precision", "seeds", "epochs", "measured on", "accuracy % by epoch (mean over seeds)",
                  "last epoch's change, points (seeds' range)", "clean test accuracy %", "FP parent clean %",
                  "verdict"], out, notes)


@report_table(140, "rows", "main_eps")
def deployed_table(rows: list[Row], main_eps: float) -> Table | None:
    """The deployed models (``evaluation.deployed``): per pipeline and precision, the fake-quantized
    model's robustness of record beside the exported model's on its runtime, and their agreement.
    None when no model was deployed."""
    rows = [r for r in rows if r.deployed]
    if not rows:
        return None
    others = list(dict.fromkeys(name for r in rows for name in r.deployed.also))
    runtime = rows[0].deployed.runtime or ""
    main = runtime.split()[0] if runtime else "the runtime"
    out = []
    for p, runs in _by_cell(rows):
        dep = [r.deployed for r in runs]
        agree = min(d.lowest_agreement for d in dep)
        flagged = sum("deployed_mismatch" in r.flags for r in runs)
        unfused = [d.unfused for d in dep if d.unfused]
        without = (f"{100 * min(min(u['clean_agreement'], u['adversarial_agreement']) for u in unfused):.1f}"
                   if unfused else "")
        more = [text for name in others for text in _on_runtime(dep, name, main)]
        out.append([runs[0].pipeline, p, str(len(runs)),
                    _fmt([d.record_accuracy for d in dep if d.record_accuracy is not None]),
                    _fmt([d.robustness for d in dep]), _fmt([d.accuracy["square"] for d in dep]),
                    f"{100 * agree:.1f}", without, *more, str(flagged), runs[0].onnx or ""])
    n = sorted({r.deployed.n for r in rows})
    columns = [f"{head} on {name}" for name in others for head in ("transfer + Square", "agreement % (lowest)",
                                                                    f"minus {main} (paired)")]
    notes = [f"On {', '.join(others)}: the same exported file, the same transferred PGD examples, Square on that "
             f"runtime; minus {main}: its robustness minus the runtime of record's, paired by seed and example (95 % "
             "interval over seeds and examples); 'differs' where the interval excludes 0: the model's robustness "
             "is not the same on the two runtimes."] if others else []
    versions = {name: next(r.deployed.also[name].runtime for r in rows if name in r.deployed.also)
                for name in others}
    return Table("deployed", f"Deployed models on {runtime}" + "".join(f" and {v}" for v in versions.values()) +
                 f": robustness at {main_eps:g}/255 (%), fake-quantized record vs the exported ONNX model",
                 ["pipeline", "precision", "seeds", "record (fake-quant)", "deployed: transfer + Square",
                  "deployed: Square", "agreement % (lowest)", "without QDQ fusion %", *columns, "mismatch flags",
                  "ONNX file (first seed)"],
                 out, [f"On the first {'/'.join(map(str, n))} test examples. Record: the evaluation's worst case "
                       "over its attacks on the fake-quantized model. Deployed: robust on the runtime under PGD "
                       "transferred from the fake-quantized model and under Square (gradient-free) on the runtime. "
                       "Agreement: top-1 with the fake-quantized model, the lowest of clean and adversarial over "
                       "seeds; a mismatch flag fires above 1 point. Without QDQ fusion: where they disagree, the same "
                       "file with the runtime's QDQ fusion off (the fusion quantizes the float weights of layers whose "
                       "input is quantized to int8: an activation-only model runs with int8 weights).", *notes])


def _on_runtime(dep: list[DeployedMetrics], name: str, main: str) -> list[str]:
    """A cell's columns for the further runtime ``name``: robustness, lowest agreement, and the paired
    difference from the runtime of record (``differs`` where its interval excludes 0)."""
    runs = [(d, d.also[name]) for d in dep if name in d.also]
    if not runs:
        return ["", "", ""]
    agree = min(o.lowest_agreement for _, o in runs)
    n = min(len(o.robust_mask) for _, o in runs)
    diff = estimate(np.array([np.asarray(o.robust_mask[:n], float) - np.asarray(d.robust_mask[:n], float)
                              for d, o in runs]))
    text = format_estimate(diff, signed=True, low=-1.0)
    differs = diff.examples > 0 and not math.isnan(diff.half) and (diff.low > 0 or diff.high < 0)
    return [_fmt([o.robustness for _, o in runs]), f"{100 * agree:.1f}", text + (" differs" if differs else "")]


@report_table(150, "rows")
def bitflip_table(rows: list[Row]) -> Table | None:
    """Bit flips to break (``evaluation.bitflip``): per pipeline and precision, the flips that bring clean
    accuracy to chance + 1 point, by the progressive bit search and by random flips, pooled over the
    models' seeds and the attack batches. None when no model was attacked in its weights."""
    from robquant.attacks.bitflip import flips_summary

    rows = [r for r in rows if r.bitflip]
    if not rows:
        return None
    methods = [m for m in ("search", "random") if any(r.bitflip.flips(m) for r in rows)]
    out = []
    for p, runs in _by_cell(rows):
        batches = sorted({len(r.bitflip.flips(m)) for r in runs for m in methods if r.bitflip.flips(m)})
        cells = [runs[0].pipeline, p, f"{len(runs)} x {'/'.join(map(str, batches))}"]
        for m in methods:
            found = [r.bitflip for r in runs if r.bitflip.flips(m)]
            s = flips_summary([f for x in found for f in x.flips(m)], max(x.cap(m) for x in found))
            mean = "" if s["mean"] is None else f"{s['mean']:.1f}"
            if s["ci95"] is not None:
                mean += f" [{max(s['ci95'][0], 0):.1f}, {s['ci95'][1]:.1f}]"
            each = ", ".join(str(f) if f is not None else f">{x.cap(m)}" for x in found for f in x.flips(m))
            cells += [each, mean, f"{s['censored']}/{len(s['flips'])} (>{s['cap']})"]
        out.append(cells)
    n = sorted({r.bitflip.n for r in rows})
    columns = ["pipeline", "precision", "seeds x batches"]
    for m in methods:
        columns += [f"{m}: flips per run", f"{m}: mean [95 %]", f"{m}: not broken (cap)"]
    return Table("bitflip", "Bit flips to break: flipped bits of the stored weights that bring clean accuracy to "
                 "chance + 1 point", columns, out,
                 [f"Accuracy on the first {'/'.join(map(str, n))} test examples; chance: the largest class's share "
                  "there. search: the progressive bit search (Rakin et al. 2019) on an attack batch of other test "
                  "examples; random: bits drawn uniformly from every stored bit. A run: one model (seed) and one "
                  "attack batch; its flips are listed seed by seed ('>cap': not broken within the cap). Pooled over "
                  "the runs; the mean and its t-interval (a negative lower end shown as 0) are over the runs that "
                  "broke the model, and a run not broken within the cap is counted apart (it needs more than the "
                  "cap: the mean then understates the flips)."])


@report_table(160, "matrices", "main_eps")
def transfer_matrix_table(matrices: dict[str, dict[str, Any]], main_eps: float) -> Table | None:
    """The precision transfer matrices (:func:`robquant.report.figures.transfer_matrices`) as one table:
    a row per pipeline and target precision, a column per source. None when no study cell ran them."""
    if not matrices:
        return None
    sources = list(dict.fromkeys(s for m in matrices.values() for s in m["sources"]))
    out = []
    for pipeline, m in matrices.items():
        for target in m["targets"]:
            cells = []
            for source in sources:
                est = m["cells"].get((target, source))
                text = "" if est is None else format_estimate(est)
                if text and source == target:
                    text += " (white-box)"
                elif text and m["strongest"].get(target) == source:
                    text += " *"
                cells.append(text)
            out.append([pipeline, target, *cells])
    return Table("transfer_matrix", f"Precision transfer matrix: robustness (%) at {main_eps:g}/255 of each target "
                 "under PGD crafted on each source", ["pipeline", "target", *[f"from {s}" for s in sources]], out,
                 ["Each target is attacked with PGD (the paper's attack's steps, best iterate) crafted on its FP "
                  "parent and on each other precision of its pipeline (same seed and fraction), on the same test "
                  "examples; the diagonal is its own white-box PGD. Mean over seeds and test examples with the 95 % "
                  "interval (seeds and test sample counted). *: the strongest source for that target. Every source "
                  "is an attack of the evaluation, so it is part of the worst case of record."])


@report_table(155, "rows")
def bit_errors_table(rows: list[Row]) -> Table | None:
    """Random bit errors (``evaluation.bit_errors``): per pipeline and precision, the accuracy with each stored
    bit flipped with probability p, at every rate, with intervals counting the test examples and the draws
    (:func:`~robquant.report.records.bit_error_curve`). None when no model was evaluated so."""
    rows = [r for r in rows if r.bit_errors]
    if not rows:
        return None
    rates = sorted({p for r in rows for p in r.bit_errors.rates})
    out = []
    for p, runs in _by_cell(rows):
        curve = bit_error_curve(runs)
        draws = sorted({r.bit_errors.correct.shape[1] for r in runs})
        cells = [runs[0].pipeline, p, f"{len(runs)} x {'/'.join(map(str, draws))}",
                 f"{runs[0].bit_errors.total_bits:,}", format_interval([r.bit_errors.clean_accuracy for r in runs])]
        cells += [format_estimate(curve[q]) if q in curve else "" for q in rates]
        out.append(cells)
    n = sorted({r.bit_errors.correct.shape[-1] for r in rows})
    return Table("bit_errors", "Random bit errors: accuracy with each stored bit flipped with probability p",
                 ["pipeline", "precision", "seeds x draws", "stored bits", "no errors", *(f"p = {q:.0e}" if q else "p = 0" for q in rates)],
                 out,
                 [f"Clean accuracy on the first {'/'.join(map(str, n))} test examples with every bit of the stored "
                  "weights (the words the bit search flips) flipped independently with probability p, drawn anew "
                  "per draw. Mean ± half-width of the 95 % interval over the test examples and the draws (with "
                  "several seeds, over the seeds, each the mean of its draws); 'no errors': the stored model as it "
                  "is. Figure: bit_errors.png."])


@report_table(157, "rows")
def corruptions_table(rows: list[Row]) -> Table | None:
    """Natural corruptions (``evaluation.corruptions``): per pipeline and precision, clean accuracy on the
    corrupted test images, the mean over corruptions and severities with its interval (seeds and examples),
    its difference from the pipeline's A32W32 model (paired by seed and example), and each corruption's
    mean. None when no model was evaluated so."""
    rows = [r for r in rows if r.corruptions]
    if not rows:
        return None
    names = list(dict.fromkeys(c for r in rows for c in r.corruptions.names))
    out = []
    for p, runs in _by_cell(rows):
        y = corruption_outcomes(runs)
        fp = {r.seed: r for r in rows if r.pipeline == runs[0].pipeline and r.act_bits == 32 and r.weight_bits == 32}
        paired = [(r, fp[r.seed]) for r in runs if r.seed in fp]
        if paired and p != "A32W32":
            diff = corruption_outcomes([a for a, _ in paired]) - corruption_outcomes([b for _, b in paired])
            versus = format_estimate(estimate(diff), signed=True, low=-1.0)
        else:
            versus = ""
        cells = [runs[0].pipeline, p, str(len(runs)), format_interval([r.corruptions.clean_accuracy for r in runs]),
                 format_estimate(estimate(y)), versus]
        for c in names:
            z = corruption_outcomes(runs, [c])
            cells.append(f"{100 * z.mean():.1f}" if z.size and all(c in r.corruptions.names for r in runs) else "")
        out.append(cells)
    severities = sorted({v for r in rows for v in r.corruptions.severities})
    n = sorted({r.corruptions.n for r in rows})
    return Table("corruptions", "Natural corruptions: accuracy (%) on corrupted test images",
                 ["pipeline", "precision", "seeds", "no corruption", "mean", "vs A32W32", *names], out,
                 [f"Clean accuracy on the first {'/'.join(map(str, n))} test examples corrupted after CIFAR-10-C's "
                  f"definitions (robquant.data.corruptions) at severities {', '.join(map(str, severities))}. mean: over "
                  "every corruption and severity, ± half-width of the 95 % interval over seeds and test examples; "
                  "vs A32W32: the same minus the pipeline's A32W32 model, paired by seed and example; per corruption: "
                  "the mean over its severities and the seeds."])
