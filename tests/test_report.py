"""Reports: tables from hand-made records, the CI formula, trend labels on planted data, figures, HTML."""

from __future__ import annotations

import math
import shutil
import subprocess

import numpy as np
import pytest

from robquant.report.figures import figure2, pareto
from robquant.report.paper import label_comparison, paper_numbers
from robquant.report.records import pipeline_label
from robquant.report.stats import t_interval, trend_label
from robquant.report.tables import table1, table2, table45, trend_labels


def row(method, strategy, init, precision, seed, clean, rob, status="done", fraction=1.0, flags=(), worst=None):
    a, w = precision[1:].split("W")
    a, w = int(a), int(w)
    return {"init": init, "method": method, "strategy": strategy, "pipeline": pipeline_label(method, strategy, init),
            "precision": precision, "act_bits": a, "weight_bits": w, "bits": a if a == w else None,
            "fraction": fraction, "seed": seed, "status": status, "clean": clean, "robustness": rob,
            "worst": worst or {8.0: rob}, "robust": {("pgd", 8.0): rob}, "flags": list(flags),
            "wall_s": 1.0, "passes": 100.0, "bytes": 1000, "key": f"{method}{strategy}{init}{precision}{seed}"}


ROWS = [
    row("ptq", None, "robust", "A4W4", 0, 0.80, 0.40), row("ptq", None, "robust", "A4W4", 1, 0.90, 0.50),
    row("ptq", None, "robust", "A32W32", 0, 0.92, 0.45), row("ptq", None, "robust", "A32W32", 1, 0.92, 0.47),
    row("ptq", None, "robust", "A2W2", 0, 0.10, 0.10, status="NC"), row("ptq", None, "robust", "A2W2", 1, 0.50, 0.2),
    row("qat", "transfer", "non_robust", "A4W4", 0, 0.70, 0.20, flags=["pgd_not_converged"]),
    # qat/transfer/non_robust A32W32 is missing; only seed 1 has A2W2
    row("qat", "transfer", "non_robust", "A2W2", 1, 0.60, 0.10),
    row("ptq", None, "robust", "A4W4", 0, 0.50, 0.30, fraction=0.5),  # a smaller fraction: not in Table 2
]


def test_t_interval_matches_the_known_value():
    mean, half, n = t_interval([1, 2, 3, 4, 5])
    assert (mean, n) == (3.0, 5)
    assert half == pytest.approx(2.7764451 * math.sqrt(2.5) / math.sqrt(5), rel=1e-6)  # t(0.975, 4) s / sqrt(n)
    assert math.isnan(t_interval([0.3])[1]) and t_interval([])[2] == 0


def test_table2_from_hand_made_records_matches_exactly():
    t = table2(ROWS, 8)
    assert t.markdown() == (
        "### Table 2: accuracy / robustness (%, worst case over attacks at 8/255), fraction 1\n\n"
        "| method | strategy | init | A2W2 | A4W4 | A32W32 |\n"
        "|---|---|---|---|---|---|\n"
        "| PTQ |  | robust | NC | 85.0 ± 63.5 / 45.0 ± 63.5 | 92.0 ± 0.0 / 46.0 ± 12.7 |\n"
        "| QAT | transfer | non_robust | 60.0 (n=1) / 10.0 (n=1) | 70.0 (n=1) / 20.0 (n=1) ! |  |\n\n"
        "Cells: mean ± half-width of the 95 % t interval over seeds (n = 2 unless marked); NC: a seed did not "
        "converge; !: a trust check fired (see the diagnostics).\n")
    assert t.csv().splitlines() == [
        "method,strategy,init,A2W2,A4W4,A32W32",
        "PTQ,,robust,NC,85.0 ± 63.5 / 45.0 ± 63.5,92.0 ± 0.0 / 46.0 ± 12.7",
        "QAT,transfer,non_robust,60.0 (n=1) / 10.0 (n=1),70.0 (n=1) / 20.0 (n=1) !,",
    ]
    assert r"$\pm$" in t.latex() and "<td>NC</td>" in t.html()


def test_tables_4_and_5_are_init_by_precision():
    t4, t5 = table45(ROWS, 8)
    assert t4.columns == ["init", "A2W2", "A4W4"]
    assert t4.rows == [["non_robust", "60.0 (n=1)", "70.0 (n=1)"]]  # one seed per cell: no interval
    assert t5.rows == [["non_robust", "10.0 (n=1)", "20.0 (n=1) !"]]


def _planted(values_by_bits, seeds, noise, rng):
    rows = []
    for bits, value in values_by_bits.items():
        prec = "A32W32" if bits == 32 else f"A{bits}W{bits}"
        for s in range(seeds):
            rob = float(np.clip(value + rng.normal(0, noise), 0, 1))
            rows.append(row("qat", "vanilla", "random", prec, s, 0.9, rob, worst={2.0: rob, 8.0: rob}))
    return rows


