"""``robquant report``: every table and figure of a study, from its store alone."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Sequence

from robquant.errors import ConfigError
from robquant.provenance import now_iso
from robquant.report.beyond import beyond_table
from robquant.report.figures import figure2, pareto, transfer_heatmaps, transfer_matrices
from robquant.report.findings import findings, findings_tables, pixel_grid_table, regime_table
from robquant.report.paper import appendix_comparison, comparison, label_comparison, paper_numbers
from robquant.report.records import collect
from robquant.report.stats import t_interval
from robquant.report.tables import (Table, bitflip_table, deployed_table, table1, table2, table2_reference, table3,
                                    table45, transfer_matrix_table, trend_labels)

FORMATS = ("md", "latex", "csv", "html")

_CSS = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #bbb;padding:3px 8px}
th{background:#eef}.note{font-size:12px;color:#555}img{max-width:100%;border:1px solid #ddd}"""


def cost_table(rows: list[dict[str, Any]]) -> Table:
    """Per pipeline: quantization wall time and passes, mean over cells, relative to vanilla QAT from
    the same init at the same precision and fraction (the paper's "7x" for PGD-7 becomes measured)."""
    def key(r: dict[str, Any]) -> tuple[Any, ...]:
        return (r["init"], r["precision"], r["fraction"], r["seed"])

    def fmt(v: list[float]) -> str:
        return f"{t_interval(v)[0]:.2f}x" if v else ""

    vanilla = {key(r): r for r in rows if r["method"] == "qat" and r["strategy"] == "vanilla"}
    out = []
    for pipe in dict.fromkeys(r["pipeline"] for r in rows):
        group = [r for r in rows if r["pipeline"] == pipe]
        wall = t_interval([r["wall_s"] for r in group if r["wall_s"] is not None])[0]
        passes = t_interval([r["passes"] for r in group if r["passes"] is not None])[0]
        base = [(r, vanilla.get(key(r))) for r in group]
        rel_wall = [r["wall_s"] / v["wall_s"] for r, v in base if v and r["wall_s"] and v["wall_s"]]
        rel_pass = [r["passes"] / v["passes"] for r, v in base if v and r["passes"] and v["passes"]]
        out.append([pipe, f"{wall:.2f}", f"{passes:.3g}", fmt(rel_wall), fmt(rel_pass)])
    return Table("cost", "Cost of quantization (per model; relative to vanilla QAT, same init/precision/fraction)",
                 ["pipeline", "wall s", "fwd+bwd passes", "wall vs vanilla QAT", "passes vs vanilla QAT"], out,
                 ["Measured wall time of the quantize stage and its counted forward+backward passes per training "
                  "image summed over training (PTQ: calibration forwards)."])


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
    ev = study.evaluation
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weak = ev.weak()
    labels = trend_labels(rows, weak, ev.main_eps)
    paper = paper_numbers()
    label_table, verdicts = label_comparison(labels, paper)
    found = findings_tables(findings(rows, weak, ev.main_eps))
    setup = f"{study.dataset.name}, {study.model.name}, {len({r['seed'] for r in rows})} seeds"
    regime = regime_table(rows, ev.main_eps, setup, paper["regime"])
    tables = [found[0], regime, found[1], beyond_table(rows, ev.main_eps), table2(rows, ev.main_eps),
              table2_reference(rows, ev.main_eps),
              table3(rows, ev.main_eps), *table45(rows, ev.main_eps), table1(labels, weak, ev.main_eps, paper["table1"]),
              label_table,
              comparison(rows, paper), *appendix_comparison(rows, paper), cost_table(rows),
              deployed_table(rows, ev.main_eps), bitflip_table(rows)]
    matrices = transfer_matrices(rows)
    tables.append(transfer_matrix_table(matrices, ev.main_eps))
    grid = next((a.label or a.name for a in ev.attacks if a.name == "pgd" and a.pixel_grid), None)
    if grid is not None:  # the paper's attack on the 8-bit grid, beside the unconstrained one, and what it moves
        tables.insert(4, pixel_grid_table(rows, grid, weak, ev.main_eps))
    fig2 = figure2(rows, out)
    pareto_paths, recommended = pareto(rows, out)
    tables.append(_recommend_table(recommended))
    tables = [t for t in tables if t is not None and (t.rows or t.name == "findings")]
    seeds = sorted({r["seed"] for r in rows})
    header = (f"Study {study.name}: {study.dataset.name}, {study.model.name}; {len(rows)} evaluated models, seeds "
              f"{seeds}; store {store.root}; written {now_iso()}.")
    heat = transfer_heatmaps(matrices, out)
    files: list[Path] = [*fig2, *pareto_paths, *heat]
    if "md" in formats:
        figs = "".join(f"\n![{p.stem}]({p.name})\n" for p in (*fig2, *pareto_paths, *heat) if p.suffix == ".png")
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
        imgs = "".join(f"<h3>{p.stem}</h3><img alt='{p.stem}' src='data:image/png;base64,"
                       f"{base64.b64encode(p.read_bytes()).decode()}'>" for p in (*fig2, *pareto_paths, *heat)
                       if p.suffix == ".png")
        page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>robquant report: "
                f"{html.escape(study.name)}</title><style>{_CSS}</style></head><body><h1>Report: "
                f"{html.escape(study.name)}</h1><p>{html.escape(header)}</p>"
                + "".join(t.html() for t in tables) + imgs + "</body></html>")
        path = out / "report.html"
        path.write_text(page)
        files.append(path)
    return {"files": files, "labels": labels, "paper_labels": verdicts, "rows": len(rows), "findings": found[0],
            "regime": regime, "evidence": found[1]}
