"""Studies: schema and its errors, grid expansion, planning, the store, running and resuming."""

import json
import re
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import yaml
from typer.testing import CliRunner

from robquant.cli import app
from robquant.errors import ConfigError
from robquant.pipeline.plan import build_plan
from robquant.pipeline.specs import Budget, spec_key
from robquant.pipeline.study import parse_study

TINY = {
    "name": "tiny",
    "dataset": {"name": "digits"},
    "model": {"name": "resnet20", "width": 4},
    "seeds": [0],
    "evaluation": {"attacks": [{"name": "pgd", "steps": 3}, {"name": "transfer", "steps": 3}], "eps": [8, 32],
                   "main_eps": 32, "n_test": 60,
                   "diagnostics": {"n": 30, "square_queries": 30, "autoattack": None, "collapse_eps": 96}},
    "fp": {"non_robust": {"epochs": 2, "lr": 0.05, "batch_size": 64, "schedule": "cosine"},
           "robust": {"epochs": 2, "lr": 0.05, "batch_size": 64, "schedule": "cosine"},
           "pgd": {"eps": 32, "step": 16, "steps": 2}},
    "qat": {"finetune": {"epochs": 2, "lr": 0.01, "batch_size": 64, "schedule": "cosine"},
            "scratch": {"epochs": 2, "lr": 0.05, "batch_size": 64, "schedule": "cosine"}},
    "quant": {"calib_images": 64},
    "axes": {"init": ["non_robust", "robust"], "method": ["ptq", "qat"], "strategy": ["vanilla", "transfer"],
             "precision": ["A4W4"], "fraction": [0.5]},
}


def write(tmp_path, study, name="study.yaml"):
    path = tmp_path / name
    if isinstance(study, bytes):
        path.write_bytes(study)
    else:
        path.write_text(yaml.safe_dump(study) if not isinstance(study, str) else study)
    return path


def test_pixel_grid_is_keyed_only_when_set():
    def evaluate_keys(attacks):
        plan = build_plan(parse_study(_with(evaluation__attacks=attacks)), lambda: 1000)
        return {k for k, st in plan.stages.items() if st.kind == "evaluate"}

    attacks = TINY["evaluation"]["attacks"]
    off = [{**attacks[0], "pixel_grid": False}, *attacks[1:]]
    on = [{**attacks[0], "pixel_grid": True}, *attacks[1:]]
    assert evaluate_keys(off) == evaluate_keys(attacks)  # earlier studies keep their keys
    assert not evaluate_keys(on) & evaluate_keys(attacks)


def cli(*args):
    res = CliRunner().invoke(app, [str(a) for a in args])
    return res.exit_code, " ".join(res.output.split())


# ---------------------------------------------------------------- schema and bad input

def _with(**changes):
    study = json.loads(json.dumps(TINY))
    for path, value in changes.items():
        node = study
        *parents, last = path.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return study


DELETE = object()

