import pytest
import torch
import torchattacks

from robquant.attacks import FGSM, PGD, create_attack, list_attacks

from robquant.evaluation import evaluate
from robquant.evaluation.evaluate import worst_case
from robquant.attacks.view import attack_view
from robquant.errors import ConfigError, UnknownNameError

EPS = 16 / 255  # the digits model is partly robust here: attacks have work to do, and can fail


def test_pgd_without_random_start_equals_torchattacks(clean_model, correct_batch):
    x, y = correct_batch
    ours = PGD(clean_model, EPS, steps=10, step_size=EPS / 4, random_start=False, fold_bn=False,
               keep_best=False)(x, y)
    ref = torchattacks.PGD(clean_model, eps=EPS, alpha=EPS / 4, steps=10, random_start=False)(x, y)
    assert torch.allclose(ours, ref, atol=1e-6)
    with torch.no_grad():
        fooled = (clean_model(ours).argmax(1) != y).float().mean()
    assert 0.05 < fooled < 0.95  # the attack did something, and the comparison is not trivial


def test_best_iterate_pgd_breaks_what_the_last_iterate_misses_at_no_extra_passes(narrow_model, digits_test):
    from robquant import load_model
    from robquant.data import create_dataset
    from robquant.quant import QuantConfig, quantize

    train = create_dataset("digits", split="train")
    q = quantize(load_model(narrow_model), QuantConfig(method="ptq", precision="A4W4"),
                 calib_images=train.images[:256].float() / 255)
    x, y = digits_test.images.float() / 255, digits_test.labels
    with torch.no_grad():
        keep = q(x).argmax(1) == y
    x, y = x[keep], y[keep]
    assert len(y) > 200
    robust, passes = {}, {}
    for best in (False, True):
        seen = [0]
        hook = q.register_forward_hook(lambda m, i, o: seen.__setitem__(0, seen[0] + len(o)))
        try:
            x_adv = PGD(q, 8 / 255, steps=20, generator=torch.Generator().manual_seed(0), keep_best=best)(x, y)
        finally:
            hook.remove()
        passes[best] = seen[0]
        with torch.no_grad():
            robust[best] = q(x_adv).argmax(1) == y
        assert ((x_adv - x).abs().amax() <= 8 / 255 + 1e-6) and x_adv.min() >= 0 and x_adv.max() <= 1
    # the same trajectory: whatever the last iterate breaks, the best iterate breaks too
    assert not bool((robust[True] & ~robust[False]).any())
    # on a quantized model PGD oscillates: the last iterate overstates robustness by a lot
    assert robust[True].float().mean() < robust[False].float().mean() - 0.05, (robust[True].float().mean(),
                                                                              robust[False].float().mean())
    assert passes[True] < passes[False]  # fooled examples leave the batch: fewer passes, never more


@pytest.mark.parametrize("fold_bn", [False, True])
def test_pgd_with_random_start_matches_torchattacks_robust_accuracy(clean_model, correct_batch, fold_bn):
    x, y = correct_batch
    torch.manual_seed(0)
    ref = torchattacks.PGD(clean_model, eps=EPS, alpha=EPS / 4, steps=20, random_start=True)(x, y)
    ours = PGD(clean_model, EPS, steps=20, generator=torch.Generator().manual_seed(1), fold_bn=fold_bn)(x, y)
    with torch.no_grad():
        acc_ref = (clean_model(ref).argmax(1) == y).float().mean().item()
        acc_ours = (clean_model(ours).argmax(1) == y).float().mean().item()
    assert len(y) >= 200
    assert abs(acc_ref - acc_ours) <= 0.01
    assert acc_ours < 0.95


def test_folded_view_computes_the_same_function(clean_model, correct_batch):
    x, _ = correct_batch
    view = attack_view(clean_model)
    assert view is not clean_model
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in view.modules())
    with torch.no_grad():
        assert torch.allclose(view(x), clean_model(x), atol=1e-4)
    x1 = x[:16].clone().requires_grad_(True)
    x2 = x[:16].clone().requires_grad_(True)
    g1 = torch.autograd.grad(clean_model(x1).logsumexp(1).sum(), x1)[0]
    g2 = torch.autograd.grad(view(x2).logsumexp(1).sum(), x2)[0]
    assert torch.allclose(g1, g2, atol=1e-4 * g1.abs().max().item())


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.round()

    @staticmethod
    def backward(ctx, g):
        return g


