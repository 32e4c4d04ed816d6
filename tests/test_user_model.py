"""A user's own model class: named as 'package.module:factory' in a study or on the CLI, validated with
one clear message, refused when it would be quantized only in part, never imported just because a
record names it."""

import hashlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from typer.testing import CliRunner

from robquant.cli import app
from robquant.errors import ConfigError
from robquant.models import create_model, external
from robquant.quant.coverage import unseen_layers

HERE = Path(__file__).resolve()


class TinyNet(nn.Module):
    """A user's CNN: its own constructor arguments, nn.ReLU and pooling modules."""

    def __init__(self, channels: int = 1, classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.body(x)).flatten(1))


class FunctionalNet(TinyNet):
    """The same layers, but the activation and the pooling written as functions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.body[1](self.body[0](x)))
        return self.fc(F.adaptive_avg_pool2d(self.body[4](self.body[3](x)), 1).flatten(1))


def timm_style(num_classes: int = 1000, in_channels: int = 3, width: int = 8) -> nn.Module:
    """A factory with the argument names most model libraries use: the data set's values go in."""
    return TinyNet(channels=in_channels, classes=num_classes, width=width)


NOT_CALLABLE = 3


def not_a_module(**kwargs):
    return "a model"


STUDY = {
    "name": "user", "dataset": {"name": "digits"}, "model": {"name": "test_user_model:TinyNet", "kwargs": {"width": 8}},
    "seeds": [0],
    "evaluation": {"attacks": [{"name": "pgd", "steps": 3}], "eps": [32], "main_eps": 32, "n_test": 60,
                   "diagnostics": {"n": 30, "square_queries": 20, "autoattack": None}},
    "fp": {"non_robust": {"epochs": 10, "batch_size": 64, "lr": 0.1, "schedule": "cosine"}},
    "qat": {"finetune": {"epochs": 1, "batch_size": 64, "lr": 0.01, "schedule": "cosine"}},
    "axes": {"init": ["non_robust"], "method": ["ptq", "qat"], "precision": ["A8W8", "A4W4"]},
}


def cli(*args):
    res = CliRunner().invoke(app, [str(a) for a in args])
    return res.exit_code, " ".join(res.output.split())


def test_a_users_model_class_runs_a_study_end_to_end(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(STUDY))
    code, text = cli("run", path, "--device", "cpu")
    assert code == 0, text
    assert "ran 9 stages" in text and "QAT/vanilla from non_robust" in text
    records = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "store" / "stages").glob("*/record.json")]
    assert len(records) == 5  # FP + 4 quantized models
    for r in records:
        assert r["model"]["name"] == "test_user_model:TinyNet" and r["model"]["kwargs"] == {"width": 8}
        assert r["model"]["source"]["sha256"] == hashlib.sha256(HERE.read_bytes()).hexdigest()
    fp = next(r for r in records if r["kind"] == "train_fp")
    assert fp["metrics"]["clean_accuracy"] > 0.3  # it trained (chance: 0.1)
    assert all(r["size"]["bytes"] < fp["size"]["bytes"] for r in records if r["kind"] != "train_fp")  # quantized


@pytest.mark.parametrize("name,message", [
    ("no_such_module:Net", "module 'no_such_module' cannot be imported (ModuleNotFoundError"),
    ("test_user_model:Missing", "module 'test_user_model' has no attribute 'Missing'"),
    ("test_user_model:NOT_CALLABLE", "'NOT_CALLABLE' is a int, not callable"),
])
def test_a_bad_reference_is_one_message_naming_the_field(tmp_path, name, message):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**STUDY, "model": {"name": name}}))
    code, text = cli("run", path, "--dry-run")
    assert code == 2 and "model.name" in text and message in text and "Traceback" not in text


@pytest.mark.parametrize("model,message", [
    ({"name": "test_user_model:not_a_module"}, "returned a str, not a torch.nn.Module"),
    ({"name": "test_user_model:TinyNet", "kwargs": {"channels": 3}}, "wrong input shape: it cannot take inputs of "
                                                                      "shape (2, 1, 8, 8)"),
    ({"name": "test_user_model:TinyNet", "kwargs": {"classes": 7}}, "gave (2, 7), not logits of shape (2, 10)"),
    ({"name": "test_user_model:FunctionalNet"}, "cannot be quantized by module swap: relu() in the model "
                                                 "(FunctionalNet); adaptive_avg_pool2d() in the model"),
])
def test_a_model_that_cannot_run_is_refused_before_any_work(tmp_path, model, message):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**STUDY, "model": model}))
    code, text = cli("run", path, "--device", "cpu")
    assert code == 2 and message in text and "Traceback" not in text, text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study.yaml"]  # nothing written


