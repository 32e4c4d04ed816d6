import math

import pytest
import torch

from robquant.evaluation import evaluate
from robquant.data import create_dataset
from robquant.errors import CheckpointError, ConfigError, UnknownNameError
from robquant.models import create_model
from digits_models import DEMO_TRAIN_EPS_255
from robquant.train import (Clean, TrainConfig, convergence_status, create_objective, fit,
                            list_objectives, seed_everything)
from robquant import load_model


def test_clean_training_on_digits_reaches_90_percent(demo_models):
    _, record = demo_models["non_robust"]
    assert record["status"] == "done"
    assert record["metrics"]["clean_accuracy"] >= 0.90
    assert record["metrics"]["n_test"] == 359


def test_pgd_at_raises_robustness_where_the_clean_model_is_weak(demo_models, digits_test):
    # Digits have 17 grey levels, so small budgets hardly move a prediction. At 32/255 (the
    # budget the robust model trains at) the clean model is weak (< 30 % under PGD-20), which
    # leaves room for adversarial training to show a clear gain.
    eps = DEMO_TRAIN_EPS_255 / 255
    acc = {}
    for label in ("non_robust", "robust"):
        model = load_model(demo_models[label][0])
        acc[label] = evaluate(model, digits_test, [("pgd", {"steps": 20})], [eps]).robust_accuracy[("pgd", eps)]
    assert acc["non_robust"] < 0.30
    assert acc["robust"] >= acc["non_robust"] + 0.25


def _tiny_run(tmp_path=None, epochs=3, seed=0, objective=None, **cfg):
    data = create_dataset("synthetic", n_train=96, image_size=8)
    seed_everything(seed)
    model = create_model("resnet20", 10, 1, width=4, mean=data.mean, std=data.std)
    config = TrainConfig(epochs=epochs, batch_size=32, lr=0.05, schedule="cosine", seed=seed, **cfg)
    result = fit(model, data, objective or Clean(), config, checkpoint_dir=tmp_path)
    return model, result


def test_same_seed_gives_identical_metrics_and_weights():
    m1, r1 = _tiny_run(objective=create_objective("pgd_at", steps=2))
    m2, r2 = _tiny_run(objective=create_objective("pgd_at", steps=2))
    assert [h["loss"] for h in r1.history] == [h["loss"] for h in r2.history]
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    _, r3 = _tiny_run(seed=1)
    assert r3.history[0]["loss"] != r1.history[0]["loss"]


class _Interrupt(Exception):
    pass


class _StopAt:
    """A progress display that interrupts training when epoch ``n`` starts (like a kill)."""

    def __init__(self, n):
        self.n = n

    def task(self, description, total):
        if description.startswith(f"epoch {self.n}/"):
            raise _Interrupt
        from robquant.progress import NULL_PROGRESS
        return NULL_PROGRESS.task(description, total)


def test_resume_from_epoch_checkpoint_gives_the_same_final_weights(tmp_path):
    straight, r_straight = _tiny_run(tmp_path / "a", epochs=4, objective=create_objective("pgd_at", steps=2))
    data = create_dataset("synthetic", n_train=96, image_size=8)
    config = TrainConfig(epochs=4, batch_size=32, lr=0.05, schedule="cosine", seed=0)
    seed_everything(0)
    model = create_model("resnet20", 10, 1, width=4, mean=data.mean, std=data.std)
    with pytest.raises(_Interrupt):
        fit(model, data, create_objective("pgd_at", steps=2), config, checkpoint_dir=tmp_path / "b",
            progress=_StopAt(3))
    seed_everything(123)  # a different initialisation: everything must come from the checkpoint
    resumed_model = create_model("resnet20", 10, 1, width=4, mean=data.mean, std=data.std)
    resumed = fit(resumed_model, data, create_objective("pgd_at", steps=2), config,
                  checkpoint_dir=tmp_path / "b")
    assert resumed.resumed_from == 2 and resumed.epochs_completed == 4
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in r_straight.history]
    for (k, a), b in zip(straight.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), k