BAD = [
    (_with(bogus=1), "bogus: unknown key"),
    (_with(axes__colour=["red"]), "axes.colour: unknown key"),
    (_with(seeds="zero"), "seeds: Input should be a valid list"),
    (_with(seeds=[]), "seeds: List should have at least 1 item"),
    (_with(seeds=[1, 1]), "seeds must be distinct"),
    (_with(axes__precision=["A0W4"]), "precision must be AxWy"),
    (_with(axes__precision=["A4W33"]), "got 'A4W33'"),
    (_with(axes__precision=["A1.5W4"]), "got 'A1.5W4'"),
    (_with(axes__precision=[]), "axes.precision: List should have at least 1 item"),
    (_with(axes__fraction=[0]), "fraction must be in (0, 1], got 0"),
    (_with(axes__fraction=[1.2]), "fraction must be in (0, 1], got 1.2"),
    (_with(axes__init=["pretrained"]), "axes.init.0: Input should be 'random', 'non_robust' or 'robust'"),
    (_with(axes__strategy=["trades"]), "axes.strategy.0: Input should be"),
    (_with(axes__method=[]), "axes.method: List should have at least 1 item"),
    (_with(fp__robust=None), "need fp.robust"),
    (_with(dataset__name="mnist"), "unknown dataset 'mnist'; known: cifar10"),
    (_with(model__name="vgg"), "unknown model 'vgg'"),
    (_with(evaluation__eps=[-1, 8]), "eps values must be >= 0"),
    (_with(evaluation__main_eps=4), "main_eps 4 must be one of eps"),
    (_with(fp__non_robust__epochs=1.5), "fp.non_robust.epochs: Input should be a valid integer"),
    (_with(qat__finetune__lr=0), "qat.finetune.lr: Input should be greater than 0"),
    (_with(axes=DELETE), "needs axes (a grid) or cells"),
    (_with(evaluation__attacks=[{"name": "cw"}]),
     "evaluation.attacks.0.name: unknown attack 'cw'; known: apgd, autoattack, fgsm, pgd, square, transfer"),
    (_with(evaluation__attacks=[{"name": "autoattack", "attacks": ["apgd-x"]}]),
     "evaluation.attacks.0.attacks.0: Input should be 'apgd-ce', 'apgd-t', 'fab-t' or 'square'"),
    (_with(evaluation__attacks=[{"name": "pgd", "attacks": ["apgd-ce"]}]), "attacks applies to autoattack and apgd"),
    (_with(evaluation__attacks=[{"name": "pgd"}, {"name": "pgd", "steps": 40}]), "attack labels must be distinct"),
    (_with(evaluation__diagnostics__n=0), "evaluation.diagnostics.n: Input should be greater than or equal to 1"),
    (_with(evaluation__attacks=[{"name": "pgd", "eps": [4]}]), "attack 'pgd' eps [4.0] must be among eps [8.0, 32.0]"),
    (_with(fp__fraction=0), "fp.fraction: fraction must be in (0, 1], got 0"),
    (_with(fp__robust__fraction=2), "fp.robust.fraction: fraction must be in (0, 1], got 2"),
    (_with(quant__act_placement="outputs"), "quant.act_placement: Input should be 'inputs' or 'relu'"),
    (_with(cells=[{"init": "robust", "method": "ptq", "precision": "A8W8", "eps": [8]}]),
     "eps [8.0] must be a subset of evaluation.eps [8.0, 32.0] that holds main_eps 32"),
    (_with(fp__robust={"checkpoint": "no_such_weights.pt"}), "fp.robust.checkpoint: no such file or folder"),
    (_with(fp__robust={"checkpoint": "x.pt", "epochs": 3}), "fp.robust.epochs: unknown key (not a study field)"),
    (_with(qat__held_out=100, axes__fraction=[1.0]),
     "qat.held_out 100 takes training images outside a cell's fraction, and qat/vanilla from non_robust A4W4 f=1"),
    (_with(qat__held_out=-1), "qat.held_out: Input should be greater than or equal to 0"),
    ("axes: [unclosed", "not valid YAML at line 1"),
    ("- just\n- a list\n", "a study file must be a YAML mapping"),
    (b"\xff\xfe\x00\x89PNG binary", "a study file must be UTF-8 text (YAML); byte 0 is 0xff"),
]


@pytest.mark.parametrize("study,message", BAD, ids=[m[:30] for _, m in BAD])
def test_bad_study_files_give_one_clear_message_exit_2_and_write_nothing(tmp_path, study, message):
    path = write(tmp_path, study)
    code, text = cli("run", path, "--dry-run")
    assert code == 2, text
    assert message in text
    assert "Traceback" not in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]  # no store, nothing else


def test_missing_study_file_and_missing_data(tmp_path):
    code, text = cli("run", tmp_path / "none.yaml")
    assert code == 2 and "cannot read study file" in text
    path = write(tmp_path, _with(dataset={"name": "cifar10", "root": str(tmp_path / "nodata")}))
    code, text = cli("run", path, "--dry-run")
    assert code == 2 and "does not exist" in text


def test_grid_expansion_drops_meaningless_cells_with_reasons():
    study = parse_study(_with(axes__init=["random", "robust"], axes__strategy=["vanilla", "adversarial"]))
    cells, dropped = study.expand()
    assert {(c.init, c.method, c.strategy) for c in cells} == {
        ("random", "qat", "vanilla"), ("random", "qat", "adversarial"), ("robust", "ptq", None),
        ("robust", "qat", "vanilla"), ("robust", "qat", "adversarial")}
    reasons = [r for _, r in dropped]
    assert "PTQ of random parameters is meaningless" in reasons
    assert any("PTQ has no training strategy" in r for r in reasons)


