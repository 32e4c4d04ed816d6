"""The paper's numbers (``report/paper_numbers.yaml``) beside ours: Tables 2-5 and the Table-1 labels."""

from __future__ import annotations

from importlib import resources
from typing import Any

import yaml

from robquant.report.stats import t_interval
from robquant.report.tables import Table


def paper_numbers() -> dict[str, Any]:
    """The typed numbers of the paper, as shipped in the package."""
    text = resources.files("robquant").joinpath("report/paper_numbers.yaml").read_text()
    return yaml.safe_load(text)


def _key(method: str, strategy: str | None, init: str) -> str:
    return "/".join(p for p in (method, strategy, init) if p)


def _mean(values: list[float]) -> float:
    return t_interval(values)[0]


def comparison(rows: list[dict[str, Any]], paper: dict[str, Any]) -> Table:
    """Table 2 cells present in both: ours (mean over seeds, top fraction), the paper's, the difference."""
    top = max((r["fraction"] for r in rows), default=1.0)
    out = []
    for key, cells in paper["table2"].items():
        for precision, theirs in cells.items():
            runs = [r for r in rows if _key(r["method"], r["strategy"], r["init"]) == key
                    and r["precision"] == precision and r["fraction"] == top]
            if not runs:
                continue
            nc = any(r["status"] == "NC" for r in runs)
            acc, rob = (100 * _mean([r[k] for r in runs]) for k in ("clean", "robustness"))
            ours = "NC" if nc else f"{acc:.1f} / {rob:.1f}"
            paper_text = "NC" if theirs == "NC" else f"{theirs[0]:.1f} / {theirs[1]:.1f}"
            if nc or theirs == "NC":
                diff = "both NC" if nc and theirs == "NC" else "NC differs"
            else:
                diff = f"{acc - theirs[0]:+.1f} / {rob - theirs[1]:+.1f}"
            out.append([key, precision, ours, paper_text, diff])
    return Table("paper_table2", "Ours vs the paper (Table 2 cells both have; accuracy / robustness, %)",
                 ["pipeline", "precision", "ours", "paper", "ours - paper"], out,
                 ["The paper: CIFAR-10, ResNet-20, PGD at 8/255. Ours: this study's data, model and main eps; "
                  "compare trends, not absolute numbers, unless the setups match."])


def label_comparison(labels: dict[tuple[str, str | None, str], dict[str, tuple[str, dict[str, float]]]],
                     paper: dict[str, Any]) -> tuple[Table, dict[str, int]]:
    """Table-1 labels: the paper's, ours, and whether they agree, disagree or ours is not significant."""
    out, counts = [], {"agree": 0, "disagree": 0, "not significant": 0, "not run": 0}
    for key, theirs in paper["table1"].items():
        parts = key.split("/")
        pipe = (parts[0], parts[1] if len(parts) == 3 else None, parts[-1])
        for strength, label in theirs.items():
            ours = (labels.get(pipe) or {}).get(strength)
            if ours is None:
                verdict = "not run"
            elif ours[0] == "n.s.":
                verdict = "not significant"
            else:
                verdict = "agree" if ours[0] == label else "disagree"
            counts[verdict] += 1
            out.append([key, strength, label, ours[0] if ours else "", verdict])
    note = ", ".join(f"{k}: {v}" for k, v in counts.items())
    return Table("paper_table1", "Table 1 labels: ours vs the paper", ["pipeline", "attack", "paper", "ours",
                                                                       "verdict"], out, [note]), counts
