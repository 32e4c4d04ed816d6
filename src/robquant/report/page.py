"""The HTML report: one self-contained page a reader takes in at a glance.

A contents bar (sticky; a link per section), the Findings first, each a row with its verdict as a
coloured badge (one colour per verdict, the Okabe-Ito palette, safe for colour-blind readers, with a
legend) and the cells behind it folded under it (``<details>``: each cell's value, its difference from
the reference with the interval, and what would decide it); then the regime, Table 2 as a heatmap
(robustness per pipeline x precision, the cell's text on hover), Table 1, what lies beyond the paper,
deployment, cost and the recommendation, each section with the figures that illustrate it. No network,
no framework: the figures are inlined as PNG, and three lines of script open every fold for printing.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path
from typing import Sequence

from robquant.report.tables import Table

# (anchor, title): the page's sections in order
SECTIONS = (("findings", "Findings"), ("regime", "Regime"), ("table2", "Table 2"), ("table1", "Table 1"),
            ("beyond", "Beyond the paper"), ("deployment", "Deployment"), ("cost", "Cost and recommendation"),
            ("more", "More tables"))
SECTION_OF = {"findings": "findings", "regime": "regime", "finetune": "regime",
              "table2": "table2", "table2_paper_attack": "table2", "paper_table2": "table2", "table3": "table2",
              "table4": "table2", "table5": "table2", "paper_table3": "table2", "paper_table4": "table2",
              "paper_table5": "table2", "table1": "table1", "paper_table1": "table1", "pixel_grid": "table1",
              "beyond": "beyond", "transfer_matrix": "beyond", "bitflip": "beyond", "bit_errors": "beyond",
              "corruptions": "beyond", "deployed": "deployment", "cost": "cost", "recommended": "cost"}
FIGURE_SECTION = (("figure2", "table1"), ("pareto", "cost"), ("transfer_matrix", "beyond"),
                  ("bit_errors", "beyond"))
HEATMAP_TABLES = ("table2", "table2_paper_attack")
FOLDED = "findings_evidence"  # folded under each finding, not a table of its own
FINDING_FIGURE = "finding-"  # finding-<key>.png: folded under that finding, beside its cells

# verdict -> (css class, colour): Okabe-Ito blue, vermillion, orange, grey, and a light grey
VERDICTS = (("reproduced", "v-reproduced", "#0072B2"), ("contradicted", "v-contradicted", "#D55E00"),
            ("eroded", "v-eroded", "#E69F00"), ("not significant", "v-ns", "#6B6B6B"),
            ("not comparable", "v-nc", "#B0B0B0"), ("not run", "v-none", "#B0B0B0"))

_CSS = """body{font-family:system-ui,sans-serif;margin:0;color:#222;line-height:1.4}
nav{position:sticky;top:0;background:#f4f6fa;border-bottom:1px solid #ccd;padding:6px 16px;z-index:1}
nav a{margin-right:14px;color:#0b4f8a;text-decoration:none;font-size:14px;white-space:nowrap}
main{max-width:1200px;margin:0 auto;padding:0 16px 40px}section{scroll-margin-top:44px}
h1{font-size:22px}h2{border-bottom:2px solid #dde;padding-bottom:2px;margin-top:1.6em}h3{font-size:15px}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}td,th{border:1px solid #bbb;padding:3px 8px;
vertical-align:top}th{background:#eef}.note{font-size:12px;color:#555;max-width:1100px}
img{max-width:100%;border:1px solid #ddd;margin:.5em 0}figure{margin:.8em 0}figcaption{font-size:12px;color:#555}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;font-weight:600}
.legend .badge{margin-right:6px}details{margin:2px 0}summary{cursor:pointer;font-size:12px;color:#0b4f8a}
details table{font-size:12px}td.finding{max-width:420px}.scroll{overflow-x:auto;max-width:100%}
@media print{nav{display:none}section{break-inside:avoid-page}.scroll{overflow:visible}}"""
_CSS += "".join(f".{cls}{{background:{colour}}}" for _, cls, colour in VERDICTS)
_PRINT_JS = ("<script>addEventListener('beforeprint',()=>document.querySelectorAll('details')"
             ".forEach(d=>d.open=true));</script>")


def verdict_class(text: str) -> str:
    """The badge class of a verdict (by its first words), '' for text that is no verdict."""
    low = text.strip().lower()
    return next((cls for word, cls, _ in VERDICTS if low.startswith(word)), "")


def badge(text: str) -> str:
    cls = verdict_class(text)
    esc = html.escape(text)
    return f"<span class='badge {cls}'>{esc}</span>" if cls else esc


def _heat(text: str) -> str:
    """A Table 2 cell coloured by its robustness (the number after ' / '); its text on hover."""
    m = re.search(r"/\s*(-?\d+(?:\.\d+)?)", text)
    if not m:
        return f"<td>{html.escape(text)}</td>"
    value = max(0.0, min(100.0, float(m.group(1))))
    light = 97 - 0.45 * value  # 97 % lightness at 0 % robust, 52 % at 100 %
    ink = "#fff" if light < 62 else "#222"
    return (f"<td style='background:hsl(210,70%,{light:.0f}%);color:{ink}' title='{html.escape(text)}'>"
            f"{html.escape(text)}</td>")


def table_html(table: Table, heat: bool = False) -> str:
    """A table with its title and notes; verdict cells as badges; ``heat``: cells coloured by robustness."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table.columns)
    verdict_cols = {i for i, c in enumerate(table.columns) if "verdict" in c.lower()}

    def cell(i: int, text: str) -> str:
        if i in verdict_cols:
            return f"<td>{badge(text)}</td>"
        return _heat(text) if heat and i > 0 else f"<td>{html.escape(text)}</td>"

    body = "".join("<tr>" + "".join(cell(i, c) for i, c in enumerate(r)) + "</tr>" for r in table.rows)
    notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in table.notes)
    return (f"<h3 id='t-{html.escape(table.name)}'>{html.escape(table.title)}</h3><div class='scroll'><table><thead>"
            f"<tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{notes}")


def findings_html(summary: Table, evidence: Table | None, figures: dict[str, Path] | None = None) -> str:
    """The Findings: a row per finding, its verdict badges, the paper's statement beside them and its
    cells folded under it, with the finding's figure (``figures``: by finding key) where it has one."""
    legend = "<p class='legend'>" + "".join(f"<span class='badge {cls}'>{word}</span>"
                                           for word, cls, _ in VERDICTS[:5]) + "</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in summary.columns)
    by_key: dict[str, list[list[str]]] = {}
    if evidence is not None:
        for row in evidence.rows:
            by_key.setdefault(row[0], []).append(row[1:])
    rows = []
    for key, r in zip(summary.row_keys or [""] * len(summary.rows), summary.rows):
        cells = "".join(f"<td class='finding'>{html.escape(c)}</td>" if i == 0 else
                        (f"<td>{badge(c)}</td>" if summary.columns[i].startswith("verdict") else
                         f"<td>{html.escape(c)}</td>") for i, c in enumerate(r))
        rows.append(f"<tr>{cells}</tr>")
        mine = by_key.get(key, [])
        fig = _figure(figures[key]) if figures and key in figures else ""
        if mine and evidence is not None:
            cols = "".join(f"<th>{html.escape(c)}</th>" for c in evidence.columns[1:])
            inner = "".join("<tr>" + "".join(f"<td>{badge(c) if j == 4 else html.escape(c)}</td>"
                                             for j, c in enumerate(e)) + "</tr>" for e in mine)
            rows.append(f"<tr><td colspan='{len(summary.columns)}'><details><summary>the {len(mine)} cell"
                        f"{'s' if len(mine) != 1 else ''} behind this verdict</summary><table><thead><tr>{cols}"
                        f"</tr></thead><tbody>{inner}</tbody></table>{fig}</details></td></tr>")
    notes = "".join(f"<p class='note'>{html.escape(n)}</p>" for n in summary.notes)
    ev_title = f"<p class='note'>{html.escape(evidence.title)}</p>" if evidence is not None else ""
    return (f"<h3 id='t-findings'>{html.escape(summary.title)}</h3>{legend}<table><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>{notes}{ev_title}")


def _figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (f"<figure id='f-{html.escape(path.stem)}'><img alt='{html.escape(path.stem)}' "
            f"src='data:image/png;base64,{data}'><figcaption>{html.escape(path.name)}</figcaption></figure>")


def render_page(title: str, header: str, tables: Sequence[Table], figures: Sequence[Path]) -> str:
    """The whole page (see the module docstring)."""
    by_name = {t.name: t for t in tables}
    parts: dict[str, list[str]] = {anchor: [] for anchor, _ in SECTIONS}
    for t in tables:
        if t.name == FOLDED:
            continue
        if t.name == "findings":
            parts["findings"].append(findings_html(t, by_name.get(FOLDED), {
                p.stem[len(FINDING_FIGURE):]: p for p in figures if p.suffix == ".png" and p.stem.startswith(FINDING_FIGURE)}))
            continue
        parts[SECTION_OF.get(t.name, "more")].append(table_html(t, heat=t.name in HEATMAP_TABLES))
    for p in figures:
        if p.suffix == ".png" and not p.stem.startswith(FINDING_FIGURE):
            section = next((s for prefix, s in FIGURE_SECTION if p.stem.startswith(prefix)), "more")
            parts[section].append(_figure(p))
    present = [(a, name) for a, name in SECTIONS if parts[a]]
    nav = "<nav>" + "".join(f"<a href='#{a}'>{html.escape(name)}</a>" for a, name in present) + "</nav>"
    body = "".join(f"<section id='{a}'><h2>{html.escape(name)}</h2>{''.join(parts[a])}</section>"
                   for a, name in present)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{nav}<main><h1>{html.escape(title)}</h1><p>{html.escape(header)}</p>"
            f"{body}</main>{_PRINT_JS}</body></html>")
