"""Figure 2 (activation-only / weight-only sweeps) and the Pareto view, with matplotlib (Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from robquant.report.stats import t_interval  # noqa: E402


def _save(fig: Any, out: Path, stem: str) -> list[Path]:
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    for p in paths:
        fig.savefig(p, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return paths


def figure2(rows: list[dict[str, Any]], out: Path, title: str = "") -> list[Path]:
    """For one pipeline (QAT/vanilla from random, the paper's, unless another has more sweep points),
    two panels: activation-only (AxW32) and weight-only (A32Wx) precisions; accuracy and robustness
    (worst case at each eps, one line per attack strength) vs bits, mean +- 95 % CI over seeds.
    Returns the PNG and PDF paths, or [] when the study has neither sweep."""
    top = max((r["fraction"] for r in rows), default=1.0)
    rows = [r for r in rows if r["fraction"] == top and r["status"] == "done"]

    def sweep_points(pipe: str) -> int:
        mine = [r for r in rows if r["pipeline"] == pipe]
        return len({r["precision"] for r in mine if r["act_bits"] == 32 or r["weight_bits"] == 32})

    pipes = sorted({r["pipeline"] for r in rows}, key=lambda p: (-sweep_points(p), p != "QAT/vanilla from random", p))
    if not pipes:
        return []
    pipeline = pipes[0]  # the paper's: QAT/vanilla from random, unless another pipeline has more sweep points
    rows = [r for r in rows if r["pipeline"] == pipeline]
    panels = [("activation-only (weights FP)", [r for r in rows if r["weight_bits"] == 32], "act_bits"),
              ("weight-only (activations FP)", [r for r in rows if r["act_bits"] == 32], "weight_bits")]
    panels = [p for p in panels if len({r[p[2]] for r in p[1]}) > 1]
    if not panels:
        return []
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, (name, group, field) in zip(axes[0], panels):
        bits = sorted({r[field] for r in group})
        pos = list(range(len(bits)))

        def line(metric: Any, label: str, style: str) -> None:
            stats = [t_interval([metric(r) for r in group if r[field] == b and metric(r) is not None]) for b in bits]
            means = [100 * s[0] for s in stats]
            halves = [0 if s[1] != s[1] else 100 * s[1] for s in stats]
            ax.errorbar(pos, means, yerr=halves, fmt=style, capsize=3, label=label)

        line(lambda r: r["clean"], "clean accuracy", "k-o")
        for eps in sorted({e for r in group for e in r["worst"]}):
            line(lambda r, e=eps: r["worst"].get(e), f"robust, eps {eps:g}/255", "-s")
        ax.set_xticks(pos, [("FP" if b == 32 else str(b)) for b in bits])
        ax.set_xlabel("bits")
        ax.set_ylabel("accuracy (%)")
        ax.set_ylim(0, 100)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or f"Figure 2: {pipeline}, accuracy and robustness vs bits (mean ± 95 % CI over seeds)")
    return _save(fig, out, "figure2")


def pareto(rows: list[dict[str, Any]], out: Path) -> tuple[list[Path], list[dict[str, Any]]]:
    """Accuracy x robustness scatter (colour: quantization cost in passes, size: model bytes) with the
    frontier of non-dominated pipelines (cells with an NC seed left out); and per bit budget the recommended pipeline (highest mean
    robustness, then accuracy). Returns the figure paths and the recommendations."""
    top = max((r["fraction"] for r in rows), default=1.0)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r["fraction"] == top:
            groups.setdefault((r["pipeline"], r["precision"]), []).append(r)
    points = []
    for (pipe, prec), runs in groups.items():
        if any(r["status"] != "done" for r in runs):  # NC in some seed: not a candidate
            continue
        points.append({"pipeline": pipe, "precision": prec, "bits": runs[0]["bits"],
                       "clean": t_interval([r["clean"] for r in runs])[0],
                       "robustness": t_interval([r["robustness"] for r in runs])[0],
                       "passes": t_interval([r["passes"] or 0 for r in runs])[0],
                       "bytes": runs[0]["bytes"] or 0})
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
    ax.plot([100 * p["clean"] for p in frontier], [100 * p["robustness"] for p in frontier], "r--", label="frontier")
    for p in frontier:
        ax.annotate(f"{p['pipeline']} {p['precision']}", (100 * p["clean"], 100 * p["robustness"]), fontsize=7)
    fig.colorbar(sc, ax=ax, label="quantization cost (forward+backward passes)")
    ax.set_xlabel("clean accuracy (%)")
    ax.set_ylabel("robustness (%)")
    ax.set_title("Pareto view: accuracy x robustness (marker size: model bytes)")
    ax.grid(alpha=0.3)
    ax.legend()
    paths = _save(fig, out, "pareto")
    recommended = []
    for bits in sorted({p["bits"] for p in points if p["bits"] is not None}):
        best = max((p for p in points if p["bits"] == bits), key=lambda p: (p["robustness"], p["clean"]))
        recommended.append(best)
    return paths, recommended
