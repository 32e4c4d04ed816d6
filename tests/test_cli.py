"""The command line: real runs on offline data, and one clear message + exit 2 for bad input."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from robquant.cli import app

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_train_then_attack_round_trip(tmp_path):
    out = tmp_path / "m"
    code, text = run("train", "--dataset", "digits", "--epochs", "2", "--width", "4", "--lr", "0.05",
                     "--schedule", "cosine", "--fraction", "0.5", "--out", out, "--device", "cpu")
    assert code == 0, text
    record = json.loads((out / "record.json").read_text())
    assert record["config"]["fraction"] == 0.5 and record["data"]["n_train"] == 719
    assert record["env"]["torch"] and "git_commit" in record["env"] and record["seed"] == 0
    assert record["timings"]["train_s"] > 0 and record["train"]["passes_total"] == 2 * 719
    code, text = run("attack", out, "--eps", "2,8.1234567", "--steps", "3", "--n-test", "50", "--attack", "pgd,fgsm",
                     "--device", "cpu", "--out", tmp_path / "ev")
    assert code == 0, text
    assert "2/255" in text and "worst case" in text
    stage = json.loads((tmp_path / "ev" / "stage.json").read_text())
    assert stage["config"]["model"] == out.resolve().name  # the model's stage, by key
    # the budgets' labels travel as written (never eps * 255 rounded back)
    assert [b["label"] for b in stage["config"]["budgets"]] == [2.0, 8.1234567]
    result = stage["result"]
    assert {r["eps_255"] for r in result["robust"]} == {2.0, 8.1234567}
    assert result["n"] == 50 and len(result["robust"]) == 4
    assert result["attack_params"]["pgd"]["steps"] == 3
    # a model folder from elsewhere (a copy) is imported into the store first, keyed by its weights
    shutil.copytree(out.resolve(), tmp_path / "copy")
    code, text = run("--quiet", "attack", tmp_path / "copy", "--eps", "8", "--steps", "2", "--n-test", "20",
                     "--device", "cpu", "--out", tmp_path / "ev2")
    assert code == 0, text
    model = json.loads((tmp_path / "ev2" / "stage.json").read_text())["config"]["model"]
    imported = json.loads((tmp_path / "store" / "stages" / model / "stage.json").read_text())
    assert imported["kind"] == "import_fp" and imported["config"]["source"] == str((tmp_path / "copy").resolve())
    # --out names a link: a folder holding something else is refused before any work
    code, text = run("train", "--dataset", "digits", "--epochs", "1", "--out", tmp_path / "copy")
    assert code == 2 and "exists and is not a link" in text, text


@pytest.mark.parametrize("args,message", [
    (["attack", "{model}", "--eps", "-1"], "--eps values must be >= 0"),
    (["attack", "{model}", "--eps", "1,x"], "--eps values must be numbers"),
    (["attack", "{model}", "--attack", "cw"], "unknown attack 'cw'; known: apgd, autoattack, fgsm, pgd, square, transfer"),
    (["attack", "{tmp}", "--eps", "1"], "not a robquant model folder"),
    (["attack", "{model}", "--eps", "8", "--diagnose", "--diagnose-eps", "4"], "--diagnose-eps must be one of --eps (8), got 4"),
    (["train", "--dataset", "digits", "--fraction", "1.2", "--out", "{tmp}/x"], "--fraction must be in (0, 1]"),
    (["train", "--dataset", "digits", "--fraction", "0", "--out", "{tmp}/x"], "--fraction must be in (0, 1]"),
    (["train", "--dataset", "mnist", "--out", "{tmp}/x"], "unknown dataset 'mnist'; known: cifar10"),
    (["train", "--dataset", "digits", "--model", "vgg", "--out", "{tmp}/x", "--epochs", "1"], "unknown model 'vgg'"),
    (["train", "--dataset", "digits", "--objective", "x", "--out", "{tmp}/x"], "unknown objective 'x'"),
    (["train", "--dataset", "cifar10", "--out", "{tmp}/x"], "needs a data root"),
    (["train", "--dataset", "cifar10", "--data-root", "{tmp}/none", "--out", "{tmp}/x"], "does not exist"),
    (["train", "--dataset", "digits", "--epochs", "0", "--out", "{tmp}/x"], "epochs must be in [1, inf]"),
    (["train", "--dataset", "digits", "--device", "tpu", "--out", "{tmp}/x"], "--device must be"),
])
def test_bad_input_gives_one_clear_message_and_exit_2(tmp_path, demo_models, args, message):
    model = demo_models["non_robust"][0]
    args = [a.replace("{model}", str(model)).replace("{tmp}", str(tmp_path)) for a in args]
    code, text = run(*args)
    assert code == 2, text
    assert message in " ".join(text.split())
    assert "Traceback" not in text
    assert not (tmp_path / "x").exists()  # nothing half-written


def test_an_internal_error_is_one_message_naming_the_log_of_its_traceback(tmp_path, monkeypatch):
    import robquant.pipeline

    def broken(**kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(robquant.pipeline, "train_model", broken)
    monkeypatch.setenv("ROBQUANT_LOG_DIR", str(tmp_path / "logs"))
    code, text = run("train", "--dataset", "digits", "--epochs", "1", "--out", tmp_path / "m")
    assert code == 1 and "Traceback" not in text
    assert "internal error in `robquant train`: ZeroDivisionError: a bug" in " ".join(text.split())
    (log,) = (tmp_path / "logs").iterdir()
    assert str(log) in "".join(text.split()) and "Traceback" in log.read_text() and "a bug" in log.read_text()


def test_list_shows_registries():
    code, text = run("list")
    assert code == 0 and "resnet20" in text and "pgd_at" in text and "digits" in text


def test_demo_runs_a_study_offline_and_resumes(tmp_path):
    from test_study import TINY, write

    study = write(tmp_path, TINY)
    code, text = run("demo", "--study", study, "--out", tmp_path / "demo", "--device", "cpu")
    assert code == 0, text
    assert "ran 14 stages" in text and "Findings" in text
    # the terminal gets the Findings and the regime: at most 40 lines of at most 100 columns above the path
    lines = text.rstrip("\n").split("\n")
    above = next(i for i, line in enumerate(lines) if "report of" in line and "written to" in line)
    assert above <= 40, text
    assert max(len(line) for line in lines[:above]) <= 100, text
    assert "tiny: clean accuracy / robustness" not in " ".join(text.split())  # the rest: --verbose, the report
    assert (tmp_path / "demo" / "store" / "index.sqlite").is_file()
    code, text = run("demo", "--study", study, "--out", tmp_path / "demo", "--device", "cpu", "--verbose")
    assert code == 0 and "ran 0 stages" in text and "14 were done" in text
    assert "tiny: clean accuracy / robustness" in " ".join(text.split()) and "cells behind each verdict" in text
    # one path: the CLI's `train` with the study's FP recipe is the study's stage (same key), found, not redone
    store = tmp_path / "demo" / "store"
    stages = sorted(p.name for p in (store / "stages").iterdir())
    code, text = run("--quiet", "train", "--dataset", "digits", "--width", "4", "--epochs", "2", "--lr", "0.05",
                     "--batch-size", "64", "--schedule", "cosine", "--n-test", "60", "--store", store,
                     "--out", tmp_path / "fp", "--device", "cpu")
    assert code == 0, text
    assert (tmp_path / "fp").resolve().name in stages and sorted(p.name for p in (store / "stages").iterdir()) == stages


def test_demo_preset_is_packaged():
    from importlib import resources

    assert (resources.files("robquant") / "configs" / "demo.yaml").is_file()


def test_refused_models_leave_no_store_folder(tmp_path, demo_models):
    # refused input writes nothing: the checks run before any store folder exists
    code, text = run("train", "--model", "os:system", "--dataset", "digits", "--epochs", "1", "--out", tmp_path / "m")
    assert code == 2 and "os:system" in text and not (tmp_path / "store").exists()
    folder, _ = demo_models["robust"]
    for name, payload in (("corrupt", b"garbage"), ("pickle", None)):
        bad = tmp_path / name / "model"
        bad.mkdir(parents=True)
        shutil.copy(folder / "record.json", bad / "record.json")
        if payload is None:
            import pickle
            payload = pickle.dumps({"conv1.weight": [1.0]})
        (bad / "model.safetensors").write_bytes(payload)
        code, text = run("attack", bad, "--eps", "8", "--n-test", "10")
        assert code == 2 and "safetensors" in "".join(text.split()), text
        assert not (tmp_path / name / "store").exists()
        code, text = run("quantize", bad, "--method", "ptq", "--precision", "A8W8", "--out", tmp_path / name / "q")
        assert code == 2 and not (tmp_path / name / "store").exists(), text
