"""Verdicts that hold up: per-example outcomes, intervals that count seeds and test examples, power."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from robquant.evaluation import Outcomes, evaluate
from robquant.report.findings import CONTRADICTED, NOT_SIGNIFICANT, findings
from robquant.report.intervals import estimate, seed_only
from robquant.report.records import Row, pipeline_label


def test_one_seed_is_the_paired_per_example_interval():
    rng = np.random.default_rng(0)
    d = rng.choice([-1.0, 0.0, 1.0], p=[0.08, 0.9, 0.02], size=(1, 400))
    est = estimate(d)
    sd = d[0].std(ddof=1)
    assert est.mean == pytest.approx(d.mean()) and est.seeds == 1 and math.isnan(est.seed_var)
    # the per-example interval, with two pseudo-examples (one changed each way) in the variance
    assert est.half == pytest.approx(stats.t.ppf(0.975, 399) * math.sqrt((sd**2 + 2 / 400) / 400))


def test_no_variation_is_bounded_by_the_rule_of_three():
    for y in (np.zeros((3, 300)), np.ones((1, 300))):  # every outcome alike: a 95 % bound of 3 / n
        est = estimate(y)
        assert est.half == pytest.approx(3 / 300)


def _mean_squares(y):
    s, n = y.shape
    ds, di = y.mean(1) - y.mean(), y.mean(0) - y.mean()
    r = y - y.mean(1, keepdims=True) - y.mean(0, keepdims=True) + y.mean()
    return n * (ds**2).sum() / (s - 1), s * (di**2).sum() / (n - 1), (r**2).sum() / ((s - 1) * (n - 1))


@pytest.mark.parametrize("seed_sd", [0.3, 0.0])
def test_the_interval_has_a_seed_part_and_an_example_part_each_with_its_own_t(seed_sd):
    # y = a_s + b_i + e_si: seed part max(MS_S, 1.5 MS_E) / (S n) at t(S - 1), example part
    # (MS_I - MS_E + 2 S / n) / (S n) at Satterthwaite's df, in quadrature
    rng = np.random.default_rng(1)
    y = rng.normal(0, seed_sd, (4, 1))[:, [0] * 50] + rng.normal(0, 1, (1, 50)) + rng.normal(0, 0.5, (4, 50))
    if seed_sd == 0.0:  # the seeds' means a little closer than chance: MS_S below MS_E
        y -= 0.5 * (y.mean(1, keepdims=True) - y.mean())
    s, n = y.shape
    ms_s, ms_i, ms_e = _mean_squares(y)
    est = estimate(y)
    seed, example = max(ms_s, 1.5 * ms_e) / (s * n), (ms_i - ms_e + 2 * s / n) / (s * n)
    df = (ms_i - ms_e) ** 2 / (ms_i**2 / (n - 1) + ms_e**2 / ((s - 1) * (n - 1)))
    assert est.se**2 == pytest.approx(seed + example)
    assert est.half == pytest.approx(math.sqrt(stats.t.ppf(0.975, s - 1) ** 2 * seed
                                               + stats.t.ppf(0.975, df) ** 2 * example))
    assert est.residual_var == pytest.approx(ms_e)
    assert est.variance_at(s, n) == pytest.approx(est.se**2)
    # the one-sided p at the interval's end is the interval's own 2.5 %
    assert est.p_beyond(est.low, below=False) == pytest.approx(0.025, abs=1e-6)
    assert est.p_beyond(est.high, below=True) == pytest.approx(0.025, abs=1e-6)
    assert est.p_beyond(est.mean, below=True) == 0.5 and est.p_beyond(est.high + 1, below=False) > 0.99
    if seed_sd == 0.0:  # MS_S below MS_E by chance: the seed part is 1.5 MS_E, not nothing
        assert ms_s < ms_e and est.seed_part == pytest.approx(1.5 * ms_e / (s * n))


def _latent_studies(rng, studies, seeds, n, seed_sd, example_sd, interaction_sd, shared_fp, fp_sd=0.1,
                    fp_interaction_sd=0.3):
    """Per-example cell-minus-reference differences of ``studies`` simulated studies from a latent
    threshold model (benchmarks/interval_coverage.py), and the truth they estimate."""
    ref = rng.standard_normal((studies, 1, n))
    if not shared_fp:
        ref = ref + rng.normal(0, fp_sd, (studies, seeds, 1)) + rng.normal(0, fp_interaction_sd, (studies, seeds, n))
    cell = (ref + rng.normal(0, example_sd, (studies, 1, n)) + rng.normal(0, seed_sd, (studies, seeds, 1))
            + rng.normal(0, interaction_sd, (studies, seeds, n)))
    fp = 0.0 if shared_fp else fp_sd**2 + fp_interaction_sd**2
    var = fp + example_sd**2 + seed_sd**2 + interaction_sd**2
    truth = stats.norm.sf(0.6 / math.sqrt(1 + var)) - stats.norm.sf(0.5 / math.sqrt(1 + fp))
    return (cell > 0.6).astype(float) - (np.broadcast_to(ref, cell.shape) > 0.5).astype(float), truth


@pytest.mark.parametrize("design", [
    (2, 1000, 0.05, 0.05, 0.3, False),  # MS_seed often below MS_residual: the old floor covered ~0.80
    (2, 100, 0.4, 0.05, 0.02, True),  # the seeds dominate, with one degree of freedom (old: ~0.83)
    (3, 100, 0.0, 0.05, 0.02, True),  # few examples change: the Wald-like interval covered ~0.89
])
def test_coverage_holds_where_the_old_floor_and_few_changed_examples_undercovered(design):
    seeds, n, *effects = design
    y, truth = _latent_studies(np.random.default_rng(5), 500, seeds, n, *effects)
    covered = np.mean([abs(est.mean - truth) <= est.half for est in map(estimate, y)])
    assert covered >= 0.925, covered  # 500 studies: a true 0.95 falls below 0.925 about once in 200


def _shared_fp_study(rng, seeds, n, theta_ref=0.5, theta_cell=0.6, spread=0.3, seed_sd=0.02, noise=0.05):
    """One synthetic comparison where every seed shares the FP model: the reference's outcome is a
    property of the example; quantization moves each example by an amount of its own (shared by the
    seeds), plus a little per seed. Returns per-example cell minus reference, (seeds, n)."""
    u, v = rng.standard_normal(n), rng.normal(0, spread, n)
    ref = np.broadcast_to(u > theta_ref, (seeds, n)).astype(float)
    cell = (u + v + rng.normal(0, seed_sd, (seeds, 1)) + rng.normal(0, noise, (seeds, n)) > theta_cell).astype(float)
    return cell - ref


def _truth(theta_ref=0.5, theta_cell=0.6, spread=0.3, seed_sd=0.02, noise=0.05):
    return (stats.norm.sf(theta_cell / math.sqrt(1 + spread**2 + seed_sd**2 + noise**2))
            - stats.norm.sf(theta_ref))


def test_coverage_by_simulation_counts_the_test_sample_where_a_seed_only_interval_does_not():
    rng = np.random.default_rng(2)
    truth = _truth()
    hit = hit_seed_only = 0
    studies = 400
    for _ in range(studies):
        d = _shared_fp_study(rng, seeds=3, n=200)
        est = estimate(d)
        hit += est.low <= truth <= est.high
        mean, half = seed_only(list(d.mean(1)))
        hit_seed_only += mean - half <= truth <= mean + half
    assert 0.92 <= hit / studies <= 0.995  # conservative where the seed part is small (its t(2) is 4.3)
    assert hit_seed_only / studies < 0.8


def _outcomes(robust, n_total):
    return Outcomes(np.arange(len(robust)), np.ones(len(robust), bool), {("pgd", 8.0): robust}, "d" * 64, False,
                    n_total)


def _row(method, strategy, precision, seed, robust):
    return Row.of(_outcomes(robust, 10_000), "pgd", 8.0, init="robust", method=method, strategy=strategy,
                  precision=precision, pipeline=pipeline_label(method, strategy, "robust"), act_bits=32, weight_bits=32,
                  bits=None, fraction=1.0, seed=seed, status="done", flags=[], fp="fp0")


def _planted_drop(n, seeds=3, seed=0):
    """PTQ A4W4 rows losing 3 points against the FP reference: 5 % of examples lost, 2 % gained."""
    rng = np.random.default_rng(seed)
    ref = rng.random(n) < 0.45
    rows = []
    for s in range(seeds):
        cell = ref.copy()
        cell[ref & (rng.random(n) < 0.05 / 0.45)] = False
        cell[~ref & (rng.random(n) < 0.02 / 0.55)] = True
        rows += [_row("ptq", None, "A32W32", s, ref), _row("ptq", None, "A4W4", s, cell)]
    return rows


def test_a_planted_three_point_drop_is_not_significant_on_200_examples_and_decided_on_10000():
    # each seed loses examples of its own (an interaction, no seed effect): with 3 seeds the seed part's
    # t(2) keeps 5,000 examples undecided (-2.8 +- 0.9); 10,000 decide
    small = next(f for f in findings(_planted_drop(200), None, 8) if f.key == "ptq_keeps")
    assert set(small.verdicts.values()) == {NOT_SIGNIFICANT}
    cell = next(e for e in small.evidence if e[0] == "ptq/robust A4W4")
    assert cell[3].startswith("-") and ("to decide" in cell[5] or "needs more seeds: " in cell[5])
    large = next(f for f in findings(_planted_drop(10_000), None, 8) if f.key == "ptq_keeps")
    assert set(large.verdicts.values()) == {CONTRADICTED}  # a drop beyond the margin, decided
    cell = next(e for e in large.evidence if e[0] == "ptq/robust A4W4")
    delta = float(cell[3].split()[0])
    assert -4.0 < delta < -2.0


def test_planned_size_decides_what_the_small_design_could_not():
    small = _planted_drop(200, seed=3)
    ref = [r for r in small if r.precision == "A32W32"]
    cell = [r for r in small if r.precision == "A4W4"]
    from robquant.report.records import contrast

    est = contrast([(cell, "paper"), (ref, "paper")], (1.0, -1.0))
    examples, seeds = est.needed(est.mean + 0.02)
    assert examples > 200 and seeds == 3
    # the same design at the planned size: its half-width is below the distance to the margin
    assert math.sqrt(est.variance_at(seeds, examples)) * 1.96 < abs(est.mean + 0.02)


def test_outcomes_reproduce_the_evaluations_aggregates_and_load_without_code(clean_model, digits_test, tmp_path):
    ev = evaluate(clean_model, digits_test, ["fgsm", ("pgd", {"steps": 5, "n": 100})], [8 / 255, 32 / 255], n=200,
                  cascade=True)
    info = ev.outcomes({8 / 255: 8.0, 32 / 255: 32.0}, digits_test.sha256, len(digits_test)).save(tmp_path)
    assert info["bytes"] < 2000 and info["n"] == 200
    o = Outcomes.load(tmp_path)
    s = o.summary()
    assert s["clean_accuracy"] == ev.clean_accuracy and o.dataset_sha256 == digits_test.sha256
    for (attack, eps), acc in ev.robust_accuracy.items():
        assert s["robust"][(attack, round(eps * 255))][0] == acc
    for eps, acc in ev.worst_case.items():
        assert s["worst_case"][round(eps * 255)] == (acc, ev.worst_case_n[eps])
    assert torch.equal(torch.from_numpy(o.clean), ev.clean_correct)
    # a file that is not ours is refused with a message, not unpickled
    np.save(tmp_path / "x.npy", np.array([object()], dtype=object), allow_pickle=True)
    (tmp_path / "x.npy").rename(tmp_path / "bad.npz")
    from robquant.errors import CheckpointError

    with pytest.raises(CheckpointError, match="not a robquant outcomes file"):
        Outcomes.load(tmp_path / "bad.npz")


def test_dry_run_warns_when_the_design_cannot_decide_at_the_margin(tmp_path):
    from test_study import TINY, cli, write

    from robquant.pipeline.study import parse_study
    from robquant.report.power import design_warnings, planned_half_width

    code, text = cli("run", write(tmp_path, TINY), "--dry-run")
    assert code == 0, text
    assert "warning: the findings under the worst case are judged on 60 test examples and 1 seeds" in text
    assert "not below the 2-point margin" in text
    # 5,000 examples and 5 seeds sharing one FP model: below the margin, no warning; with 3 seeds the seed
    # part's t(2) = 4.3 on a 1-point seed spread is 2.5 points alone: more seeds, not more examples
    big = {**TINY, "seeds": [0, 1, 2, 3, 4], "fp": {**TINY["fp"], "seed": 0},
           "evaluation": {**TINY["evaluation"], "n_test": 5000}}
    assert design_warnings(parse_study(big), lambda: 10_000) == []
    assert planned_half_width(5000, 5, True) < 0.02 < planned_half_width(200, 5, True)
    three = design_warnings(parse_study({**big, "seeds": [0, 1, 2]}), lambda: 10_000)
    assert three and all("more seeds are needed before more examples help" in w for w in three)


def test_the_planner_counts_zoo_models_as_shared_by_every_seed():
    from test_study import TINY

    from robquant.pipeline.study import parse_study
    from robquant.report.power import shares_fp

    assert not shares_fp(parse_study(TINY)) and shares_fp(parse_study({**TINY, "fp": {**TINY["fp"], "seed": 0}}))
    from robquant import zoo

    weights = {**TINY, "fp": {"robust": {"checkpoint": "zoo:resnet20-cifar10-robust"},
                              "non_robust": {"checkpoint": "zoo:resnet20-cifar10"}}}
    if not zoo.is_reference("zoo:resnet20-cifar10"):
        pytest.skip("no zoo")
    assert shares_fp(parse_study(weights))


def test_holm_keeps_a_claims_contradiction_only_when_it_survives_the_correction():
    from robquant.report.findings import holm_retained

    rng = np.random.default_rng(4)
    d = rng.choice([-1.0, 0.0, 1.0], p=[0.1, 0.88, 0.02], size=(3, 1000))
    est = estimate(d)  # the interval's own decision is the one-sided p-value at 2.5 %
    assert (est.p_beyond(est.high, below=True) == pytest.approx(0.025)
            and est.p_beyond(est.low, below=False) == pytest.approx(0.025))
    assert est.p_beyond(est.high + 0.01, below=True) < 0.025 < est.p_beyond(est.high - 0.01, below=True)

    def row(verdict):
        return ["cell", "", "", "", verdict, ""]

    strong, weak, kept = row(CONTRADICTED), row(CONTRADICTED), row("reproduced")
    # alone each is contradicted; over 3 cells Holm needs p <= 0.025/3, then 0.025/2, then 0.025
    assert holm_retained([(strong, 0.001), (weak, 0.02), (kept, 0.5)]) == [(weak, 0.02)]
    assert holm_retained([(strong, 0.001), (weak, 0.011), (kept, 0.5)]) == []  # 0.011 <= 0.0125: kept too
    assert holm_retained([(weak, 0.02)]) == []  # one cell: no correction
