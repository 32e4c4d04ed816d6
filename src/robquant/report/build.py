"""``robquant report``: every table and figure of a study, from its store alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from robquant.errors import ConfigError
from robquant.provenance import now_iso
# the modules that define tables, imported so that each has registered its own
import robquant.report.beyond  # noqa: F401
import robquant.report.findings  # noqa: F401
import robquant.report.paper  # noqa: F401
from robquant.report.figures import bit_error_figure, figure2, finding_figures, transfer_heatmaps
from robquant.report.page import render_page
from robquant.report.records import Row, collect
from robquant.report.sections import ReportInputs, report_table, report_tables
from robquant.report.stats import t_interval
from robquant.report.tables import Table

FORMATS = ("md", "latex", "csv", "html")

@report_table(130, "rows")
def cost_table(rows: list[Row]) -> Table:
    """Per pipeline: quantization wall time and passes, mean over cells, relative to vanilla QAT from
    the same init at the same precision and fraction (the paper's "7x" for PGD-7 becomes measured)."""
    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r.init, r.precision, r.fraction, r.seed)

    def fmt(v: list[float]) -> str:
        return f"{t_interval(v)[0]:.2f}x" if v else ""

    vanilla = {key(r): r for r in rows if r.method == "qat" and r.strategy == "vanilla"}
    out = []
    for pipe in dict.fromkeys(r.pipeline for r in rows):
        group = [r for r in rows if r.pipeline == pipe]
        wall = t_interval([r.wall_s for r in group if r.wall_s is not None])[0]
        passes = t_interval([r.passes for r in group if r.passes is not None])[0]
        base = [(r, vanilla.get(key(r))) for r in group]
        rel_wall = [r.wall_s / v.wall_s for r, v in base if v and r.wall_s and v.wall_s]
        rel_pass = [r.passes / v.passes for r, v in base if v and r.passes and v.passes]
        out.append([pipe, f"{wall:.2f}", f"{passes:.3g}", fmt(rel_wall), fmt(rel_pass)])
    return Table("cost", "Cost of quantization (per model; relative to vanilla QAT, same init/precision/fraction)",
                 ["pipeline", "wall s", "fwd+bwd passes", "wall vs vanilla QAT", "passes vs vanilla QAT"], out,
                 ["Measured wall time of the quantize stage and its counted forward+backward passes per training "
                  "image summed over training (PTQ: calibration forwards)."])


@report_table(170, "recommended")
def _recommend_table(recommended: list[dict[str, Any]]) -> Table:
    return Table("recommended", "Recommended pipeline per bit budget (highest robustness, then accuracy)",
                 ["bits", "pipeline", "precision", "accuracy %", "robustness %", "passes"],
                 [[("FP" if p["bits"] == 32 else str(p["bits"])), p["pipeline"], p["precision"],
                   f"{100 * p['clean']:.1f}", f"{100 * p['robustness']:.1f}", f"{p['passes']:.3g}"]
                  for p in recommended])


def write_report(plan: Any, store: Any, out: str | Path, formats: Sequence[str] = FORMATS) -> dict[str, Any]:
    """Render the study's report into ``out``.

    Returns:
        ``{"files": [paths], "labels": Table-1 labels, "paper_labels": verdict counts, "rows": n,
        "findings": the Findings table, "regime": the FP references beside the paper's, "evidence": the
        cells behind each verdict}``.

    Raises:
        ConfigError: for an unknown format, or a study with no finished evaluation.
    """
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ConfigError(f"--format must be a comma-separated subset of {', '.join(FORMATS)}, got {list(formats)}")
    study = plan.study
    rows = collect(plan, store)
    if not rows:
        raise ConfigError(f"study {study.name!r}: no finished evaluations in {store.root}: run `robquant run` first")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    inputs = ReportInputs(study, rows, out)
    tables = report_tables(inputs)  # every registered table, in order (robquant.report.sections)
    fig2 = figure2(rows, out)
    pareto_paths = inputs.pareto[0]
    matrices = inputs.matrices
    seeds = sorted({r.seed for r in rows})
    header = (f"Study {study.name}: {study.dataset.name}, {study.model.name}; {len(rows)} evaluated models, seeds "
              f"{seeds}; store {store.root}; written {now_iso()}.")
    heat = transfer_heatmaps(matrices, out)
    figures = [*finding_figures(inputs.judged, out), *fig2, *pareto_paths, *heat, *bit_error_figure(rows, out)]
    files: list[Path] = list(figures)
    if "md" in formats:
        figs = "".join(f"\n![{p.stem}]({p.name})\n" for p in figures if p.suffix == ".png")
        path = out / "report.md"
        path.write_text(f"# Report: {study.name}\n\n{header}\n\n" + "\n".join(t.markdown() for t in tables) + figs)
        files.append(path)
    if "csv" in formats:
        for t in tables:
            path = out / f"{t.name}.csv"
            path.write_text(t.csv())
            files.append(path)
    if "latex" in formats:
        path = out / "report.tex"
        path.write_text("% " + header + "\n" + "\n".join(t.latex() for t in tables))
        files.append(path)
    if "html" in formats:
        path = out / "report.html"
        path.write_text(render_page(f"Report: {study.name}", header, tables, figures))
        files.append(path)
    by_name = {t.name: t for t in tables}
    return {"files": files, "labels": inputs.labels, "paper_labels": inputs.label_comparison[1], "rows": len(rows),
            "findings": inputs.found[0], "regime": by_name.get("regime"), "evidence": inputs.found[1]}
