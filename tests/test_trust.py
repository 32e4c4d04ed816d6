"""Evaluation you can trust: AutoAttack, Square and transfer attacks, the trust checks, integer execution."""

from __future__ import annotations

import json

import pytest
import torch

from robquant import load_model
from robquant.attacks import create_attack
from robquant.evaluation import evaluate, worst_case
from robquant.evaluation.trust import TRUST_CHECKS, TrustCheck, diagnose, register_check
from robquant.data import create_dataset
from robquant.errors import ConfigError
from robquant.quant import QuantConfig, quantize
from robquant.quant.integer import integer_agreement, integer_model, weight_terms
from robquant.quant.modules import QuantConv2d, QuantLinear

EPS = 32 / 255  # digits have 17 grey levels: this is a budget at which the demo models break


@pytest.fixture(scope="module")
def digits():
    return create_dataset("digits", split="train"), create_dataset("digits", split="test")


@pytest.fixture(scope="module")
def calib(digits):
    return digits[0].images[:256].float() / 255


def _ptq(model, calib, precision="A8W8", ste=True):
    return quantize(model, QuantConfig(method="ptq", precision=precision, straight_through=ste), calib_images=calib)


def test_worst_case_is_the_per_example_minimum_over_attacks():
    t, f = True, False
    masks = {("pgd", 0.1): torch.tensor([t, t, f, t, t]), ("square", 0.1): torch.tensor([t, f, t, t, t]),
             ("autoattack", 0.1): torch.tensor([t, t, t, f]),  # ran on the first 4 examples only
             ("pgd", 0.2): torch.tensor([f, t, f, f, t])}
    worst = worst_case(masks)
    assert worst[0.1].tolist() == [t, f, f, f]  # only the examples every attack covered
    assert worst[0.2].tolist() == [f, t, f, f, t]


def test_evaluate_reports_worst_case_beside_each_attack(clean_model, digits_test):
    ev = evaluate(clean_model, digits_test, [("pgd", {"steps": 5}), "fgsm", ("pgd", {"steps": 1, "label": "pgd1"})],
                  [EPS], n=64)
    per_attack = [ev.robust_accuracy[(a, EPS)] for a in ("pgd", "fgsm", "pgd1")]
    assert ev.worst_case[EPS] <= min(per_attack)
    expected = torch.stack([ev.robust_correct[(a, EPS)] for a in ("pgd", "fgsm", "pgd1")]).all(0).float().mean()
    assert ev.worst_case[EPS] == pytest.approx(expected.item())
    with pytest.raises(ConfigError, match="labels must be distinct"):
        evaluate(clean_model, digits_test, ["pgd", "pgd"], [EPS], n=8)


def test_autoattack_is_at_most_pgd_and_deterministic(narrow_model, digits_test):
    model = load_model(narrow_model)
    eps = [16 / 255]  # one budget, where every sub-attack of the standard AutoAttack gets to run
    a = evaluate(model, digits_test, [("pgd", {"steps": 20}), ("autoattack", {"n": 5})], eps, n=5, seed=3)
    # determinism: the random sub-attack (Square) twice with the same seed, on a smaller budget
    runs = [evaluate(model, digits_test, [("square", {"n_queries": 300})], eps, n=10, seed=3) for _ in range(2)]
    assert torch.equal(runs[0].robust_correct[("square", eps[0])], runs[1].robust_correct[("square", eps[0])])
    for e in eps:
        assert a.robust_accuracy[("autoattack", e)] <= a.robust_accuracy[("pgd", e)]
        details = a.details[("autoattack", e)]
        assert details["package"] == "pyautoattack 0.2.0"
        assert list(details["after"]) == ["apgd-ce", "apgd-t", "fab-t", "square"]
        assert details["after"]["square"] == pytest.approx(a.robust_accuracy[("autoattack", e)])
    assert a.robust_accuracy[("autoattack", eps[0])] < a.clean_accuracy  # it does attack


def test_autoattack_leaves_the_global_rng_alone(clean_model, correct_batch):
    x, y = correct_batch
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    create_attack("apgd", clean_model, EPS, seed=1)(x[:4], y[:4])
    assert torch.equal(torch.rand(3), expected)


def test_autoattack_rejects_unknown_sub_attacks(clean_model):
    with pytest.raises(ConfigError, match="apgd-ce, apgd-t, fab-t, square"):
        create_attack("autoattack", clean_model, EPS, attacks=["apgd-ce", "cw"])
    with pytest.raises(ConfigError, match="apgd-ce and/or apgd-t"):
        create_attack("apgd", clean_model, EPS, attacks=["square"])
    with pytest.raises(ConfigError, match="surrogate"):
        create_attack("transfer", clean_model, EPS)


def test_masked_model_is_caught_and_the_straight_through_one_is_not(clean_model, digits_test, calib):
    masked = _ptq(clean_model, calib, ste=False)
    kw = dict(n=100, steps=20, surrogate=clean_model, square_queries=200, integer=False)
    bad = diagnose(masked, digits_test, EPS, autoattack=["apgd-ce"], **kw)
    acc = bad["accuracy"]
    assert acc["pgd"] >= bad["clean_accuracy"] - 0.05  # PGD reports (false) robustness
    for flag in ("zero_gradient", "square_beats_pgd", "transfer_beats_pgd", "no_collapse"):
        assert flag in bad["flags"], bad["checks"][flag]
    assert bad["checks"]["zero_gradient"]["value"] == 1.0
    assert acc["square"] < acc["pgd"] - 0.3  # a gradient-free attack breaks what PGD cannot

    honest = _ptq(clean_model, calib, ste=True)
    # no sign of masking. With one restart PGD-20 may leave a few examples of 100 at this large budget
    # (machine-dependent: 3 on one CPU's kernels, 6 on AVX2's, where the FP model's transfer then breaks
    # 2 more and transfer_beats_pgd fires with pgd_not_converged): the reference PGD takes 3 restarts
    good = diagnose(honest, digits_test, EPS, autoattack=["apgd-ce"], **(kw | {"restarts": 3}))
    assert [f for f in good["flags"] if f != "pgd_not_converged"] == [], {k: good["checks"][k] for k in TRUST_CHECKS.names()}
    assert good["checks"]["pgd_not_converged"]["value"] <= 0.06
    assert good["accuracy"]["pgd"] < 0.3


