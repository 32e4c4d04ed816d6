"""The model zoo: models by name (zoo:NAME) through the API, the CLI and a study; every load checked
against the zoo's sha256; the shipped models' hashes and cards agree with their files."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

import robquant
from robquant import zoo
from robquant.cli import app
from robquant.errors import CheckpointError, ConfigError, UnknownNameError
from robquant.modelfolder import load_model, weights_sha256


def cli(*args):
    res = CliRunner().invoke(app, [str(a) for a in args])
    return res.exit_code, res.output


@pytest.fixture()
def user_zoo(tmp_path, demo_models, monkeypatch):
    """A zoo folder holding the demo's robust digits model as ``digits-robust``, in ROBQUANT_ZOO."""
    folder, _ = demo_models["robust"]
    code, text = cli("zoo", "add", folder, "--name", "digits-robust", "--into", tmp_path / "zoo",
                     "--description", "the demo's robust digits model", "--command", "robquant demo")
    assert code == 0, text
    monkeypatch.setenv(zoo.ENV, str(tmp_path / "zoo"))
    return tmp_path / "zoo"


def test_a_zoo_model_loads_by_name_through_the_api(user_zoo, demo_models):
    net = robquant.load_model("zoo:digits-robust")
    original = load_model(demo_models["robust"][0])
    for (k, a), b in zip(original.state_dict().items(), net.state_dict().values()):
        assert torch.equal(a, b), k
    entry = zoo.get("zoo:digits-robust")
    assert not entry.shipped and entry.files["model.safetensors"] == weights_sha256(demo_models["robust"][0])
    assert set(entry.files) == {"model.safetensors", "record.json", "card.md", "curve.png"}
    with pytest.raises(UnknownNameError, match="unknown zoo model 'nope'; known: .*digits-robust"):
        robquant.load_model("zoo:nope")


def test_a_tampered_zoo_file_is_refused_by_name(user_zoo):
    weights = user_zoo / "digits-robust" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    data[-1] ^= 1
    with pytest.raises(CheckpointError, match=r"zoo model 'digits-robust': .*model.safetensors has sha256 .* not the"):
        robquant.load_model("zoo:digits-robust")
    code, text = cli("attack", "zoo:digits-robust", "--eps", "8", "--n-test", "20", "--store", user_zoo / "st")
    assert code == 2 and "was changed or corrupted" in text and not (user_zoo / "st").exists()
    weights.write_bytes(bytes(data))  # the weights as shipped, the record gone
    zoo.resolve("zoo:digits-robust")
    (user_zoo / "digits-robust" / "record.json").unlink()
    with pytest.raises(CheckpointError, match="record.json is missing"):
        zoo.resolve("zoo:digits-robust")


def test_the_cli_lists_and_attacks_a_zoo_model(user_zoo, tmp_path):
    code, text = cli("zoo")
    assert code == 0 and "zoo:digits-robust" in text and str(user_zoo)[:20] in text.replace("\n", "")
    code, text = cli("attack", "zoo:digits-robust", "--eps", "32", "--steps", "3", "--n-test", "40",
                     "--store", tmp_path / "st", "--out", tmp_path / "ev")
    assert code == 0, text
    stage = json.loads((tmp_path / "ev" / "stage.json").read_text())
    assert stage["result"]["n"] == 40
    imported = [json.loads(p.read_text()) for p in (tmp_path / "st" / "stages").glob("*/record.json")]
    assert [r["config"]["source"] for r in imported] == [str((user_zoo / "digits-robust").resolve())]


def test_a_study_starts_from_a_zoo_model(user_zoo, tmp_path):
    from robquant.pipeline.plan import build_plan
    from robquant.pipeline.specs import ImportFP
    from robquant.pipeline.study import load_study

    study = {"name": "from-zoo", "dataset": {"name": "digits"}, "model": {"name": "resnet20", "width": 8},
             "seeds": [0], "evaluation": {"attacks": [{"name": "pgd", "steps": 3}], "eps": [32], "main_eps": 32, "n_test": 50,
                                          "diagnostics": {"enabled": False}},
             "fp": {"robust": {"checkpoint": "zoo:digits-robust"}, "non_robust": None},
             "cells": [{"init": "robust", "method": "ptq", "precision": "A8W8"}]}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    plan = build_plan(load_study(path))
    (imported,) = [s.spec for s in plan.stages.values() if isinstance(s.spec, ImportFP)]
    assert Path(imported.source) == (user_zoo / "digits-robust").resolve()
    assert imported.sha256 == weights_sha256(user_zoo / "digits-robust")
    (user_zoo / "digits-robust" / "model.safetensors").write_bytes(b"not the model")
    code, text = cli("run", path, "--dry-run")
    assert code == 2 and "fp.robust.checkpoint" in text and "changed or corrupted" in text


