import json

import pytest
import torch

from robquant import load_model
from robquant.modelfolder import save_model
from robquant.errors import CheckpointError
from robquant.models import create_model


def test_round_trip_restores_outputs(tmp_path):
    model = create_model("resnet20", 10, 1, width=4, mean=[0.3], std=[0.4]).eval()
    spec = {"name": "resnet20", "num_classes": 10, "in_channels": 1,
            "kwargs": {"width": 4, "mean": [0.3], "std": [0.4]}}
    save_model(tmp_path, model, spec, {"seed": 1})
    loaded = load_model(tmp_path / "model.safetensors")
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert not loaded.training
    assert json.loads((tmp_path / "record.json").read_text())["seed"] == 1


def test_bad_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not a robquant model folder"):
        load_model(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="no record.json"):
        load_model(tmp_path)
    (tmp_path / "record.json").write_text(json.dumps({"model": {"name": "resnet20"}}))
    with pytest.raises(CheckpointError, match="cannot read"):
        load_model(tmp_path)
    model = create_model("resnet20", 10, 3, width=4)
    save_model(tmp_path, model, {"name": "resnet20", "num_classes": 10, "in_channels": 3,
                                 "kwargs": {"width": 8}}, {})
    with pytest.raises(CheckpointError, match="does not match its model spec"):
        load_model(tmp_path)