def test_checkpoint_of_another_config_is_refused(tmp_path):
    _tiny_run(tmp_path, epochs=1)
    with pytest.raises(CheckpointError, match="different configuration"):
        _tiny_run(tmp_path, epochs=2)


class _Diverging(Clean):
    """Clean loss, but infinite from the fifth step on."""

    def __init__(self):
        self.calls = 0

    def __call__(self, model, x, y, gen=None):
        self.calls += 1
        loss, logits = super().__call__(model, x, y, gen)
        return (loss * math.inf if self.calls >= 5 else loss), logits


def test_non_finite_loss_stops_with_status_nc(tmp_path):
    model, result = _tiny_run(tmp_path, epochs=5, objective=_Diverging(), check_every=1)
    assert result.status == "NC" and "non-finite" in result.reason
    assert result.epochs_completed == 2  # 3 steps per epoch: the fifth step is in epoch 2
    again = fit(model, create_dataset("synthetic", n_train=96, image_size=8), _Diverging(),
                TrainConfig(epochs=5, batch_size=32, lr=0.05, schedule="cosine", check_every=1),
                checkpoint_dir=tmp_path)
    assert again.status == "NC" and again.epochs_completed == 2  # resuming an NC run does nothing


def test_chance_level_accuracy_is_nc():
    assert convergence_status(0.12, 10)[0] == "NC"
    assert convergence_status(0.5, 10) == ("done", "")


def test_schedules():
    multi = TrainConfig(epochs=200, lr=0.1)
    assert [multi.lr_at(e, 0, 10) for e in (0, 99, 100, 149, 150)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001])
    cos = TrainConfig(epochs=10, lr=0.1, schedule="cosine")
    assert cos.lr_at(0, 0, 5) == pytest.approx(0.1) and cos.lr_at(5, 0, 5) == pytest.approx(0.05)
    assert cos.lr_at(9, 4, 5) < 0.001


def test_cost_is_counted_in_passes():
    assert create_objective("clean").passes_per_image == 1
    assert create_objective("pgd_at").passes_per_image == 8
    _, result = _tiny_run(epochs=1, objective=create_objective("pgd_at", steps=3))
    assert result.to_dict()["passes_total"] == 96 * 4


def test_bad_config_and_names():
    with pytest.raises(ConfigError, match="schedule must be one of"):
        TrainConfig(schedule="linear")
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="bn_mode"):
        create_objective("pgd_at", bn_mode="frozen")
    with pytest.raises(UnknownNameError, match="clean, fast_adversarial, n_fgsm, pgd_at, transfer"):
        create_objective("trades")
    assert list_objectives() == ["clean", "fast_adversarial", "n_fgsm", "pgd_at", "transfer"]


def test_transfer_loss_is_lambda_ce_plus_cosine_distance():
    torch.manual_seed(0)
    teacher = create_model("resnet20", 10, 1, width=4).eval()
    student = create_model("resnet20", 10, 1, width=4)
    student.load_state_dict(teacher.state_dict())
    student.eval()
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    obj = create_objective("transfer", teacher=teacher, lam=0.005, teacher_id="t")
    loss, logits = obj(student, x, y)
    ce = torch.nn.functional.cross_entropy(logits, y)
    assert loss.item() == pytest.approx(0.005 * ce.item(), abs=1e-5)  # identical features: cos = 1
    assert obj.passes_per_image == 1 and obj.forwards_per_image == 2 and obj.config()["teacher"] == "t"
    assert all(p.requires_grad for p in teacher.parameters())  # a teacher shared in memory is left as it was


