"""Figure 2 (activation-only / weight-only sweeps) and the Pareto view, with matplotlib (Agg)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from robquant.report.records import (Row, CLEAN, WORST, bit_error_curve, by_cell, cell_estimate, nc_cells,  # noqa: E402
                                     per_example)
from robquant.report.stats import t_interval  # noqa: E402


STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 7, "xtick.labelsize": 8,
         "ytick.labelsize": 8, "axes.grid": True, "grid.alpha": 0.3, "figure.dpi": 100}  # every figure's


def fitted(text: str, width_in: float, fontsize: float) -> str:
    """``text`` wrapped to lines that fit ``width_in`` inches at ``fontsize`` points (an average glyph
    is about 0.55 em wide; a margin of 10 %)."""
    import textwrap

    per_line = max(20, int(0.9 * width_in * 72 / (0.55 * fontsize)))
    return "\n".join(textwrap.wrap(text, per_line)) or text


def styled(fn: Any) -> Any:
    """Draw the figure under :data:`STYLE`."""
    import functools

    @functools.wraps(fn)
    def drawn(*args: Any, **kwargs: Any) -> Any:
        with plt.rc_context(STYLE):
            return fn(*args, **kwargs)
    return drawn


def _save(fig: Any, out: Path, stem: str) -> list[Path]:
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    for p in paths:
        fig.savefig(p, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return paths


def figure2_pipeline(rows: list[Row]) -> str | None:
    """The pipeline Figure 2 draws: the paper's QAT/vanilla from random when it has a sweep, else
    QAT/vanilla from non-robust, then from robust parameters, else the pipeline with most sweep points."""
    def sweep_points(pipe: str) -> int:
        mine = [r for r in rows if r.pipeline == pipe]
        return len({r.precision for r in mine if r.act_bits == 32 or r.weight_bits == 32})

    preferred = ["QAT/vanilla from random", "QAT/vanilla from non_robust", "QAT/vanilla from robust"]
    pipes = sorted({r.pipeline for r in rows if sweep_points(r.pipeline) > 1},
                   key=lambda p: (preferred.index(p) if p in preferred else len(preferred), -sweep_points(p), p))
    return pipes[0] if pipes else None


def figure2_series(rows: list[Row]) -> tuple[str | None, list[dict[str, Any]]]:
    """The values Figure 2 plots (also written as ``figure2.csv``).

    Per panel (activation-only AxW32, weight-only A32Wx; A32W32 belongs to both), per line
    (clean accuracy; per eps, each attack on its own examples, and the worst case over the
    attacks on the examples every one of them covered), per bit-width: the mean over seeds and test
    examples and its 95 % interval counting both (clipped to [0, 1]; low, high), the seeds and the
    examples it is taken over. A cell with a non-converged seed is not comparable: it is left out
    (``not_comparable`` lists it). With a cascaded evaluation a later attack's own accuracy is
    already cumulative, so only the first attack and the worst case are drawn.

    Returns:
        ``(pipeline, [{"panel", "line", "attack", "eps_255", "bits", "mean", "low", "high", "seeds", "n"}])``;
        NC cells as ``{"panel", "bits", "not_comparable": True}``.
    """
    top = max((r.fraction for r in rows), default=1.0)
    rows = [r for r in rows if r.fraction == top]
    pipeline = figure2_pipeline(rows)
    if pipeline is None:
        return None, []
    rows = [r for r in rows if r.pipeline == pipeline]
    nc = {p for _, p, _ in nc_cells(rows)}
    series: list[dict[str, Any]] = []
    for panel, field, group in (("activation-only", "act_bits", [r for r in rows if r.weight_bits == 32]),
                                ("weight-only", "weight_bits", [r for r in rows if r.act_bits == 32])):
        bits = sorted({getattr(r, field) for r in group})
        if len(bits) < 2:
            continue
        series += [{"panel": panel, "bits": getattr(r, field), "not_comparable": True}
                   for r in {r.precision: r for r in group if r.precision in nc}.values()]
        group = [r for r in group if r.precision not in nc]
        lines: list[tuple[str, str | None, float | None, str]] = [("clean accuracy", None, None, CLEAN)]
        for eps in sorted({e for r in group for e in r.worst}):
            attacks = list(dict.fromkeys(a for r in group for (a, e) in r.robust if e == eps))
            cascade = any(r.cascade for r in group)
            for a in attacks[:1] if cascade else attacks:
                lines.append((f"{a}, eps {eps:g}/255", a, eps, a))
            if len(attacks) > 1:
                lines.append((f"worst case of {' + '.join(attacks)}, eps {eps:g}/255", "worst case", eps, WORST))
        for line, attack, eps, what in lines:
            for b in sorted({getattr(r, field) for r in group}):
                runs = [r for r in group if getattr(r, field) == b and per_example(r, what, eps) is not None]
                est = cell_estimate(runs, what, eps)
                if est.examples == 0:
                    continue
                series.append({"panel": panel, "line": line, "attack": attack, "eps_255": eps, "bits": b,
                               "mean": est.mean, "low": max(0.0, est.low), "high": min(1.0, est.high),
                               "seeds": est.seeds, "n": est.examples})
    return pipeline, series


@styled
def figure2(rows: list[Row], out: Path, title: str = "") -> list[Path]:
    """Figure 2 for one pipeline (see :func:`figure2_pipeline`): an activation-only and a weight-only
    panel, accuracy and robustness vs bits, one line per attack and eps plus the worst case over the
    examples every attack covered (n in the legend), mean +- 95 % CI over seeds. Writes PNG, PDF and
    the plotted values as ``figure2.csv``; returns their paths, or [] when the study has no sweep."""
    pipeline, series = figure2_series(rows)
    excluded = [s for s in series if s.get("not_comparable")]
    series = [s for s in series if not s.get("not_comparable")]
    if not series:
        return []
    panels = list(dict.fromkeys(s["panel"] for s in series))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4.6), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        mine = [s for s in series if s["panel"] == panel]
        bits = sorted({s["bits"] for s in mine})
        for line in dict.fromkeys(s["line"] for s in mine):
            pts = [s for s in mine if s["line"] == line]
            pos = [bits.index(s["bits"]) for s in pts]
            ns = sorted({str(s["n"]) for s in pts})
            style = "k-o" if line == "clean accuracy" else ("--" if pts[0]["attack"] == "worst case" else "-") + "s"
            below = [0 if s["low"] != s["low"] else 100 * (s["mean"] - s["low"]) for s in pts]
            above = [0 if s["high"] != s["high"] else 100 * (s["high"] - s["mean"]) for s in pts]
            ax.errorbar(pos, [100 * s["mean"] for s in pts], yerr=[below, above],
                        fmt=style, capsize=3, label=line + (f" (n={'/'.join(ns)})" if ns else ""))
        ax.set_xticks(range(len(bits)), [("FP" if b == 32 else str(b)) for b in bits])
        ax.set_xlabel("activation bits (weights FP)" if panel == "activation-only" else "weight bits (activations FP)")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title(panel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    left_out = "; not comparable (NC): " + ", ".join(f"{s['panel']} {s['bits']} bits" for s in excluded) if excluded else ""
    width = fig.get_size_inches()[0]
    # anchored by its last line above the panels: a title wrapped to more lines grows upwards, not over them
    fig.suptitle(fitted(title or f"Figure 2: {pipeline}, accuracy and robustness vs bits", width, 11), fontsize=11,
                 y=1.0, va="bottom")
    fig.text(0.5, 0.005, fitted(f"mean ± 95 % interval over seeds and test examples{left_out}", width, 8),
             ha="center", va="top", fontsize=8, color="#444")
    paths = _save(fig, out, "figure2")
    csv_path = out / "figure2.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, ["pipeline", "panel", "line", "attack", "eps_255", "bits", "mean", "low", "high",
                                    "seeds", "n"])
        writer.writeheader()
        for s in series:
            writer.writerow({"pipeline": pipeline, **s})
        for s in excluded:
            writer.writerow({"pipeline": pipeline, "panel": s["panel"], "line": "not comparable (NC)", "bits": s["bits"]})
    return [*paths, csv_path]


@styled
def pareto(rows: list[Row], out: Path) -> tuple[list[Path], list[dict[str, Any]]]:
    """Accuracy x robustness scatter (colour: quantization cost in passes, size: model bytes) with the
    frontier of non-dominated pipelines (cells with an NC seed left out); and per bit budget the recommended pipeline (highest mean
    robustness, then accuracy). Returns the figure paths and the recommendations."""
    top = max((r.fraction for r in rows), default=1.0)
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        if r.fraction == top:
            groups.setdefault((r.pipeline, r.precision), []).append(r)
    points = []
    for (pipe, prec), runs in groups.items():
        if any(r.status != "done" for r in runs):  # NC in some seed: not a candidate
            continue
        points.append({"pipeline": pipe, "precision": prec, "bits": runs[0].bits,
                       "clean": t_interval([r.clean for r in runs])[0],
                       "robustness": t_interval([r.robustness for r in runs])[0],
                       "passes": t_interval([r.passes or 0 for r in runs])[0],
                       "bytes": runs[0].bytes or 0})
    if not points:
        return [], []
    frontier = [p for p in points if not any(q["clean"] >= p["clean"] and q["robustness"] >= p["robustness"]
                                             and (q["clean"], q["robustness"]) != (p["clean"], p["robustness"])
                                             for q in points)]
    frontier.sort(key=lambda p: p["clean"])
    fig, ax = plt.subplots(figsize=(7, 5))
    biggest = max(p["bytes"] for p in points) or 1
    sc = ax.scatter([100 * p["clean"] for p in points], [100 * p["robustness"] for p in points],
                    c=[p["passes"] for p in points], s=[20 + 180 * p["bytes"] / biggest for p in points],
                    cmap="viridis", alpha=0.8, edgecolors="k", linewidths=0.3)
    ax.plot([100 * p["clean"] for p in frontier], [100 * p["robustness"] for p in frontier], "r--", lw=1,
            label="frontier")
    # the frontier's points named in the legend (labels beside points overprint one another)
    for p, marker in zip(frontier, "os^Dvp*hX<>8"):
        ax.plot(100 * p["clean"], 100 * p["robustness"], marker, ms=9, mfc="none", mec="r", mew=1.2, ls="",
                label=f"{p['pipeline']} {p['precision']}")
    fig.colorbar(sc, ax=ax, label="quantization cost\n(forward+backward passes)")
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel("robustness (%)")
    ax.set_title(fitted("Pareto view: accuracy x robustness (marker size: model bytes)", 5.5, 10))
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    paths = _save(fig, out, "pareto")
    recommended = []
    for bits in sorted({p["bits"] for p in points if p["bits"] is not None}):
        best = max((p for p in points if p["bits"] == bits), key=lambda p: (p["robustness"], p["clean"]))
        recommended.append(best)
    return paths, recommended


TRANSFER_PREFIX = "transfer:"  # the precision transfer matrix's attacks: transfer:FP, transfer:AxWy


def transfer_matrices(rows: list[Row]) -> dict[str, dict[str, Any]]:
    """The precision transfer matrix of each pipeline whose evaluations ran it
    (``evaluation.transfer_matrix``): robustness at the main eps of each target precision (rows) under PGD
    crafted on each source (columns: the FP parent, then each precision), mean over seeds and test
    examples with its 95 % interval (seeds and test sample counted). The diagonal is the target's own
    white-box PGD (the paper's attack; a transfer from a model to itself is that attack). Per target,
    ``strongest``: the source whose examples leave it least robust.

    Returns:
        ``{pipeline: {"targets", "sources", "cells": {(target, source): Estimate}, "strongest": {target: source},
        "n": {target: (seeds, examples)}}}``.
    """
    from robquant.report.records import comparable

    out: dict[str, dict[str, Any]] = {}
    rows = [r for r in comparable(rows) if any(a.startswith(TRANSFER_PREFIX) for a, _ in r.outcomes.robust)]
    for pipeline in dict.fromkeys(r.pipeline for r in rows):
        mine = [r for r in rows if r.pipeline == pipeline]
        targets = sorted({r.precision for r in mine},
                         key=lambda p: next((r.act_bits, r.weight_bits) for r in mine if r.precision == p))
        sources = ["FP", *targets]
        cells, strongest = {}, {}
        for target in targets:
            runs = [r for r in mine if r.precision == target]
            for source in sources:
                what = runs[0].reference_attack if source == target else TRANSFER_PREFIX + source
                if what is None or any(r.outcomes.attack(what, r.main_eps) is None for r in runs):
                    continue
                cells[(target, source)] = cell_estimate(runs, what)
            found = [s for s in sources if s != target and (target, s) in cells]
            if found:
                strongest[target] = min(found, key=lambda s: cells[(target, s)].mean)
        out[pipeline] = {"targets": targets, "sources": sources, "cells": cells, "strongest": strongest}
    return out


@styled
def transfer_heatmaps(matrices: dict[str, dict[str, Any]], out: Path) -> list[Path]:
    """One heatmap per pipeline (PNG) and every cell with its interval as ``transfer_matrix_cells.csv``."""
    if not matrices:
        return []
    paths = []
    csv_path = out / "transfer_matrix_cells.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["pipeline", "target", "source", "robustness", "low", "high", "seeds", "examples",
                         "strongest_source"])
        for pipeline, m in matrices.items():
            for (target, source), est in m["cells"].items():
                writer.writerow([pipeline, target, source, f"{est.mean:.6f}", f"{est.low:.6f}", f"{est.high:.6f}",
                                 est.seeds, est.examples, m["strongest"].get(target) == source])
    for i, (pipeline, m) in enumerate(matrices.items()):
        grid = [[100 * m["cells"][(t, s)].mean if (t, s) in m["cells"] else float("nan") for s in m["sources"]]
                for t in m["targets"]]
        fig, ax = plt.subplots(figsize=(1.1 * len(m["sources"]) + 2.5, 0.6 * len(m["targets"]) + 2))
        image = ax.imshow(grid, vmin=0, vmax=100, cmap="viridis")
        for r, row in enumerate(grid):
            for c, value in enumerate(row):
                if value == value:
                    ax.text(c, r, f"{value:.0f}", ha="center", va="center", color="w" if value < 60 else "k",
                            fontsize=8)
        ax.set_xticks(range(len(m["sources"])), m["sources"])
        ax.set_yticks(range(len(m["targets"])), m["targets"])
        ax.set_xlabel("source: PGD crafted on")
        ax.set_ylabel("target")
        ax.set_title(fitted(f"{pipeline}: robustness (%) under transfer", fig.get_size_inches()[0] * 0.7, 9),
                     fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.05)
        fig.tight_layout()
        path = out / f"transfer_matrix_{i}.png"
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return [*paths, csv_path]


@styled
def bit_error_figure(rows: list[Row], out: Path) -> list[Path]:
    """Accuracy against the bit error rate (log axis), one panel per pipeline, one line per precision with
    its 95 % interval (:func:`~robquant.report.records.bit_error_curve`); the rate 0 is drawn as the dotted
    line of the model without errors. Nothing when no model was evaluated so."""
    cells = by_cell([r for r in rows if r.bit_errors])
    if not cells:
        return []
    pipes = sorted({runs[0].pipeline for runs in cells.values()})
    fig, axes = plt.subplots(1, len(pipes), figsize=(5 * len(pipes), 4), squeeze=False, sharey=True)
    for ax, pipe in zip(axes[0], pipes):
        for runs in (v for v in cells.values() if v[0].pipeline == pipe):
            curve = {p: e for p, e in bit_error_curve(runs).items() if p > 0}
            rates = sorted(curve)
            mean = [100 * curve[p].mean for p in rates]
            line, = ax.plot(rates, mean, "o-", ms=3, label=runs[0].precision)
            ax.fill_between(rates, [100 * max(curve[p].low, 0) for p in rates],
                            [100 * min(curve[p].high, 1) for p in rates], color=line.get_color(), alpha=0.2)
            clean = sum(r.bit_errors.clean_accuracy for r in runs) / len(runs)
            ax.axhline(100 * clean, color=line.get_color(), ls=":", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel("bit error rate p (per stored bit)")
        ax.set_title(pipe, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("clean accuracy (%)")
    return _save(fig, out, "bit_errors")


@styled
def finding_figures(found: list[Any], out: Path) -> list[Path]:
    """A figure per finding judged cell by cell against the FP reference (``Finding.points``): each
    cell's difference from the reference with its 95 % interval, one marker per measure, coloured by
    the cell's verdict, beside zero and the margin (``findings.MARGIN``) below which robustness is not
    kept, and for a claim of *lost* the dotted mark on each row where a cell keeps ``LOST_SHARE`` of the
    reference's robustness. Written as ``finding-<key>.png``; findings without such cells draw none."""
    from matplotlib.lines import Line2D

    from robquant.report.findings import LOST_SHARE, MARGIN
    from robquant.report.page import VERDICTS, verdict_class

    colour = {cls: c for _, cls, c in VERDICTS}
    paths: list[Path] = []
    for f in found:
        if not f.points:
            continue
        cells = list(dict.fromkeys(p[0] for p in f.points))
        measures_ = list(dict.fromkeys(p[1] for p in f.points))
        fig, ax = plt.subplots(figsize=(7, 2.2 + 0.42 * len(cells) * max(1, len(measures_))), layout="constrained")
        offsets = {m: 0.32 * (i - (len(measures_) - 1) / 2) for i, m in enumerate(measures_)}
        markers = dict(zip(measures_, "osD^v"))
        for cell, measure, mean, low, high, verdict in f.points:
            y = cells.index(cell) + offsets[measure]
            c = colour.get(verdict_class(verdict), "#6B6B6B")
            ax.errorbar(100 * mean, y, xerr=[[100 * (mean - low)], [100 * (high - mean)]], fmt=markers[measure],
                        color=c, ms=6, capsize=3, lw=1.4)
        ax.axvline(0, color="#444", lw=0.8)
        ax.axvline(-100 * MARGIN, color="#D55E00", lw=1, ls="--")
        for measure, bound in f.bounds:  # at each cell's row of that measure
            for i in range(len(cells)):
                y = i + offsets.get(measure, 0.0)
                ax.plot([100 * bound] * 2, [y - 0.14, y + 0.14], color="#444", lw=1.6, ls=":")
        ax.set_yticks(range(len(cells)))
        ax.set_yticklabels(cells)
        ax.set_ylim(len(cells) - 0.5, -0.5)
        ax.set_xlabel("cell minus the robust FP reference (points; 95 % interval over seeds and examples)")
        ax.set_title(fitted(f.claim, 6.5, 10))
        used = list(dict.fromkeys(verdict_class(p[5]) for p in f.points))
        handles = [Line2D([], [], marker=markers[m], color="#444", ls="", label=m) for m in measures_]
        handles += [Line2D([], [], color="#D55E00", ls="--", label=f"margin: -{100 * MARGIN:g} points")]
        handles += [Line2D([], [], color="#444", ls=":", lw=1.6,
                           label=f"lost: {100 * LOST_SHARE:g} % of the reference left (on each row)")][:len(f.bounds) and 1]
        handles += [Line2D([], [], marker="s", color=colour[cls], ls="", label=word)
                    for word, cls, _ in VERDICTS if cls in used]
        fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False)
        paths += _save(fig, out, f"finding-{f.key}")
    return paths