def test_explicit_cells_are_validated_and_merged():
    study = parse_study({"cells": [{"init": "robust", "method": "qat", "precision": "a4w4"},
                                   {"init": "random", "method": "ptq", "precision": "A8W8"},
                                   {"init": "robust", "method": "ptq", "strategy": "transfer", "precision": "A8W8"}]})
    cells, dropped = study.expand()
    assert [(c.method, c.strategy, c.precision) for c in cells] == [("qat", "vanilla", "A4W4")]
    assert len(dropped) == 2
    with pytest.raises(ConfigError, match="cells.0.precision"):
        parse_study({"cells": [{"init": "robust", "method": "qat", "precision": "A9W9"}]})


# ---------------------------------------------------------------- planning

def test_plan_shares_fp_models_and_keys_are_content_addresses():
    study = parse_study(TINY)
    plan = build_plan(study, lambda: 1000)
    kinds = [s.kind for s in plan.stages.values()]
    assert kinds.count("train_fp") == 2  # one per init, shared by every cell of that init
    assert kinds.count("quantize") == kinds.count("evaluate") == 6
    transfer = [s for s in plan.stages.values() if s.kind == "quantize" and s.spec.strategy == "transfer"]
    robust_fp = next(s.key for s in plan.stages.values() if s.kind == "train_fp" and s.spec.init == "robust")
    assert all(s.spec.teacher == robust_fp for s in transfer)  # the teacher is a named parent
    for s in plan.stages.values():
        assert s.key == spec_key(s.spec)
        assert all(p in json.dumps(s.config) for p in s.parents)  # parents are keyed by their keys
    # another study over the same FP settings reuses the FP stages; another seed does not
    other = build_plan(parse_study({**TINY, "name": "other"}), lambda: 1000)
    assert set(other.stages) == set(plan.stages)
    seeded = build_plan(parse_study({**TINY, "seeds": [1]}), lambda: 1000)
    assert not set(seeded.stages) & set(plan.stages)
    # cost: adversarial FP training costs (steps + 1) passes per image
    nr = next(s for s in plan.stages.values() if s.kind == "train_fp" and s.spec.init == "non_robust")
    rb = next(s for s in plan.stages.values() if s.key == robust_fp)
    assert rb.cost["backward"] == 3 * nr.cost["backward"] == 3 * 2 * 1000


def test_fp_models_on_a_subset_shared_by_every_seed_and_n_test_in_every_key():
    study = parse_study(_with(seeds=[0, 1, 2], fp__fraction=0.25, fp__robust__fraction=0.5, fp__seed=7))
    plan = build_plan(study, lambda: 1000)
    fps = [s for s in plan.stages.values() if s.kind == "train_fp"]
    assert len(fps) == 2  # shared by all three seeds
    by_init = {s.spec.init: s for s in fps}
    assert by_init["non_robust"].spec.fraction == 0.25 and by_init["robust"].spec.fraction == 0.5
    assert all(s.spec.train.seed == 7 for s in fps)
    assert by_init["robust"].cost["backward"] == 3 * 2 * 500  # (steps + 1) passes x epochs x its 500 images
    quantized = [s for s in plan.stages.values() if s.kind == "quantize"]
    assert {s.spec.seed for s in quantized} == {0, 1, 2}
    assert all(set(s.parents) <= {f.key for f in fps} for s in quantized)
    # without fp.seed each seed trains its own FP models
    assert sum(s.kind == "train_fp" for s in build_plan(parse_study(_with(seeds=[0, 1])), lambda: 1000).stages.values()) == 4
    # n_test decides NC, so it is in every key: changing it never reuses a stale status
    other = build_plan(parse_study(_with(evaluation__n_test=61)), lambda: 1000)
    assert not set(other.stages) & set(build_plan(parse_study(TINY), lambda: 1000).stages)
    # a cell can be evaluated at some of the study's budgets only (holding the main one)
    one = build_plan(parse_study(_with(axes=DELETE, cells=[{"init": "robust", "method": "ptq", "precision": "A8W8",
                                                            "eps": [32]}])), lambda: 1000)
    assert [s.spec.budgets for s in one.stages.values() if s.kind == "evaluate"] == [(Budget(32 / 255, 32.0),)]
    # PACT's alpha: from the data for trained parameters, PACT's fixed 10 from random ones
    grid = build_plan(parse_study(_with(axes__init=["random", "robust"])), lambda: 1000)
    inits = {(s.spec.init, s.spec.quant.pact_init) for s in grid.stages.values()
             if s.kind == "quantize" and s.spec.method == "qat"}
    assert inits == {("random", "fixed"), ("robust", "data")}