@pytest.mark.slow  # AutoAttack's Square (5,000 queries) on a masked model: 45 s on 2 cores
def test_autoattack_with_square_breaks_a_masked_model_and_records_the_packages_warning(clean_model, digits_test,
                                                                                       calib):
    masked = _ptq(clean_model, calib, ste=False)
    bad = diagnose(masked, digits_test, EPS, autoattack=["apgd-ce", "square"], n=100, steps=20,
                   surrogate=clean_model, square_queries=200, integer=False)
    assert bad["accuracy"]["autoattack"] < bad["accuracy"]["pgd"] - 0.3
    # the package's own Square check fired and its warning is in the record
    assert any("Square Attack has decreased" in w for w in bad["details"][f"autoattack@{EPS * 255:g}"]["warnings"])


@pytest.mark.parametrize("method", ["ptq", "qat"])
@pytest.mark.parametrize("precision", ["A8W8", "A4W4"])
def test_integer_execution_agrees_with_fake_quant(clean_model, digits_test, calib, method, precision):
    q = quantize(clean_model, QuantConfig(method=method, precision=precision), calib_images=calib).eval()
    x, y = digits_test.images.float() / 255, digits_test.labels
    x_adv = create_attack("pgd", q, EPS, steps=5)(x[:200], y[:200])
    result = integer_agreement(q, x, x_adv)
    assert result["clean_agreement"] >= 0.99
    assert result["adversarial_agreement"] >= 0.99
    assert result["flag"] is False
    assert result["layers"]["integer"] >= 18  # every inner layer accumulated in integers
    bits = int(precision[1])
    for layer in q.modules():
        if isinstance(layer, (QuantConv2d, QuantLinear)) and layer.weight_quant is not None:
            terms = weight_terms(layer)
            codes = terms[0][0]
            assert torch.equal(codes, codes.round())
            assert int(codes.max() - codes.min()) < 2 ** (bits + 1)  # fits the stored bits (PWLQ: b + 1)
            recon = sum(c * s.view(-1, *([1] * (c.dim() - 1))) for c, s in terms)
            assert torch.allclose(recon.float(), layer.quantized_weight().detach(), atol=1e-6)


def test_integer_execution_sees_a_changed_model(clean_model, digits_test, calib):
    q = _ptq(clean_model, calib, "A4W4")
    emulation = integer_model(q)
    x = digits_test.images.float()[:300] / 255
    assert (emulation(x).argmax(1) == q(x).argmax(1)).float().mean() >= 0.99
    inner = [m for m in q.modules() if isinstance(m, QuantConv2d) and m.weight_quant is not None]
    with torch.no_grad():
        for layer in inner:
            layer.weight.mul_(-1)  # the fake-quant model changes; the emulation built before must disagree
    assert (emulation(x).argmax(1) == q(x).argmax(1)).float().mean() < 0.9


def test_cli_attack_diagnose_records_flags(tmp_path, demo_models, calib):
    from robquant.pipeline import quantize_model
    from test_cli import run as run_cli

    folder, _ = demo_models["non_robust"]
    masked = tmp_path / "masked"
    quantize_model(folder, quant=QuantConfig(method="ptq", precision="A8W8", straight_through=False,
                                             calib_images=128), out=masked)
    out = tmp_path / "attack"
    # a registered check joins every evaluation's trust checks
    register_check(TrustCheck("test_fgsm_above_square", "FGSM minus Square accuracy", lambda tol: tol,
                              lambda m: m["accuracy"]["fgsm"] - m["accuracy"]["square"]))
    try:
        code, text = run_cli("attack", str(masked), "--attack", "pgd,square,transfer", "--eps", "32", "--n-test",
                             "40", "--steps", "5", "--square-queries", "100", "--diagnose", "--diagnose-n", "40",
                             "--diagnose-eps", "32", "--device", "cpu", "--out", str(out))
    finally:
        TRUST_CHECKS.unregister("test_fgsm_above_square")
    assert code == 0, text
    assert "trust checks at 32/255" in text and "FLAG" in text and "zero_gradient" in text
    record = json.loads((out / "stage.json").read_text())
    assert "zero_gradient" in record["diagnostics"]["flags"]
    added = record["diagnostics"]["checks"]["test_fgsm_above_square"]
    acc = record["diagnostics"]["accuracy"]
    assert added["value"] == pytest.approx(acc["fgsm"] - acc["square"]) and added["flag"] == (added["value"] > 0.01)
    assert record["diagnostics"]["checks"]["deployed_mismatch"]["flag"] is None  # the deploy package's, not run
    assert record["diagnostics"]["checks"]["transfer_beats_pgd"]["flag"] is True  # surrogate = recorded parent
    robust = {r["attack"]: r for r in record["result"]["robust"]}
    assert robust["square"]["details"]["package"].startswith("pyautoattack")
    assert robust["transfer"]["details"]["surrogate"] == f"stage {folder.resolve().name}"  # the FP parent
