"""Terminal display for the CLI: rich progress bars with ETA and result tables."""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Any, Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Column, Table

from robquant.defaults import CHECK_TOL


class _RichTask:
    def __init__(self, progress: Progress, task_id: Any) -> None:
        self._progress, self._id = progress, task_id

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._id, n)

    def update(self, **fields: object) -> None:
        info = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items())
        self._progress.update(self._id, info=info)


class RichProgress:
    """Implements :class:`robquant.progress.Progress` with rich bars (elapsed time and ETA)."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            # the description gives way first: on a narrow terminal the counts and the ETA stay visible
            TextColumn("{task.description}", table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis")),
            BarColumn(bar_width=20), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
            console=console, transient=True, expand=True)

    def __enter__(self) -> "RichProgress":
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    @contextmanager
    def task(self, description: str, total: int) -> Iterator[_RichTask]:
        task_id = self._progress.add_task(description, total=total, info="")
        try:
            yield _RichTask(self._progress, task_id)
        finally:
            self._progress.remove_task(task_id)


def robustness_table(title: str, result: dict[str, Any]) -> Table:
    """A table: one row per attack (plus the per-example worst case), one column per eps."""
    eps_values = sorted({r["eps_255"] for r in result["robust"]})
    table = Table(title=title)
    table.add_column("attack")
    table.add_column("clean", justify="right")
    for e in eps_values:
        table.add_column(f"{e:g}/255", justify="right")
    clean = f"{100 * result['clean_accuracy']:.2f}"
    by_attack: dict[str, dict[float, float]] = {}
    for r in result["robust"]:
        n = r.get("n", result["n"])
        label = r["attack"] if n == result["n"] else f"{r['attack']} (first {n})"
        by_attack.setdefault(label, {})[r["eps_255"]] = r["accuracy"]
    for attack, row in by_attack.items():
        table.add_row(attack, clean, *[f"{100 * row[e]:.2f}" for e in eps_values])
    if len(by_attack) > 1:
        worst = {r["eps_255"]: r["accuracy"] for r in result["worst_case"]}
        common = sorted({r.get("n", result["n"]) for r in result["worst_case"]})
        label = "worst case" + ("" if common == [result["n"]] else f" (first {'/'.join(map(str, common))})")
        table.add_row(label, clean, *[f"{100 * worst[e]:.2f}" if e in worst else "" for e in eps_values])
    table.caption = f"accuracy in % on {result['n']} test examples"
    return table


def plan_table(rows: list[dict[str, Any]], limit: int = 40) -> Table:
    """The dry-run listing: one row per stage (first ``limit``)."""
    table = Table(title="plan")
    for col in ("key", "kind", "stage", "status", "forward", "backward"):
        table.add_column(col, justify="right" if col in ("forward", "backward") else "left")
    for r in rows[:limit]:
        table.add_row(r["key"][:10], r["kind"], r["label"], r["status"], f"{r['forward']:.3g}", f"{r['backward']:.3g}")
    if len(rows) > limit:
        table.caption = f"... and {len(rows) - limit} more stages"
    return table


def summary_table(title: str, cells: list[Any]) -> Table:
    """Table-2 layout: rows = pipelines, columns = precision, cells 'accuracy / robustness' in %,
    mean over seeds; NC where any seed did not converge. ``cells`` are the report's rows
    (:func:`robquant.report.collect`)."""
    precisions = list(dict.fromkeys(c.precision for c in cells))
    groups: dict[str, dict[str, list[Any]]] = {}
    for c in cells:
        groups.setdefault(c.pipeline, {}).setdefault(c.precision, []).append(c)
    table = Table(title=title)
    table.add_column("pipeline")
    for p in precisions:
        table.add_column(p, justify="right")
    for row, by_prec in groups.items():
        values = []
        for p in precisions:
            runs = by_prec.get(p, [])
            if not runs:
                values.append("")
            elif any(r.status == "NC" for r in runs):
                values.append("NC")
            else:
                acc = sum(r.clean for r in runs) / len(runs)
                rob = sum(r.robustness for r in runs) / len(runs)
                mark = " !" if any(r.flags for r in runs) else ""
                values.append(f"{100 * acc:.1f} / {100 * rob:.1f}{mark}")
        table.add_row(row, *values)
    counts: dict[str, int] = {}
    for c in cells:
        for f in c.flags or []:
            counts[f] = counts.get(f, 0) + 1
    if counts:
        table.caption = "! = a trust check fired: " + ", ".join(f"{k} ({v})" for k, v in sorted(counts.items()))
    return table


def diagnostics_table(diag: dict[str, Any]) -> Table:
    """The trust checks of one model: flag, figure, threshold."""
    table = Table(title=f"trust checks at {diag['eps_255']:g}/255 on {diag['n']} examples")
    for col in ("check", "flag", "value", "threshold", "what"):
        table.add_column(col, justify="right" if col in ("value", "threshold") else "left")
    for name, c in diag["checks"].items():
        flag = "not run" if c["flag"] is None else ("FLAG" if c["flag"] else "ok")
        value = "" if c["value"] is None else f"{c['value']:.4g}"
        table.add_row(name, flag, value, f"{c['threshold']:g}", c["detail"])
    accs = ", ".join(f"{k} {100 * v:.1f}" for k, v in diag["accuracy"].items())
    table.caption = f"accuracy in % under each attack: {accs}"
    return table


def deployed_table(title: str, results: list[dict[str, Any]]) -> Table:
    """A deployed model's robustness on its runtime, per budget, beside the fake-quantized model's."""
    table = Table(title=title)
    for col in ("eps /255", "n", "clean %", "transfer %", "square %", "robust %", "fake-quant PGD %",
                "fake-quant square %", "agree clean %", "agree adv %", "flag"):
        table.add_column(col, justify="right")
    for r in results:
        acc = r["accuracy"]
        table.add_row(f"{r['eps_255']:g}", str(r["n"]), f"{100 * r['clean_accuracy']:.1f}",
                      f"{100 * acc['transfer']:.1f}", f"{100 * acc['square']:.1f}", f"{100 * r['robustness']:.1f}",
                      f"{100 * acc['reference_pgd']:.1f}", f"{100 * acc['reference_square']:.1f}",
                      f"{100 * r['clean_agreement']:.1f}",
                      f"{100 * r['adversarial_agreement']:.1f}", "FLAG" if r["flag"] else "ok")
    threshold = results[0]["threshold"] if results else CHECK_TOL
    notes = []
    for r in results:  # where fusion off restores agreement, the fusion is the cause
        u = r.get("unfused")
        if u and min(u["clean_agreement"], u["adversarial_agreement"]) >= 1 - threshold:
            notes.append(f"At {r['eps_255']:g}/255 the runtime's QDQ fusion is the cause: with --no-fusion it agrees "
                         f"on {100 * u['clean_agreement']:.1f} % clean, {100 * u['adversarial_agreement']:.1f} % "
                         "adversarial (the fusion quantizes float weights beside quantized activations to int8).")
    runtime = results[0]["runtime"] if results else ""
    if results and results[0].get("fusion") is False:
        runtime += " (QDQ fusion off)"
    notes.append(f"{runtime}: transfer = PGD crafted on the fake-quantized model; square = gradient-free on the "
                 "runtime (and, same seed, on the fake-quantized model); robust = under both; agreement = top-1 "
                 f"with the fake-quantized model; FLAG: a mismatch above {100 * threshold:g} points")
    table.caption = " ".join(notes)
    return table


def bitflip_table(title: str, result: dict[str, Any]) -> Table:
    """Flips to break a model (clean accuracy at most chance + 1 point), per method: per seed, the mean
    and 95 % interval over the seeds that broke it, and how many did not within the cap."""
    table = Table(title=title)
    for col in ("attacker", "flips per seed", "mean [95 % interval]", "not broken (cap)", "accuracy before %",
                "after %"):
        table.add_column(col, justify="right")
    for method in sorted(result["summary"], key=lambda m: (m != "search", m)):  # the search first
        s = result["summary"][method]
        runs = [r for r in result["runs"] if r["method"] == method]
        mean = "-" if s["mean"] is None else f"{s['mean']:.1f}"
        if s["ci95"] is not None:
            mean += f" [{s['ci95'][0]:.1f}, {s['ci95'][1]:.1f}]"
        table.add_row(method, ", ".join(f">{s['cap']}" if f is None else str(f) for f in s["flips"]), mean,
                      f"{s['censored']} ({s['cap']})",
                      "/".join(f"{100 * r['accuracy_before']:.1f}" for r in runs),
                      "/".join(f"{100 * r['accuracy_after']:.1f}" for r in runs))
    table.caption = (f"Broken: accuracy on the first {result['n']} test examples at most "
                     f"{100 * result['target']:.1f} % "
                     "(chance, the largest class's share there, + 1 point). search: progressive bit search on an "
                     f"attack batch of {result['attack_batch']} other test examples per seed; random: bits drawn "
                     "uniformly. A model not broken within the cap counts as '>cap' and is left out of the mean.")
    return table


def report_table(table: Any) -> Table:
    """A report table (:class:`robquant.report.tables.Table`) for the terminal, its notes as caption."""
    out = Table(title=table.title, show_lines=True)
    for col in table.columns:
        out.add_column(col)
    for row in table.rows:
        out.add_row(*row)
    out.caption = " ".join(table.notes)
    return out


SUMMARY_WIDTH = 100  # the terminal summary's columns, whatever the terminal (it fits most)
VERDICT_WIDTH = 19  # the terminal Findings' verdict columns: "not comparable (NC)" on one line
# the terminal's style per verdict badge of the HTML report (robquant.report.page.VERDICTS names them)
VERDICT_STYLES = {"v-reproduced": "bold blue", "v-contradicted": "bold red", "v-eroded": "bold yellow",
                  "v-ns": "dim", "v-nc": "dim", "v-none": "dim"}


def _verdict(text: str) -> str:
    from rich.markup import escape

    from robquant.report.page import verdict_class

    style = VERDICT_STYLES.get(verdict_class(text), "")
    return f"[{style}]{escape(text)}[/]" if style else escape(text)


def findings_summary(table: Any) -> Table:
    """The Findings for the terminal: each claim and its verdict per measure, without the cells behind them
    (the report has those) or the notes; fits :data:`SUMMARY_WIDTH` columns."""
    from rich import box
    from rich.markup import escape

    verdicts = [i for i, c in enumerate(table.columns) if c.startswith("verdict")]
    out = Table(title="Findings (each verdict's cells: in the report)", box=box.SIMPLE_HEAD, padding=(0, 1),
                title_justify="left")
    out.add_column("the paper's finding", ratio=1)
    for i in verdicts:  # the longest verdict word on one line ("not significant" / "at this scale" on two)
        out.add_column(table.columns[i].removeprefix("verdict: "), width=VERDICT_WIDTH)
    for row in table.rows:  # the claim without its bracketed note (the report and --verbose have it)
        claim = row[0].split(" [", 1)[0] + (" [note: see the report]" if " [" in row[0] else "")
        out.add_row(escape(claim), *[_verdict(row[i]) for i in verdicts])
    return out


def regime_summary(table: Any) -> Table:
    """The regime (the FP models beside the paper's) for the terminal, without its notes; each value's
    ``(n=seeds x examples)`` said once per model in the caption, so that a row fits a line or two."""
    from rich import box
    from rich.markup import escape

    out = Table(title=table.title, box=box.SIMPLE_HEAD, padding=(0, 1), title_justify="left",
                caption_justify="left", expand=True)
    for i, col in enumerate(table.columns):
        out.add_column(col, ratio=5 if i == 0 else 2)
    sizes = []
    for row in table.rows:
        found = [_SIZE.search(c) for c in row]
        out.add_row(*(escape(_SIZE.sub("", c)) for c in row))
        counts = list(dict.fromkeys(m.group(1) for m in found if m))
        if counts:
            each = counts[0] if len(counts) == 1 else ", ".join(
                f"{table.columns[i].removesuffix(' %')} {m.group(1)}" for i, m in enumerate(found) if m)
            sizes.append(f"{row[0].split(' (')[0]}: {each}")
    if sizes:
        out.caption = "n (seeds x test examples): " + "; ".join(sizes)
    return out


_SIZE = re.compile(r" \(n=(\d+x\d+)\)$")


def options_reference() -> str:
    """Every option a study file and the attacks take, as markdown tables generated from their declarations
    (the study schema's fields, each attack's declared options): ``docs/options.md`` is this text
    (``robquant list --markdown``), so the docs cannot drift from the code."""
    import re
    import typing

    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined

    from robquant.attacks import ATTACKS
    from robquant.pipeline.study import Study

    def cell(text: Any) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    def type_name(annotation: Any) -> str:
        origin, args = typing.get_origin(annotation), typing.get_args(annotation)
        if origin is typing.Annotated:
            return type_name(args[0])
        if origin is typing.Literal:
            return "one of " + ", ".join(map(str, args))
        if origin is typing.Union or type(annotation).__name__ == "UnionType":
            return " or ".join(type_name(a) for a in args)
        if origin is not None:
            return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_name(a) for a in args)}]"
        if annotation is type(None):
            return "None"
        if isinstance(annotation, type):
            return annotation.__name__
        return re.sub(r"\b(?:typing|robquant\.[\w.]+)\.", "", str(annotation))

    def models_in(annotation: Any) -> list[type]:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return [annotation]
        return [m for arg in typing.get_args(annotation) for m in models_in(arg)]

    rows: list[str] = []

    def walk(model: type, prefix: str) -> None:
        for name, info in model.model_fields.items():
            path = f"{prefix}{name}"
            inner = models_in(info.annotation)
            if info.default_factory is not None:
                default = info.default_factory()
            else:
                default = info.default
            if default is PydanticUndefined:
                shown = "required"
            elif isinstance(default, BaseModel):
                shown = "(section)"
            elif isinstance(default, list) and default and all(isinstance(d, BaseModel) for d in default):
                shown = ", ".join(f"`{getattr(d, 'name', type(d).__name__)}`" for d in default) + " (its defaults)"
            else:
                shown = f"`{default!r}`" if default is not None else "`None`"
            is_list = typing.get_origin(info.annotation) is list or any(
                typing.get_origin(a) is list for a in typing.get_args(info.annotation))
            rows.append(f"| `{path}` | {cell(type_name(info.annotation))} | {cell(shown)} | "
                        f"{cell(info.description or '')} |")
            for sub in inner:
                walk(sub, f"{path}[]." if is_list else f"{path}.")

    walk(Study, "")
    out = ["# Options", "",
           "Generated from the code's declarations by `robquant list --markdown` (a test checks that this file is",
           "its output): every field of a study file, and every attack's declared options.", "",
           "## Study file", "", "| key | type | default | what |", "|---|---|---|---|", *rows, "",
           "## Attacks' options", "",
           "What a study's attack entry (`params`, or the fields above) and `robquant attack --attack-option` may "
           "set, per attack, in the attack's own units ([0, 1] for budgets and steps).", "",
           "| attack | option | default | allowed | what |", "|---|---|---|---|---|"]
    for name in ATTACKS.names():
        for option in ATTACKS.get(name).DECLARED.values():
            default = "" if option.default is None else f"`{option.default!r}`"
            out.append(f"| {name} | `{option.name}` | {cell(default)} | {cell(option.allowed())} | "
                       f"{cell(option.help)} |")
    return "\n".join(out) + "\n"