def test_time_estimate_counts_passes_times_measured_speeds():
    from robquant.pipeline.estimate import ASSUMED_ACCURACY, Speeds, estimate_plan

    speeds = Speeds(device="test", train_fp=1.0, train_q=2.0, grad_fp=0.5, grad_q=0.25, grad_view=0.1, fwd_fp=0.0,
                    fwd_q=0.0, fwd_calib=0.0, load_train=0.0, load_test=0.0, train_fp_bf16=0.4, train_q_bf16=0.8,
                    grad_fp_bf16=0.2, grad_q_bf16=0.1)
    study = parse_study(_with(evaluation__diagnostics__enabled=False, evaluation__attacks=[{"name": "fgsm"}]))
    plan = build_plan(study, lambda: 1000)
    seconds = estimate_plan(plan, speeds, 1000)
    by = {(s.kind, getattr(s.spec, "init", None), getattr(s.spec, "method", None), getattr(s.spec, "strategy", None)):
          seconds[k] for k, s in plan.stages.items()}
    assert by[("train_fp", "non_robust", None, None)] == 2 * 1000 * 1.0  # epochs x images x a training step
    assert by[("train_fp", "robust", None, None)] == 2 * 1000 * (1.0 + 2 * 0.5)  # + 2 PGD steps
    assert by[("quantize", "robust", "qat", "vanilla")] == 2 * 500 * 2.0  # fraction 0.5
    assert by[("quantize", "robust", "ptq", None)] == 0.0
    # FGSM: one gradient pass per correctly classified example, at each of the two eps
    assert by[("evaluate", None, None, None)] == pytest.approx(2 * 60 * ASSUMED_ACCURACY * 0.25)
    # bf16 recipes at their own measured speeds; N-FGSM's two passes; the held-out check in float32
    bf16 = {"epochs": 2, "batch_size": 64, "lr": 0.1, "autocast": "bf16"}
    study = parse_study(_with(evaluation__diagnostics__enabled=False, evaluation__attacks=[{"name": "fgsm"}],
                              fp__non_robust=bf16, fp__robust=bf16, fp__robust_objective="n_fgsm",
                              fp__check={"n": 100, "steps": 10}))
    plan = build_plan(study, lambda: 1000)
    seconds = estimate_plan(plan, speeds, 1000)
    by = {(s.kind, getattr(s.spec, "init", None)): seconds[k] for k, s in plan.stages.items() if s.kind == "train_fp"}
    assert by[("train_fp", "non_robust")] == pytest.approx(2 * 1000 * 0.4)
    assert by[("train_fp", "robust")] == pytest.approx(2 * 1000 * (0.4 + 0.2) + 2 * 100 * 10 * 0.5)


def test_time_estimate_evaluates_on_the_test_split_when_n_test_is_null():
    # the demo's n_test: null means all of digits' 359 test images, not 10,000 (a 28x overestimate)
    from robquant.pipeline.estimate import ASSUMED_ACCURACY, Speeds, estimate_plan

    speeds = Speeds(device="test", train_fp=0.0, train_q=0.0, grad_fp=0.0, grad_q=0.25, grad_view=0.0, fwd_fp=0.0,
                    fwd_q=0.0, fwd_calib=0.0, load_train=0.0, load_test=0.0, train_fp_bf16=0.0, train_q_bf16=0.0,
                    grad_fp_bf16=0.0, grad_q_bf16=0.0)
    study = parse_study(_with(evaluation__diagnostics__enabled=False, evaluation__attacks=[{"name": "fgsm"}],
                              evaluation__n_test=None))
    plan = build_plan(study, lambda: 1000)
    assert plan.n_test_split() == 359  # digits' test split, loaded once
    evaluations = [t for k, t in estimate_plan(plan, speeds, 1000).items() if plan.stages[k].kind == "evaluate"]
    assert evaluations and all(t == pytest.approx(2 * 359 * ASSUMED_ACCURACY * 0.25) for t in evaluations)