def test_functional_layers_are_found_where_they_are_called():
    x = torch.zeros(2, 1, 8, 8)
    assert unseen_layers(TinyNet(), x, activations_at_relu=True) == {}
    assert unseen_layers(FunctionalNet(), x, activations_at_relu=False) == {
        "adaptive_avg_pool2d()": "the model (FunctionalNet)"}  # PTQ quantizes inputs: the activation is seen
    gelu = TinyNet()
    gelu.body[2] = nn.GELU()
    assert unseen_layers(gelu, x, activations_at_relu=True) == {"GELU module": "body.2"}
    for name in ("resnet8", "resnet20", "preact_resnet18"):  # our own models are covered
        assert unseen_layers(create_model(name, 10, 1), x, activations_at_relu=True) == {}


def test_a_record_never_imports_a_model_the_user_did_not_name():
    with pytest.raises(ConfigError, match="name it yourself to load it"):
        external.build("test_user_model:DefinitelyUnnamed", {})
    external.allow("test_user_model:TinyNet")
    assert isinstance(create_model("test_user_model:TinyNet", width=4), TinyNet)


def test_a_factory_taking_num_classes_and_in_channels_gets_the_data_sets_and_may_set_them(tmp_path):
    """`train --model pkg:factory` with and without `--model-kwargs '{"in_channels": 1}'`: the data
    set's 1 channel and 10 classes reach the factory, the record rebuilds the model."""
    from robquant import load_model

    for i, options in enumerate(([], ["--model-kwargs", json.dumps({"in_channels": 1, "num_classes": 10})])):
        out = tmp_path / f"m{i}"
        code, text = cli("train", "--dataset", "digits", "--model", "test_user_model:timm_style", *options,
                         "--epochs", "1", "--fraction", "0.05", "--n-test", "32", "--out", out)
        assert code == 0, text
        net = load_model(out)
        assert net.body[0].in_channels == 1 and net.fc.out_features == 10
    code, text = cli("train", "--dataset", "digits", "--model", "test_user_model:timm_style", "--model-kwargs",
                     json.dumps({"in_channels": 3}), "--epochs", "1", "--fraction", "0.05", "--out",
                     tmp_path / "bad")
    assert code != 0 and "cannot take inputs of shape (2, 1, 8, 8)" in text and "Traceback" not in text


# ---------------------------------------------------------------- your own weights

class Payload:
    """What a malicious weights file could hold: unpickling it would run a command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_your_weights_are_the_fp_parents_and_a_pickled_payload_is_refused(tmp_path, demo_models):
    from safetensors.torch import save_file

    from robquant.evaluation import evaluate
    from robquant.data import create_dataset
    from robquant.modelfolder import load_model

    folder, _ = demo_models["non_robust"]
    state = load_model(folder).state_dict()
    save_file(state, tmp_path / "mine.safetensors")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "mine.pt")  # DataParallel
    study = {**STUDY, "model": {"name": "resnet20", "width": 8}, "seeds": [0, 1],
             "evaluation": {**STUDY["evaluation"], "n_test": 100, "diagnostics": {"enabled": False}},
             "fp": {"non_robust": {"checkpoint": "mine.pt"}, "robust": {"checkpoint": "mine.safetensors"}},
             "axes": {"init": ["non_robust", "robust"], "method": ["ptq"], "precision": ["A8W8"]}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    code, text = cli("run", path, "--device", "cpu")
    assert code == 0, text
    assert "0 train_fp, 2 import_fp" in text  # one import per file, shared by the seeds; no training
    records = [json.loads(p.read_text()) for p in (tmp_path / "runs" / "store" / "stages").glob("*/record.json")]
    imported = [r for r in records if r["kind"] == "import_fp"]
    assert len(imported) == 2
    expected = evaluate(load_model(folder), create_dataset("digits", split="test"), [], [], n=100).clean_accuracy
    for r in imported:  # the very model: the same clean accuracy on the same test examples
        assert r["metrics"]["clean_accuracy"] == expected
        assert r["config"]["sha256"] == hashlib.sha256(Path(r["config"]["source"]).read_bytes()).hexdigest()

    marker = tmp_path / "PAYLOAD_RAN"
    torch.save({"conv1.weight": state["conv1.weight"], "extra": Payload(marker)}, tmp_path / "mine.pt")
    code, text = cli("run", path, "--device", "cpu")  # a new file: a new key, imported again, and refused
    assert code == 1 and "mine.pt is refused: it is not a weights-only PyTorch file" in text, text
    assert not marker.exists()


def test_weights_that_do_not_fit_name_the_keys(tmp_path):
    from robquant.data import create_dataset
    from robquant.errors import CheckpointError
    from robquant.modelfolder import read_weights
    from robquant.train.stages import _load_foreign, architecture_spec, build_architecture
    from robquant.pipeline.specs import ModelRef

    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="does not hold a state_dict"):
        read_weights(tmp_path / "list.pt")
    torch.save({"fc.weight": torch.zeros(10, 8)}, tmp_path / "partial.pt")
    data = create_dataset("digits", split="test")
    spec = architecture_spec(ModelRef("resnet8", {"width": 8}), data)
    with pytest.raises(CheckpointError, match=r"does not fit resnet8: missing \['conv1.weight'"):
        _load_foreign(str(tmp_path / "partial.pt"), spec, build_architecture(spec, data, torch.device("cpu")))