def test_transfer_training_aligns_features_and_leaves_the_teacher_alone():
    data = create_dataset("synthetic", n_train=96, image_size=8)
    seed_everything(0)
    teacher = create_model("resnet20", 10, 1, width=4, mean=data.mean, std=data.std).eval()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = create_model("resnet20", 10, 1, width=4, mean=data.mean, std=data.std)
    x = data.images[:64].float() / 255

    def cos():
        with torch.no_grad():
            return torch.nn.functional.cosine_similarity(student.eval().features(x), teacher.features(x)).mean()

    start = cos()
    fit(student, data, create_objective("transfer", teacher=teacher), TrainConfig(epochs=6, batch_size=32, lr=0.1))
    end = cos()
    assert end > start + 0.1, (start, end)
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before.items())


def test_transfer_adapter_when_feature_sizes_differ():
    teacher = create_model("resnet20", 10, 1, width=8)
    student = create_model("resnet20", 10, 1, width=4)
    obj = create_objective("transfer", teacher=teacher, student_dim=student.feature_dim)
    assert obj.adapter is not None and len(obj.parameters()) == 2
    loss, _ = obj(student, torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,)))
    loss.backward()
    assert obj.adapter.weight.grad is not None


def test_fast_adversarial_costs_two_passes_and_trains():
    obj = create_objective("fast_adversarial", eps=8 / 255)
    assert obj.passes_per_image == 2 and obj.step_size == pytest.approx(1.25 * 8 / 255)
    _, result = _tiny_run(epochs=2, objective=obj)
    assert result.status == "done" and result.history[1]["loss"] < result.history[0]["loss"]



@pytest.mark.parametrize("quantized", [False, True])
def test_channels_last_training_is_the_same_function_within_float_rounding(quantized):
    # the layout changes the order of float operations, nothing else: same data, same steps, same weights
    # up to rounding; the model comes back in the default layout, and the record says which one trained it
    from robquant.quant import QuantConfig, quantize

    # one optimizer step (32 images, one batch): exact up to rounding there; over many steps the
    # rounding differences grow through training, by amounts that differ from CPU to CPU
    data = create_dataset("synthetic", n_train=32, image_size=8)
    x = data.images.float() / 255
    out = {}
    for channels_last in (False, True):
        seed_everything(0)
        model = create_model("resnet20", 10, 1, width=4, mean=data.mean, std=data.std)
        if quantized:  # QAT A4W4: PACT activations, DoReFa weights with their own backward
            model = quantize(model, QuantConfig(method="qat", precision="A4W4", pact_init="fixed"))
        result = fit(model, data, create_objective("pgd_at", eps=8 / 255, step_size=2 / 255, steps=2),
                     TrainConfig(epochs=1, batch_size=32, lr=0.05), channels_last=channels_last)
        assert result.memory_format == ("channels_last" if channels_last else "contiguous")
        assert all(p.is_contiguous() for p in model.parameters())
        with torch.no_grad():
            out[channels_last] = model.eval()(x)
    assert torch.allclose(out[True], out[False], atol=1e-3, rtol=1e-3)


def test_bf16_autocast_trains_to_the_same_accuracy_and_is_keyed_only_when_set(digits_test):
    # bfloat16 rounds every activation to 8 mantissa bits, so the weights drift apart step by step:
    # the stated tolerance is on what a stage measures, the test accuracy (within 3 points)
    from robquant.pipeline.specs import _keyed

    train = create_dataset("digits", split="train")
    x, y = digits_test.images.float() / 255, digits_test.labels
    accuracy = {}
    for autocast in (None, "bf16"):
        seed_everything(0)
        model = create_model("resnet20", 10, 1, width=8, mean=train.mean, std=train.std)
        fit(model, train, create_objective("clean"), TrainConfig(epochs=6, batch_size=64, lr=0.05,
                                                               schedule="cosine", autocast=autocast))
        assert all(p.dtype == torch.float32 for p in model.parameters())
        with torch.no_grad():
            accuracy[autocast] = (model.eval()(x).argmax(1) == y).double().mean().item()
    assert accuracy[None] > 0.9 and abs(accuracy["bf16"] - accuracy[None]) <= 0.03, accuracy
    assert "autocast" not in _keyed(TrainConfig()) and _keyed(TrainConfig(autocast="bf16"))["autocast"] == "bf16"
    with pytest.raises(ConfigError, match="autocast must be one of None, bf16, got 'fp16'"):
        TrainConfig(autocast="fp16")


