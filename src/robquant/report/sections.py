"""The report's tables, each registered where it is defined, under one signature.

A table builder registers itself with :func:`report_table`: its place in the report (``order``) and the
inputs it takes by name, attributes of :class:`ReportInputs` (``rows``, ``main_eps``, ``weak``, ``labels``,
...). It returns a :class:`~robquant.report.tables.Table`, a list of them, or None (nothing to show).
:func:`report_tables` builds every registered table in order; ``write_report`` lists none by hand. A
table of a plug-in (``robquant.plugins``) registers the same way.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from robquant.report.records import Row

# (order, name, build(inputs)) of every registered table
TABLES: list[tuple[float, str, Callable[["ReportInputs"], Any]]] = []


def report_table(order: float, *inputs: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a table builder at ``order``, called with the named :class:`ReportInputs` attributes."""
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        if any(name == fn.__name__ for _, name, _ in TABLES):
            raise ValueError(f"report table {fn.__name__!r} is registered already")
        TABLES.append((order, fn.__name__, lambda r: fn(*(getattr(r, a) for a in inputs))))
        return fn
    return register


class ReportInputs:
    """What the tables are built from: a study's rows (one per evaluated model), computed once each."""

    def __init__(self, study: Any, rows: list[Row], out: Path) -> None:
        self.study, self.rows, self.out = study, rows, Path(out)
        ev = study.evaluation
        self.main_eps, self.weak = ev.main_eps, ev.weak()
        self.setup = f"{study.dataset.name}, {study.model.name}, {len({r.seed for r in rows})} seeds"
        # the paper's attack on the 8-bit grid, when the study runs one (its table beside the unconstrained one)
        self.grid = next((a.label or a.name for a in ev.attacks if a.name == "pgd" and a.pixel_grid), None)

    @cached_property
    def paper(self) -> dict[str, Any]:
        from robquant.report.paper import paper_numbers

        return paper_numbers()

    @property
    def paper_regime(self) -> dict[str, Any]:
        return self.paper["regime"]

    @property
    def paper_table1(self) -> dict[str, Any]:
        return self.paper["table1"]

    @cached_property
    def labels(self) -> dict[Any, Any]:
        from robquant.report.tables import trend_labels

        return trend_labels(self.rows, self.weak, self.main_eps)

    @cached_property
    def label_comparison(self) -> tuple[Any, dict[str, Any]]:
        from robquant.report.paper import label_comparison

        return label_comparison(self.labels, self.paper)

    @cached_property
    def judged(self) -> list[Any]:
        """The paper's findings judged on this study (:class:`robquant.report.findings.Finding`)."""
        from robquant.report.findings import findings

        return findings(self.rows, self.weak, self.main_eps)

    @cached_property
    def found(self) -> list[Any]:
        """The Findings table and the evidence behind each verdict."""
        from robquant.report.findings import findings_tables

        return findings_tables(self.judged)

    @cached_property
    def matrices(self) -> dict[str, dict[str, Any]]:
        from robquant.report.figures import transfer_matrices

        return transfer_matrices(self.rows)

    @cached_property
    def pareto(self) -> tuple[list[Path], list[dict[str, Any]]]:
        """The Pareto figures (written into ``out``) and the recommended pipeline per bit budget."""
        from robquant.report.figures import pareto

        return pareto(self.rows, self.out)

    @property
    def recommended(self) -> list[dict[str, Any]]:
        return self.pareto[1]


def report_tables(inputs: ReportInputs) -> list[Any]:
    """Every registered table in order; empty ones left out (the Findings table always kept)."""
    tables = []
    for _, _, build in sorted(TABLES, key=lambda t: t[0]):
        made = build(inputs)
        tables.extend(made if isinstance(made, list) else [made])
    return [t for t in tables if t is not None and (t.rows or t.name == "findings")]