def test_time_estimate_counts_the_bit_search():
    from robquant.defaults import ASSUMED_SEARCH_FLIPS
    from robquant.pipeline.estimate import Speeds, estimate_plan

    speeds = Speeds(device="test", train_fp=0.0, train_q=0.0, grad_fp=0.0, grad_q=0.25, grad_view=0.0, fwd_fp=0.0,
                    fwd_q=0.01, fwd_calib=0.0, load_train=0.0, load_test=0.0, train_fp_bf16=0.0, train_q_bf16=0.0,
                    grad_fp_bf16=0.0, grad_q_bf16=0.0)
    bitflip = {"n": 50, "repeats": 2, "methods": ["search"], "attack_batch": 16, "search_cap": 80}
    seconds = {}
    for on in (False, True):
        study = parse_study(_with(evaluation__diagnostics__enabled=False, evaluation__bitflip=bitflip if on else False,
                                  axes__init=["robust"], axes__method=["ptq"]))
        plan = build_plan(study, lambda: 1000)
        (seconds[on],) = [t for k, t in estimate_plan(plan, speeds, 1000).items() if plan.stages[k].kind == "evaluate"]
    assert {s.spec.add_on("bitflip").seeds for s in plan.stages.values() if s.kind == "evaluate"} == {(0, 1)}
    two_seeds = build_plan(parse_study(_with(seeds=[0, 1], evaluation__bitflip=bitflip, axes__init=["robust"],
                                             axes__method=["ptq"])), lambda: 1000)
    batches = {s.spec.seed: s.spec.add_on("bitflip").seeds for s in two_seeds.stages.values() if s.kind == "evaluate"}
    assert batches == {0: (0, 1), 1: (2, 3)}  # attack batches of its own per model seed
    layers = 20
    per_flip = 16 * 0.25 + (16 * (1 + layers / 2) + 50) * 0.01  # gradient; recorded forward, candidates, accuracy
    assert seconds[True] - seconds[False] == pytest.approx(2 * ASSUMED_SEARCH_FLIPS * per_flip)


def test_time_estimate_counts_the_bit_errors():
    from robquant.pipeline.estimate import Speeds, estimate_plan

    speeds = Speeds(device="test", train_fp=0.0, train_q=0.0, grad_fp=0.0, grad_q=0.25, grad_view=0.0, fwd_fp=0.0,
                    fwd_q=0.01, fwd_calib=0.0, load_train=0.0, load_test=0.0, train_fp_bf16=0.0, train_q_bf16=0.0,
                    grad_fp_bf16=0.0, grad_q_bf16=0.0)
    errors = {"n": 50, "rates": [1e-4, 1e-3, 1e-2], "draws": 4}
    seconds = {}
    for on in (False, True):
        study = parse_study(_with(evaluation__diagnostics__enabled=False, evaluation__bit_errors=errors if on else False,
                                  axes__init=["robust"], axes__method=["ptq"], axes__precision=["A4W4"]))
        plan = build_plan(study, lambda: 1000)
        (seconds[on],) = [t for k, t in estimate_plan(plan, speeds, 1000).items() if plan.stages[k].kind == "evaluate"]
    assert seconds[True] - seconds[False] == pytest.approx((1 + 3 * 4) * 50 * 0.01)  # a clean pass, one per draw


def test_dry_run_prints_the_plan_and_writes_only_the_store(tmp_path):
    path = write(tmp_path, TINY)
    code, text = cli("run", path, "--dry-run", "--device", "cpu")
    assert code == 0, text
    assert "14 stages (2 train_fp, 6 quantize, 6 evaluate); 0 done, 14 to run" in text
    assert "cost to run" in text and "dropped 1 grid cell(s): PTQ has no training strategy" in text
    assert "estimated wall time on cpu" in text and "bit search" not in text
    assert not list((tmp_path / "runs" / "store" / "stages").iterdir())
    path = write(tmp_path, _with(evaluation__bitflip=True), "flips.yaml")  # what the estimate assumes is said
    code, text = cli("run", path, "--dry-run", "--device", "cpu")
    assert code == 0 and "a bit search 30 flips to break a model" in text, text


@pytest.mark.parametrize("units", [True, False])
def test_bf16_on_a_cpu_without_bf16_units_is_named_with_its_measured_cost(tmp_path, monkeypatch, units):
    import robquant.provenance

    monkeypatch.setattr(robquant.provenance, "cpu_bf16", lambda: units)
    bf16 = {**TINY["fp"]["non_robust"], "autocast": "bf16"}
    path = write(tmp_path, _with(fp__non_robust=bf16))
    code, text = cli("run", path, "--dry-run", "--device", "cpu")
    assert code == 0, text
    said = re.search(r"1 stage\(s\) train under bf16 autocast, but this CPU has no bf16 units .* takes ([\d.]+)x "
                     r"its float32 time", text)
    assert (said is None) == units, text
    if said:
        assert float(said.group(1)) > 0