def test_n_fgsm_steps_beyond_the_ball_from_noise_and_trains():
    # N-FGSM: noise U(-2 eps, 2 eps), a step of eps, no projection onto the eps-ball (de Jorge et al.)
    eps = 8 / 255
    obj = create_objective("n_fgsm", eps=eps)
    assert obj.passes_per_image == 2 and obj.step_size == pytest.approx(eps) and obj.noise == 2.0
    data = create_dataset("synthetic", n_train=64, image_size=8)
    seed_everything(0)
    model = create_model("resnet20", 10, 1, width=4, mean=data.mean, std=data.std)
    seen = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    x, y = data.images[:32].float() / 255, data.labels[:32]
    obj(model, x, y, torch.Generator().manual_seed(0))
    start, trained = seen
    assert (start - x).abs().max() <= 2 * eps + 1e-6 and (start - x).abs().max() > 1.5 * eps
    delta = (trained - x).abs()
    assert delta.max() <= 3 * eps + 1e-6 and delta.max() > 2 * eps  # beyond the ball: not projected
    assert trained.min() >= 0 and trained.max() <= 1
    _, result = _tiny_run(epochs=2, objective=obj)
    assert result.status == "done" and result.history[1]["loss"] < result.history[0]["loss"]


def _checked_run(tmp_path, scores, epochs=5, monkeypatch=None):
    """A tiny run whose held-out check reports ``scores`` (one per epoch) and keeps each epoch's weights."""
    from robquant.train import HeldOutCheck, split_held_out

    weights = []

    def measure(self, model, held_out, seed, epoch, batch_size=500):
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"held_out_clean": 0.9, "held_out_pgd": scores[epoch]}

    monkeypatch.setattr(HeldOutCheck, "measure", measure)
    data = create_dataset("synthetic", n_train=128, image_size=8)
    train, held = split_held_out(data, 20, 0)
    seed_everything(0)
    model = create_model("resnet20", 10, 1, width=4, mean=data.mean, std=data.std)
    result = fit(model, train, Clean(), TrainConfig(epochs=epochs, batch_size=32, lr=0.05, schedule="cosine"),
                 checkpoint_dir=tmp_path, check=HeldOutCheck(n=20, drop=0.2), held_out=held)
    return model, result, weights


def test_held_out_check_stops_on_a_collapse_and_hands_back_the_best_epoch(tmp_path, monkeypatch):
    model, result, weights = _checked_run(tmp_path, [0.30, 0.45, 0.40, 0.10, 0.5], monkeypatch=monkeypatch)
    assert result.epochs_completed == 4 and result.best_epoch == 2  # 0.10 < 0.45 - 0.2: stop after epoch 4
    assert "catastrophic overfitting" in result.stop_reason and "epoch 4" in result.stop_reason
    assert [h["held_out_pgd"] for h in result.history] == [0.30, 0.45, 0.40, 0.10]
    assert all(torch.equal(v, weights[1][k]) for k, v in model.state_dict().items())  # epoch 2's weights
    assert not all(torch.equal(v, weights[3][k]) for k, v in model.state_dict().items())
    # resumed from its checkpoint, a stopped run trains no further and hands back the same best weights
    seed_everything(5)
    again, result2, weights2 = _checked_run(tmp_path, [0.30, 0.45, 0.40, 0.10, 0.5], monkeypatch=monkeypatch)
    assert weights2 == [] and result2.epochs_completed == 4 and result2.best_epoch == 2
    assert all(torch.equal(v, weights[1][k]) for k, v in again.state_dict().items())


def test_held_out_check_without_a_collapse_keeps_the_best_epoch(tmp_path, monkeypatch):
    model, result, weights = _checked_run(tmp_path, [0.2, 0.3, 0.35, 0.34], epochs=4, monkeypatch=monkeypatch)
    assert result.epochs_completed == 4 and result.best_epoch == 3 and result.stop_reason == ""
    assert all(torch.equal(v, weights[2][k]) for k, v in model.state_dict().items())