class _RoundingModel(torch.nn.Module):
    """A custom autograd Function that tracing would inline, losing its straight-through gradient."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(_RoundSTE.apply(x * 16) / 16)


def test_models_with_custom_gradients_are_never_folded(clean_model, correct_batch):
    x, y = correct_batch
    model = _RoundingModel(clean_model).eval()
    assert attack_view(model) is model
    x_adv = PGD(model, EPS, steps=5)(x[:32], y[:32])
    assert (x_adv - x[:32]).abs().max() > 0.5 * EPS  # gradients reached the input


@pytest.mark.parametrize("norm,eps", [("linf", 8 / 255), ("l2", 0.5)])
def test_pgd_stays_in_the_ball_and_in_range(clean_model, correct_batch, norm, eps):
    x, y = correct_batch
    x_adv = PGD(clean_model, eps, norm=norm, steps=5, restarts=2)(x, y)
    delta = (x_adv - x).flatten(1)
    size = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
    assert torch.all(size <= eps + 1e-6)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert size.max() > 0.5 * eps  # it moved


def test_pgd_is_stronger_than_fgsm_and_restarts_never_hurt(clean_model, correct_batch):
    x, y = correct_batch

    def acc(x_adv):
        with torch.no_grad():
            return (clean_model(x_adv).argmax(1) == y).float().mean().item()

    fgsm = acc(FGSM(clean_model, EPS)(x, y))
    pgd1 = acc(PGD(clean_model, EPS, generator=torch.Generator().manual_seed(0))(x, y))
    pgd3 = acc(PGD(clean_model, EPS, restarts=3, generator=torch.Generator().manual_seed(0))(x, y))
    assert pgd1 <= fgsm and pgd3 <= pgd1, (fgsm, pgd1, pgd3)


def test_fgsm_moves_every_pixel_by_eps_unless_clipped(clean_model, correct_batch):
    x, y = correct_batch
    x_adv = FGSM(clean_model, 4 / 255)(x, y)
    moved = (x_adv - x).abs()
    interior = (x > 4 / 255) & (x < 1 - 4 / 255)
    grad_nonzero = moved > 0
    assert torch.allclose(moved[interior & grad_nonzero], torch.tensor(4 / 255), atol=1e-6)


def test_attack_restores_training_mode_even_on_error(clean_model, correct_batch):
    x, y = correct_batch
    clean_model.train()
    try:
        PGD(clean_model, EPS, steps=1)(x[:4], y[:4])
        assert clean_model.training
        with pytest.raises(Exception):
            PGD(clean_model, EPS, steps=1)(x[:4], y[:3])  # label count mismatch
        assert clean_model.training
    finally:
        clean_model.eval()


def test_attack_restores_mixed_module_modes(clean_model, correct_batch):
    x, y = correct_batch
    clean_model.train()
    clean_model.bn1.eval()  # e.g. frozen BN statistics
    try:
        PGD(clean_model, EPS, steps=1)(x[:4], y[:4])
        assert clean_model.training and not clean_model.bn1.training and clean_model.layer1.training
    finally:
        clean_model.eval()


def test_attack_leaves_parameter_gradients_alone(clean_model, correct_batch):
    x, y = correct_batch
    PGD(clean_model, EPS, steps=2)(x[:8], y[:8])
    assert all(p.grad is None for p in clean_model.parameters())


def test_registry_and_validation(clean_model):
    assert list_attacks() == ["apgd", "autoattack", "fgsm", "pgd", "square", "transfer"]
    with pytest.raises(UnknownNameError, match="fgsm, pgd, square"):
        create_attack("cw", clean_model, 0.1)
    with pytest.raises(ConfigError, match=r"eps must be in \[0, inf\], got -0.1"):
        create_attack("pgd", clean_model, -0.1)
    with pytest.raises(ConfigError, match="norm"):
        create_attack("pgd", clean_model, 0.1, norm="l1")
    with pytest.raises(ConfigError, match="attack 'pgd'"):
        create_attack("pgd", clean_model, 0.1, bogus=1)


def test_evaluate_sweeps_eps_and_takes_the_worst_case(clean_model, digits_test):
    eps = [4 / 255, 32 / 255]
    res = evaluate(clean_model, digits_test, ["fgsm", ("pgd", {"steps": 10})], eps, n=150, batch_size=64)
    assert res.n == 150
    for e in eps:
        for a in ("fgsm", "pgd"):
            assert res.robust_accuracy[(a, e)] <= res.clean_accuracy
            assert torch.equal(res.robust_correct[(a, e)] & ~res.clean_correct,
                               torch.zeros(150, dtype=torch.bool))
        both = res.robust_correct[("fgsm", e)] & res.robust_correct[("pgd", e)]
        assert res.worst_case[e] == pytest.approx(both.float().mean().item())
        assert res.worst_case[e] <= min(res.robust_accuracy[("fgsm", e)], res.robust_accuracy[("pgd", e)])
    assert res.robust_accuracy[("pgd", 32 / 255)] < res.robust_accuracy[("pgd", 4 / 255)]
    again = evaluate(clean_model, digits_test, ["fgsm", ("pgd", {"steps": 10})], eps, n=150, batch_size=64)
    assert again.robust_accuracy == res.robust_accuracy  # deterministic for a seed
    d = res.to_dict()
    assert {r["eps_255"] for r in d["robust"]} == {4.0, 32.0} and d["attack_params"]["pgd"]["steps"] == 10


def test_typed_attack_runs_and_labelled_budgets_go_straight_into_evaluate(clean_model, digits_test):
    from robquant.evaluation import AttackRun, Budget

    budgets = [Budget.of(4), Budget.of(8.1234567)]  # a label that eps * 255 rounded back would change
    run = AttackRun("pgd", "pgd-3", {"steps": 3}, n=40, budgets=(budgets[1],))
    typed = evaluate(clean_model, digits_test, ["fgsm", run], budgets, n=60, batch_size=32)
    pairs = evaluate(clean_model, digits_test, ["fgsm", ("pgd", {"label": "pgd-3", "steps": 3, "n": 40,
                                                                "eps": [budgets[1].eps]})],
                     [b.eps for b in budgets], n=60, batch_size=32)
    assert typed.robust_correct.keys() == pairs.robust_correct.keys()
    for key, mask in typed.robust_correct.items():
        assert torch.equal(mask, pairs.robust_correct[key])
    assert len(typed.robust_correct[("pgd-3", budgets[1].eps)]) == 40
    assert {(r["attack"], r["eps_255"]) for r in typed.to_dict()["robust"]} == {
        ("fgsm", 4.0), ("fgsm", 8.1234567), ("pgd-3", 8.1234567)}
    assert set(typed.outcomes().robust) == {("fgsm", 4.0), ("fgsm", 8.1234567), ("pgd-3", 8.1234567)}
    with pytest.raises(ConfigError, match="budgets must be a non-empty subset"):
        evaluate(clean_model, digits_test, [AttackRun("pgd", "pgd", budgets=(Budget.of(16),))], budgets, n=4)


def test_pixel_grid_attacks_give_8bit_images_within_the_budget(clean_model, correct_batch):
    import math

    x, y = correct_batch
    x, y = x[:64], y[:64]
    for name, options in (("pgd", {"steps": 10}), ("fgsm", {})):
        for eps in (8 / 255, 8.5 / 255):  # a budget between two levels keeps floor(eps * 255) of them
            x_adv = create_attack(name, clean_model, eps, pixel_grid=True, **options)(x, y)
            levels = x_adv * 255
            assert torch.allclose(levels, levels.round(), atol=1e-4)  # every pixel a multiple of 1/255
            assert (levels.round() - (x * 255).round()).abs().max() <= math.floor(eps * 255)
            assert x_adv.min() >= 0 and x_adv.max() <= 1
    # judged on saved images, it still attacks; an unconstrained PGD is no weaker than the grid's
    grid = create_attack("pgd", clean_model, 32 / 255, steps=10, pixel_grid=True)(x, y)
    free = create_attack("pgd", clean_model, 32 / 255, steps=10)(x, y)
    with torch.no_grad():
        broken_grid = (clean_model(grid).argmax(1) != y).float().mean()
        broken_free = (clean_model(free).argmax(1) != y).float().mean()
    assert broken_grid > 0.3 and broken_free >= broken_grid - 0.05
    with pytest.raises(ConfigError, match="pixel_grid"):
        create_attack("pgd", clean_model, 0.5, norm="l2", pixel_grid=True)


def test_worst_case_on_constructed_outcomes():
    t, f = True, False
    masks = {("a", 0.1): torch.tensor([t, t, f, t]), ("b", 0.1): torch.tensor([t, f, t, t]),
             ("c", 0.1): torch.tensor([t, t, t, f]), ("a", 0.2): torch.tensor([f, t, f, f])}
    worst = worst_case(masks)
    assert worst[0.1].tolist() == [t, f, f, f]
    assert worst[0.2].tolist() == [f, t, f, f]


def test_cascade_gives_the_same_worst_case_for_less_work(clean_model, digits_test):
    eps = [8 / 255, 32 / 255]
    # deterministic attacks (no random start): a cascaded attack sees fewer examples per batch, and a random
    # start drawn for that smaller batch would differ from the full run's
    attacks = [("pgd", {"steps": 5, "random_start": False}), ("fgsm", {"eps": [32 / 255]}),
               ("pgd", {"steps": 10, "label": "pgd10", "n": 60, "random_start": False})]
    full = evaluate(clean_model, digits_test, attacks, eps, n=100)
    cheap = evaluate(clean_model, digits_test, attacks, eps, n=100, cascade=True)
    assert ("fgsm", 8 / 255) not in full.robust_accuracy and ("fgsm", 32 / 255) in full.robust_accuracy
    for e in eps:
        assert torch.equal(worst_case(full.robust_correct)[e], worst_case(cheap.robust_correct)[e])
        assert full.worst_case_n[e] == 60  # only the examples every attack covered
        # cascaded attacks run only on what the earlier ones left robust
        survivors = int(cheap.robust_correct[("pgd", e)][:60].sum())
        assert cheap.attacked[("pgd10", e)] <= survivors < full.attacked[("pgd10", e)]
    record = cheap.to_dict()
    entry = next(w for w in record["worst_case"] if w["eps_255"] == 32)
    assert entry["n"] == 60 and entry["attacks"] == ["pgd", "fgsm", "pgd10"]
    assert entry["per_attack"]["pgd"] >= entry["accuracy"]
    with pytest.raises(ConfigError, match="subset of the evaluation's eps"):
        evaluate(clean_model, digits_test, [("fgsm", {"eps": [4 / 255]})], eps, n=8)


def test_a_transfer_from_a_model_to_itself_is_its_white_box_pgd(clean_model, digits_test):
    """The precision transfer matrix's diagonal is the target's own PGD record: crafting on the target
    itself is the white-box attack, example by example (same seed, steps and best iterate)."""
    from robquant.quant import QuantConfig, quantize

    model = quantize(clean_model, QuantConfig(method="ptq", precision="A4W4"),
                     calib_images=digits_test.images[:64].float() / 255)
    eps = 32 / 255
    ev = evaluate(model, digits_test, [("pgd", {"steps": 5}), ("transfer", {"steps": 5, "surrogate": model})],
                  [eps], n=120, seed=4)
    own, crafted_on_itself = ev.robust_correct[("pgd", eps)], ev.robust_correct[("transfer", eps)]
    assert 0.05 < own.float().mean() < ev.clean_accuracy - 0.2  # the attack breaks some, not all
    assert torch.equal(own, crafted_on_itself)


def test_a_transfer_runs_its_full_course_and_transfers_better_than_its_first_fooling_iterate(demo_models,
                                                                                            digits_test):
    # crafted on the clean model, judged on the robust one: the clean model is fooled within a step or two,
    # and the iterate that barely fools it rarely fools the robust model; the whole course does better
    from robquant import load_model

    surrogate, target = (load_model(demo_models[k][0]) for k in ("non_robust", "robust"))
    eps = 32 / 255
    runs = [("transfer", {"steps": 10, "surrogate": surrogate, "full_course": full, "label": f"full={full}"})
            for full in (False, True)]
    ev = evaluate(target, digits_test, runs, [eps], n=200, seed=0)
    early, full = (ev.robust_correct[(f"full={f}", eps)].float().mean().item() for f in (False, True))
    # by how much depends on the trained models, which differ with each CPU's kernels (4.5 points of 200
    # examples under ATEN_CPU_CAPABILITY=default, more than 5 natively): at least 2 points (4 examples)
    assert full <= early - 0.02, (early, full)
    assert ev.details[("full=True", eps)]["full_course"] is True


def test_transfer_matrix_sources_take_the_white_box_attacks_settings():
    from robquant.pipeline.plan import build_plan
    from robquant.pipeline.study import parse_study

    study = parse_study({
        "name": "m", "dataset": {"name": "digits"}, "model": {"name": "resnet20", "width": 4}, "seeds": [0],
        "evaluation": {"attacks": [{"name": "pgd", "steps": 7, "restarts": 2, "step_size": 3, "pixel_grid": True}],
                       "eps": [8], "main_eps": 8, "transfer_matrix": True, "diagnostics": {"enabled": False}},
        "fp": {"non_robust": {"epochs": 1}, "robust": {"epochs": 1}},
        "axes": {"init": ["robust"], "method": ["ptq"], "precision": ["A4W4", "A8W8"]}})
    plan = build_plan(study, lambda: 1000)
    runs = [a for s in plan.stages.values() if s.kind == "evaluate" for a in s.spec.attacks]
    pgd = next(a for a in runs if a.name == "pgd")
    sources = [a for a in runs if a.name == "transfer"]
    assert len(sources) == 4  # FP and the other precision, on each of the two cells
    for a in sources:
        options = {k: v for k, v in a.options.items() if k not in ("source", "full_course")}
        white_box = {k: v for k, v in pgd.options.items() if k != "min_step_levels"}  # the inner PGD's default: 1
        assert options == white_box and options["restarts"] == 2 and options["pixel_grid"] is True
        assert a.options["full_course"] is True


@pytest.mark.parametrize("eps_255", [1, 2])
def test_pixel_valid_pgd_moves_pixels_at_small_budgets_and_is_no_weaker_than_its_random_start(clean_model,
                                                                                               correct_batch, eps_255):
    # with a step of eps/4 (a quarter or half a grey level) every step rounded back onto the grid where it was:
    # the attack was its random start alone; its step is now at least one level
    from robquant.attacks import PGD

    x, y = correct_batch
    x = torch.round(x * 255) / 255  # 8-bit images
    eps = eps_255 / 255

    def run(steps):
        attack = PGD(clean_model, eps, steps=steps, pixel_grid=True, keep_best=False,
                     generator=torch.Generator().manual_seed(0))
        return attack(x, y)

    start, moved = run(0), run(10)
    assert PGD(clean_model, eps, pixel_grid=True).step_size == pytest.approx(1 / 255)
    assert (moved != start).float().mean() > 0.05  # the steps move pixels off the random start
    levels = torch.round(moved * 255) - torch.round(x * 255)
    assert levels.abs().max() <= eps_255 and torch.equal(moved * 255, torch.round(moved * 255))
    with torch.no_grad():
        loss = [torch.nn.functional.cross_entropy(clean_model(a), y).item() for a in (start, moved)]
    assert loss[1] > loss[0]  # stronger than its random start
    from robquant.attacks import ATTACKS
    assert ATTACKS.get("pgd").select_options({"pixel_grid": True, "steps": 5})["min_step_levels"] == 1
    assert "min_step_levels" not in ATTACKS.get("pgd").select_options({"steps": 5})
