"""The paper's numbers (``report/paper_numbers.yaml``) beside ours: Tables 2-5 and the Table-1 labels."""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from robquant.report.records import Row, cell_name
from robquant.report.stats import t_interval
from robquant.report.tables import Table, label_verdict
from robquant.report.sections import report_table


def paper_numbers() -> dict[str, Any]:
    """The typed numbers of the paper, as shipped in the package."""
    text = resources.files("robquant").joinpath("report/paper_numbers.yaml").read_text()
    return yaml.safe_load(text)


def _mean(values: list[float]) -> float:
    return t_interval(values)[0]


@report_table(110, "rows", "paper")
def comparison(rows: list[Row], paper: dict[str, Any]) -> Table:
    """Table 2 cells present in both: ours (mean over seeds, top fraction), the paper's, the difference."""
    top = max((r.fraction for r in rows), default=1.0)
    out = []
    for key, cells in paper["table2"].items():
        for precision, theirs in cells.items():
            runs = _robust_cells(rows, key, precision, top)
            if runs:
                out.append([key, precision, *_ours_vs_theirs(runs, theirs, ("clean", "robustness"))])
    return Table("paper_table2", "Ours vs the paper (Table 2 cells both have; accuracy / robustness, %)",
                 ["pipeline", "precision", "ours", "paper", "ours - paper"], out,
                 ["The paper: CIFAR-10, ResNet-20, PGD at 8/255. Ours: this study's data, model and main eps, "
                  "robustness = the worst case over our attacks; compare trends, not absolute numbers, unless the "
                  "setups match. NC (ours): a non-finite training loss or a final clean accuracy within 5 points "
                  "of chance (<= 15 % on 10 classes); the paper does not state its rule."])


def _robust_cells(rows: list[Row], key: str, precision: str, fraction: float) -> list[Row]:
    return [r for r in rows if cell_name(r.method, r.strategy, r.init) == key and r.precision == precision
            and abs(r.fraction - fraction) < 1e-9]


def _ours_vs_theirs(runs: list[Row], theirs: Any, fields: tuple[str, ...]) -> tuple[str, str, str]:
    """Our cell (mean over seeds, %), the paper's, and the difference; NC on either side is stated."""
    theirs_list = theirs if isinstance(theirs, list) else [theirs]
    nc = any(r.status == "NC" for r in runs)
    ours = [100 * _mean([getattr(r, k) for r in runs]) for k in fields]
    ours_text = "NC" if nc else " / ".join(f"{v:.1f}" for v in ours)
    paper_text = "NC" if theirs == "NC" else " / ".join(f"{v:.1f}" for v in theirs_list)
    if nc or theirs == "NC":
        diff = "both NC" if nc and theirs == "NC" else "NC differs"
    else:
        diff = " / ".join(f"{a - b:+.1f}" for a, b in zip(ours, theirs_list))
    return ours_text, paper_text, diff


@report_table(120, "rows", "paper")
def appendix_comparison(rows: list[Row], paper: dict[str, Any]) -> list[Table]:
    """Tables 3 (QAT/transfer from robust by data fraction), 4 and 5 (QAT/transfer by init): our
    cells beside the paper's, with the differences, where both have the cell."""
    t3 = []
    for frac, cells in paper["table3"].items():
        for precision, theirs in cells.items():
            runs = _robust_cells(rows, "qat/transfer/robust", precision, float(frac))
            if runs:
                t3.append([f"{100 * float(frac):g}%", precision, *_ours_vs_theirs(runs, theirs, ("clean", "robustness"))])
    top = max((r.fraction for r in rows), default=1.0)
    t45: dict[str, list[list[str]]] = {"table4": [], "table5": []}
    for name, field_ in (("table4", "clean"), ("table5", "robustness")):
        for init, cells in paper[name].items():
            for precision, theirs in cells.items():
                runs = _robust_cells(rows, f"qat/transfer/{init}", precision, top)
                if runs:
                    t45[name].append([init, precision, *_ours_vs_theirs(runs, theirs, (field_,))])
    note = "The paper: CIFAR-10, ResNet-20, all training data unless stated; compare trends unless the setups match."
    return [Table("paper_table3", "Ours vs the paper, Table 3 (QAT/transfer from robust; accuracy / robustness, %)",
                  ["data", "precision", "ours", "paper", "ours - paper"], t3, [note]),
            Table("paper_table4", "Ours vs the paper, Table 4 (QAT/transfer accuracy, %)",
                  ["init", "precision", "ours", "paper", "ours - paper"], t45["table4"], [note]),
            Table("paper_table5", "Ours vs the paper, Table 5 (QAT/transfer robustness, %)",
                  ["init", "precision", "ours", "paper", "ours - paper"], t45["table5"], [note])]


def label_comparison(labels: dict[tuple[str, str | None, str], dict[str, tuple[str, dict[str, float]]]],
                     paper: dict[str, Any]) -> tuple[Table, dict[str, int]]:
    """Table-1 labels: the paper's, ours, and whether they agree, disagree or ours is not significant."""
    out, counts = [], {"agree": 0, "disagree": 0, "not significant": 0, "not run": 0}
    for key, theirs in paper["table1"].items():
        parts = key.split("/")
        pipe = (parts[0], parts[1] if len(parts) == 3 else None, parts[-1])
        for strength, label in theirs.items():
            ours = (labels.get(pipe) or {}).get(strength)
            verdict = "not run" if ours is None else label_verdict(ours[0], label)
            counts[verdict] += 1
            out.append([key, strength, label, ours[0] if ours else "", verdict])
    note = ", ".join(f"{k}: {v}" for k, v in counts.items())
    return Table("paper_table1", "Table 1 labels: ours vs the paper", ["pipeline", "attack", "paper", "ours",
                                                                       "verdict"], out, [note]), counts


@report_table(100, "label_comparison")
def label_table(compared: tuple[Table, dict[str, Any]]) -> Table:
    """Table 1's labels beside the paper's."""
    return compared[0]