def test_held_out_split_is_stratified_disjoint_and_below_clean_accuracy(demo_models):
    import dataclasses

    from robquant.train import HeldOutCheck, split_held_out

    data = create_dataset("digits", split="train")
    ids = torch.arange(len(data))
    tagged = dataclasses.replace(data, images=data.images.clone())
    tagged.images[:, 0, 0, 0], tagged.images[:, 0, 0, 1] = ids % 256, ids // 256  # each image names its index
    train, held = split_held_out(tagged, 100, 0)

    def index(d):
        return (d.images[:, 0, 0, 0].long() + 256 * d.images[:, 0, 0, 1].long()).tolist()

    assert not set(index(train)) & set(index(held)) and len(train) + len(held) == len(data)
    counts = torch.bincount(held.labels, minlength=10)
    assert abs(len(held) - 100) <= 5 and counts.min() >= 9 and counts.max() <= 11  # about 10 per class
    model = load_model(demo_models["robust"][0])
    _, held = split_held_out(data, 100, 0)
    scores = HeldOutCheck(n=100, eps=DEMO_TRAIN_EPS_255 / 255, step_size=DEMO_TRAIN_EPS_255 / 4 / 255).measure(
        model, held, 0, 0)
    assert 0 < scores["held_out_pgd"] < scores["held_out_clean"] <= 1
    with pytest.raises(ConfigError, match="check.n must be below"):
        split_held_out(data, len(data), 0)


def test_images_outside_a_fraction_are_disjoint_from_it_and_stratified():
    import dataclasses

    from robquant.train.check import outside_fraction

    data = create_dataset("digits", split="train")
    ids = torch.arange(len(data))
    tagged = dataclasses.replace(data, images=data.images.clone())
    tagged.images[:, 0, 0, 0], tagged.images[:, 0, 0, 1] = ids % 256, ids // 256  # each image names its index

    def index(d):
        return set((d.images[:, 0, 0, 0].long() + 256 * d.images[:, 0, 0, 1].long()).tolist())

    held = outside_fraction(tagged, 0.5, 3, 200, 0)
    assert len(held) == 200 and not index(held) & index(tagged.subset(0.5, seed=3))
    counts = torch.bincount(held.labels, minlength=10)
    assert counts.min() >= 17 and counts.max() <= 23  # about 20 per class
    assert index(outside_fraction(tagged, 0.5, 3, 200, 0)) == index(held)  # seeded
    assert index(outside_fraction(tagged, 0.5, 3, 200, 1)) != index(held)
    with pytest.raises(ConfigError, match="qat.held_out must be at most the 0 training images outside fraction 1"):
        outside_fraction(tagged, 1.0, 3, 10, 0)
    with pytest.raises(ConfigError, match="at most the"):
        outside_fraction(tagged, 0.5, 3, len(data), 0)


def test_held_out_monitor_records_clean_accuracy_and_changes_nothing_in_training():
    data = create_dataset("synthetic", n_train=160, image_size=8)
    train, held = data.select(torch.arange(96)), data.select(torch.arange(96, 160))
    runs = []
    for monitor in (None, held):
        seed_everything(0)
        model = create_model("resnet20", 10, 1, width=4, mean=data.mean, std=data.std)
        result = fit(model, train, Clean(), TrainConfig(epochs=3, batch_size=32, lr=0.05, schedule="cosine"),
                     monitor=monitor)
        runs.append((model, result))
    (plain, r0), (watched, r1) = runs
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), watched.state_dict().values()))
    assert [h["loss"] for h in r0.history] == [h["loss"] for h in r1.history]
    assert "held_out_clean" not in r0.history[0] and len(r1.history) == 3
    assert r1.history[-1]["held_out_clean"] == evaluate(watched, held, [], []).clean_accuracy  # the last epoch's model
