"""Saved models: safetensors weights beside a JSON record that says how to rebuild them.

A model folder holds ``model.safetensors`` (tensors only: loading executes no code) and
``record.json`` (the model spec, config, seed, metrics, versions, timings). Both are written to
temporary names first and moved into place, so a folder never holds half a model.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from robquant.errors import CheckpointError

WEIGHTS = "model.safetensors"
RECORD = "record.json"
RECORD_VERSION = 1


@dataclass(frozen=True)
class ModelMetrics:
    """A model folder's numbers of record (its record's ``metrics``), written by the stages that make a
    model and read by the CLI, the report and the zoo.

    Attributes:
        clean_accuracy: Clean accuracy on the ``n_test`` test examples it was evaluated on.
        n_test: How many.
        final_train_loss: The last epoch's training loss (None: not trained here).
    """

    clean_accuracy: float
    n_test: int
    final_train_loss: float | None = None

    @classmethod
    def read(cls, record: dict[str, Any]) -> "ModelMetrics":
        """From a model record (its ``metrics``)."""
        metrics = record.get("metrics") or {}
        return cls(**{f.name: metrics.get(f.name) for f in fields(cls)})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (tuple, set)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def save_model(folder: str | os.PathLike, model: nn.Module, spec: dict[str, Any],
               record: dict[str, Any]) -> Path:
    """Save ``model``'s weights and its record into ``folder``.

    Args:
        folder: Output folder (created if needed).
        model: The model.
        spec: How to rebuild it: ``{"name", "num_classes", "in_channels", "kwargs"}`` for
            :func:`robquant.models.create_model`.
        record: Everything else worth keeping (config, seed, metrics, versions, timings).

    Returns:
        The folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = folder / (WEIGHTS + ".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, folder / WEIGHTS)
    write_json(folder / RECORD, {"record_version": RECORD_VERSION, **record, "model": spec})
    return folder


def read_record(path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """Return ``(folder, record)`` for a model folder or its weights file.

    Raises:
        CheckpointError: if the folder, the weights or the record are missing or malformed.
    """
    path = Path(path).expanduser()
    folder = path.parent if path.is_file() else path
    if not (folder / WEIGHTS).is_file():
        raise CheckpointError(f"no {WEIGHTS} in {str(folder)!r}: not a robquant model folder")
    try:
        record = json.loads((folder / RECORD).read_text())
    except FileNotFoundError:
        raise CheckpointError(f"no {RECORD} beside {folder / WEIGHTS}") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{folder / RECORD} is not valid JSON: {exc}") from None
    if not isinstance(record.get("model"), dict) or "name" not in record["model"]:
        raise CheckpointError(f"{folder / RECORD} has no model spec")
    return folder, record


def record_dataset(record: dict[str, Any]) -> str | None:
    """The data set a model folder's record was made on (None if it names none)."""
    config = record.get("config") or {}
    return (config.get("data") or {}).get("name") or config.get("dataset")


def build_model(spec: dict[str, Any]) -> nn.Module:
    """Rebuild an untrained model from its spec (with its quantized structure if it has ``quant``)."""
    from robquant.models import create_model
    from robquant.quant import prepare_structure, quant_config_from_dict

    options = dict(spec.get("kwargs") or {})
    data = {"num_classes": spec.get("num_classes") or 10, "in_channels": spec.get("in_channels") or 3}
    data.update((k, options.pop(k)) for k in list(data) if k in options)  # the user's own option wins
    model = create_model(spec["name"], data["num_classes"], data["in_channels"], **options)
    if spec.get("quant"):
        # records written before PWLQ's activation placement became PTQ's default used ReLU sites
        quant = {"act_placement": "relu", **spec["quant"]}
        model = prepare_structure(model, quant_config_from_dict(quant))
    return model


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> nn.Module:
    """Load a model folder written by :func:`save_model`, in eval mode on ``device``.

    Raises:
        CheckpointError: if the files are missing, malformed, or do not match the spec.
    """
    folder, record = read_record(path)
    model = build_model(record["model"])
    try:
        state = load_file(str(folder / WEIGHTS))
    except Exception as exc:
        raise CheckpointError(f"cannot read {folder / WEIGHTS}: {exc}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{folder / WEIGHTS} does not match its model spec: {exc}") from None
    return model.to(device).eval()


def weights_sha256(path: str | os.PathLike) -> str:
    """sha256 of a weights file (of ``model.safetensors`` in a model folder)."""
    import hashlib

    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file, a robquant model folder, or a file written by
    ``torch.save(model.state_dict())``, read weights-only: no code is executed, and a file holding
    anything but tensors (a pickled object) is refused. A dict under ``state_dict`` or ``model``
    (a training checkpoint) is taken, and a ``module.`` prefix (DataParallel) dropped.

    Raises:
        CheckpointError: naming the file and why it is refused.
    """
    path = Path(path)
    if path.is_dir():
        path = path / WEIGHTS
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as exc:
            raise CheckpointError(f"cannot read {path} as safetensors: {exc}") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the weights-only unpickler refuses anything that is not tensors and containers
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is refused: it is not a weights-only PyTorch file (a pickled object would run "
                              f"code when loaded); save model.state_dict() or use safetensors ({first})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state_dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}