# ---------------------------------------------------------------- running, resuming, crash safety

def _metrics(store_root):
    con = sqlite3.connect(store_root / "index.sqlite")
    rows = con.execute("SELECT key, kind, status, metrics FROM stages").fetchall()
    con.close()
    out = {}
    for key, kind, status, metrics in rows:
        m = json.loads(metrics) if metrics else {}
        out[key] = (kind, status, {k: m.get(k) for k in ("clean_accuracy", "robust", "worst_case", "n_test", "robustness", "flags")})
    return out


def test_run_completes_records_everything_and_a_second_run_does_nothing(reference_run):
    path, store, text = reference_run
    assert "ran 14 stages" in text and "tiny: clean accuracy / robustness" in text
    metrics = _metrics(store)
    assert len(metrics) == 14 and all(s in ("done", "NC") for _, s, _ in metrics.values())
    assert sorted(p.name for p in (store / "stages").iterdir()) == sorted(metrics)
    assert not list((store / "work").iterdir())
    evaluated = [m for k, s, m in metrics.values() if k == "evaluate"]
    assert all(m["robust"] and 0 <= m["clean_accuracy"] <= 1 for m in evaluated)
    for m in evaluated:  # every model: each attack's number, the worst case of record, the trust flags
        by_attack = {r["attack"]: r["accuracy"] for r in m["robust"] if r["eps_255"] == 32}
        assert set(by_attack) == {"pgd", "transfer"}
        assert m["robustness"] <= min(by_attack.values()) and isinstance(m["flags"], list)
    diag = [json.loads(p.read_text()).get("diagnostics") for p in (store / "stages").glob("*/stage.json")]
    diag = [d for d in diag if d]
    assert len(diag) == len(evaluated) and all(set(d["checks"]) >= {"zero_gradient", "integer_mismatch"} for d in diag)
    assert all(d["checks"]["integer_mismatch"]["flag"] is False for d in diag)  # A4W4: integer execution agrees
    record = json.loads(next((store / "stages").glob("*/stage.json")).read_text())
    assert record["stage"]["planned_cost"] and record["stage"]["wall_s"] > 0 and record["env"]["torch"]
    code, again = cli("run", path, "--device", "cpu")
    assert code == 0 and "nothing to do: all 14 stages are done" in again
    code, status = cli("status", path)
    assert code == 0 and "14/14 stages finished (100 %)" in status


def test_killed_runs_resume_to_the_same_records(reference_run, tmp_path):
    """SIGKILL the study at random moments; resume each time; the result equals an uninterrupted run."""
    path = write(tmp_path, TINY)
    store = tmp_path / "runs" / "store"
    rng = random.Random(1234)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "robquant.cli", "run", str(path), "--device", "cpu"]
    kills = 0
    for _ in range(4):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        time.sleep(rng.uniform(2.5, 5.0))  # python + torch start takes about 2 s
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 2
    code, text = cli("run", path, "--device", "cpu")
    assert code == 0, text
    ours, ref = _metrics(store), _metrics(reference_run[1])
    for key in ref:
        for field in ref[key][2]:
            assert ours[key][2][field] == ref[key][2][field], (ref[key][0], field)
    assert ours == ref
    assert not list((store / "work").iterdir())  # nothing half-done left behind
    assert len(list((store / "stages").iterdir())) == 14


def test_each_stage_record_says_how_it_was_made_in_one_typed_block(reference_run):
    from robquant.pipeline.store import Store
    from robquant.provenance import StageInfo

    _, store_dir, _ = reference_run
    store = Store(store_dir)
    made = [StageInfo.read(store.get(r["key"])["record"]) for r in store.rows()]
    assert made and all(m is not None and m.key == r["key"] for m, r in zip(made, store.rows()))
    assert all(m.wall_s >= m.compute_s >= 0 and m.planned_cost["forward"] >= 0 for m in made)
    quantize = [m for m in made if m.kind == "quantize"]
    assert quantize and all(set(m.parents) <= {"checkpoint", "teacher"} for m in quantize)
    assert StageInfo.read({"kind": "train"}) is None  # a model folder made elsewhere has no such block
    again = StageInfo.read({"stage": made[0].to_dict()})
    assert again == made[0]