@pytest.mark.parametrize("shape,expected", [
    ({2: 0.50, 4: 0.40, 8: 0.30, 32: 0.20}, "+"),
    ({2: 0.20, 4: 0.30, 8: 0.40, 32: 0.50}, "-"),
    ({2: 0.20, 4: 0.45, 8: 0.30, 32: 0.20}, "~"),
    ({2: 0.30, 4: 0.30, 8: 0.30, 32: 0.30}, "n.s."),
])
def test_trend_labels_on_planted_trends(shape, expected):
    rng = np.random.default_rng(0)
    rows = _planted(shape, seeds=5, noise=0.01, rng=rng)
    labels = trend_labels(rows, [2, 8], 8)
    assert labels[("qat", "vanilla", "random")]["normal"][0] == expected
    assert labels[("qat", "vanilla", "random")]["weaker"][0] == expected


def test_trend_labels_are_not_significant_under_planted_noise_or_one_seed():
    rng = np.random.default_rng(1)
    noisy = _planted({2: 0.34, 4: 0.32, 8: 0.30, 32: 0.28}, seeds=3, noise=0.10, rng=rng)
    assert trend_labels(noisy, [8], 8)[("qat", "vanilla", "random")]["normal"][0] == "n.s."
    one_seed = {2: [0.5], 4: [0.4], 8: [0.3]}
    assert trend_label(one_seed)[0] == "n.s."
    assert trend_label({2: [0.5, 0.5], 4: [0.4, 0.4]})[0] == "n.s."  # two bit-widths: no shape to test


def test_table1_and_the_paper_comparison():
    labels = {("ptq", None, "robust"): {"weaker": ("n.s.", {}), "normal": ("-", {})},
              ("qat", "adversarial", "robust"): {"normal": ("+", {})}}
    t = table1(labels, [1, 2, 8], 8)
    assert t.rows[0] == ["PTQ", "", "", "weaker: n.s., normal: -"]
    paper = paper_numbers()
    assert paper["table2"]["ptq/robust"]["A4W4"] == [76.16, 47.84] and paper["table2"]["ptq/robust"]["A2W2"] == "NC"
    table, counts = label_comparison(labels, paper)
    verdict = {(r[0], r[1]): r[4] for r in table.rows}
    assert verdict[("ptq/robust", "normal")] == "agree"
    assert verdict[("qat/adversarial/robust", "normal")] == "disagree"
    assert verdict[("ptq/non_robust", "weaker")] == "not run"
    assert counts["agree"] == 1 and counts["disagree"] == 1


def test_figures_are_written_and_not_empty(tmp_path):
    rows = []
    for prec in ("A2W32", "A4W32", "A32W32", "A32W2", "A32W4"):
        for s in range(2):
            rows.append(row("qat", "vanilla", "random", prec, s, 0.8 + 0.01 * s, 0.3, worst={1.0: 0.6, 8.0: 0.3}))
    paths = figure2(rows, tmp_path)
    assert {p.suffix for p in paths} == {".png", ".pdf"} and all(p.stat().st_size > 5000 for p in paths)
    paths, recommended = pareto(ROWS, tmp_path)
    assert all(p.stat().st_size > 5000 for p in paths)
    best4 = next(r for r in recommended if r["bits"] == 4)
    assert best4["pipeline"] == "PTQ from robust"  # 45 % robustness beats 20 %
    assert figure2(ROWS, tmp_path / "none") == []  # no activation- or weight-only sweep


def test_report_from_a_study_store(reference_run, tmp_path):
    from test_study import cli

    path, store, _ = reference_run
    code, text = cli("report", path, "--out", tmp_path / "rep", "--store", store)
    assert code == 0, text
    assert "report of 6 models written" in text
    md = (tmp_path / "rep" / "report.md").read_text()
    for title in ("Table 2:", "Table 1 (derived)", "Table 4:", "Table 5:", "Ours vs the paper", "Cost of quantization",
                  "Recommended pipeline"):
        assert title in md
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "data:image/png;base64," in page and "src='http" not in page and "<table>" in page
    code, text = cli("report", path, "--out", tmp_path / "x", "--store", store, "--format", "md,pptx")
    assert code == 2 and "--format must be a comma-separated subset of md, latex, csv, html" in text
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
def test_html_report_renders_in_headless_chromium(reference_run, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("Chromium is not installed (Debian: apt install chromium)")
    from PIL import Image
    from test_study import cli

    path, store, _ = reference_run
    assert cli("report", path, "--out", tmp_path, "--store", store, "--format", "html")[0] == 0
    shot = tmp_path / "shot.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1200,1600", (tmp_path / "report.html").as_uri()], check=True, timeout=120,
                   capture_output=True)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 10  # not blank: text, tables and figures