def test_zoo_names_and_duplicates_are_refused(user_zoo, tmp_path, demo_models, monkeypatch):
    code, text = cli("zoo", "add", demo_models["robust"][0], "--name", "../x", "--into", tmp_path / "z2")
    assert code == 2 and "plain file name" in text
    shutil.copytree(user_zoo, tmp_path / "z2")
    monkeypatch.setenv(zoo.ENV, f"{user_zoo}:{tmp_path / 'z2'}")
    with pytest.raises(ConfigError, match="'digits-robust' is in two zoo folders"):
        zoo.entries()


def _shipped(dataset=None):
    """The shipped models' names, or one skipped case that says none ships yet (a stated condition)."""
    names = sorted(n for n, e in zoo.read_index(zoo.PACKAGED).items()
                   if dataset is None or e.info.get("dataset") == dataset)
    return names or [pytest.param(None, marks=pytest.mark.skip(reason="no model ships in the zoo yet"))]


@pytest.mark.parametrize("name", _shipped())
def test_each_shipped_model_matches_its_hashes_and_its_card(name):
    entry = zoo.read_index(zoo.PACKAGED)[name]
    entry.verify(tuple(entry.files))  # every file the index lists, not only those a load reads
    record = json.loads((entry.folder / "record.json").read_text())
    assert record["status"] == "done" and record["data"]["n_train"] >= 49_000
    card = (entry.folder / "card.md").read_text()
    m = entry.info["metrics"]
    assert m["clean_n"] == 10_000 and m["pgd20_n"] == 10_000
    row = next(line for line in card.splitlines() if line.startswith("| this model"))
    numbers = [float(x) for x in re.findall(r"([\d.]+) %", row)]
    expected = [round(100 * m[k], 2) for k in ("clean", "pgd20", "autoattack") if m.get(k) is not None]
    assert numbers == expected
    assert entry.info["command"] and all(c in card for c in entry.info["command"])
    assert robquant.load_model(f"zoo:{name}").training is False


def test_the_package_ships_the_zoo_files():
    # what `pip install` carries: pyproject's package data names the zoo's index and model folders
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert '"zoo/models/index.json"' in text and '"zoo/models/*/*"' in text
    assert (zoo.PACKAGED / "index.json").is_file()


CIFAR = Path(__file__).resolve().parents[1] / ".data"


@pytest.mark.slow
@pytest.mark.parametrize("name", _shipped("cifar10"))
def test_each_shipped_cifar10_model_scores_its_card_on_1000_test_images(name):
    # the card's clean accuracy on the same first 1,000 test images (its evaluation's per-example outcomes),
    # within 1 point: other kernels round differently, nothing else may differ
    from robquant.evaluation import evaluate
    from robquant.data import create_dataset

    if not (CIFAR / "cifar-10-batches-py").is_dir():
        pytest.skip("no .data/cifar-10-batches-py (bash benchmarks/prepare_cifar.sh)")
    m = zoo.get(name).info["metrics"]
    test = create_dataset("cifar10", CIFAR, "test", allow_unverified=True).head(m["clean_first_n"])
    accuracy = evaluate(robquant.load_model(f"zoo:{name}"), test, [], []).clean_accuracy
    assert abs(accuracy - m["clean_first"]) <= 0.01, (accuracy, m["clean_first"])


def test_the_card_takes_the_speed_from_the_median_epoch_not_the_paused_ones():
    from robquant.zoo.card import render_card

    history = [{"epoch": e, "seconds": s} for e, s in enumerate([80.0, 82.0, 860.0, 81.0, 79.0], 1)]  # one paused
    record = {"train": {"history": history, "images": 5 * 49_000, "epochs_completed": 5}, "config": {}, "env": {}}
    card = render_card("m", record, {"metrics": {}})
    assert "median epoch 81.0 s, 605 training images/s" in card  # 49,000 / 81
    assert "19.7 min of training (the epochs' sum, any pause included)" in card
