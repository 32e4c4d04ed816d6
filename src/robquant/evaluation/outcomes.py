"""Per-example outcomes of an evaluation: the evidence every aggregate in its record is made of.

An evaluation record keeps, beside its accuracies, which test examples were classified correctly
clean and which stayed correct under each (attack, budget). Reports pair a quantized model with its
FP reference example by example, resample examples and seeds, and re-judge a claim without running
an attack again.

Stored as ``outcomes.npz`` beside the record: bit-packed masks (a 10,000-image evaluation with four
attack runs is about 6 KB), the test examples' indices in their split and the sha256 of that split
(two evaluations are paired only on the same data). The file holds arrays and a JSON header only;
it is read with ``allow_pickle=False``, so loading it runs no code.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from robquant.errors import CheckpointError

OUTCOMES = "outcomes.npz"
FORMAT = 1


@dataclass
class Outcomes:
    """Which test examples an evaluation classified correctly, clean and under each attack.

    Attributes:
        indices: ``(n,)`` positions of the evaluated examples in their test split.
        clean: ``(n,)`` bool, correct without attack.
        robust: ``{(attack label, eps label /255): (n_attack,) bool}``: correct clean and under the
            attack; an attack limited to ``n_attack`` examples covers the first ``n_attack`` of
            ``indices``. With ``cascade`` an attack's mask is cumulative (robust under it and
            every earlier attack at that budget).
        dataset_sha256: sha256 of the test split (images and labels) the indices point into.
        cascade: Whether each attack ran only on what the earlier ones left robust.
        split_size: Examples in that split (how many an evaluation could use; 0 if unknown).
    """

    indices: np.ndarray
    clean: np.ndarray
    robust: dict[tuple[str, float], np.ndarray] = field(default_factory=dict)
    dataset_sha256: str = ""
    cascade: bool = False
    split_size: int = 0

    def __post_init__(self) -> None:
        self.indices = np.asarray(self.indices, dtype=np.int64)
        self.clean = np.asarray(self.clean, dtype=bool)
        self.robust = {(str(a), float(e)): np.asarray(m, dtype=bool) for (a, e), m in self.robust.items()}
        if len(self.clean) != len(self.indices):
            raise ValueError(f"{len(self.indices)} indices but {len(self.clean)} clean outcomes")
        for key, mask in self.robust.items():
            if len(mask) > len(self.indices):
                raise ValueError(f"{key}: {len(mask)} outcomes for {len(self.indices)} examples")

    @property
    def n(self) -> int:
        return len(self.indices)

    def budgets(self) -> list[float]:
        """The eps labels (/255) some attack ran at, ascending."""
        return sorted({e for _, e in self.robust})

    def attacks(self, eps: float) -> list[str]:
        """The attacks run at ``eps``, in the order they ran."""
        return [a for a, e in self.robust if e == eps]

    def attack(self, label: str, eps: float) -> np.ndarray | None:
        """``(n_attack,)`` bool: robust under attack ``label`` at ``eps`` (None if it did not run)."""
        return self.robust.get((label, float(eps)))

    def worst(self, eps: float) -> np.ndarray | None:
        """``(n_common,)`` bool: robust under every attack run at ``eps``, over the examples all of
        them covered (the robustness of record). None when no attack ran at ``eps``."""
        masks = [m for (_, e), m in self.robust.items() if e == float(eps)]
        if not masks:
            return None
        common = min(len(m) for m in masks)
        out = np.ones(common, dtype=bool)
        for m in masks:
            out &= m[:common]
        return out

    def summary(self) -> dict[str, Any]:
        """The aggregates these outcomes make: ``{"n", "clean_accuracy", "robust": {(attack, eps):
        (accuracy, n)}, "worst_case": {eps: (accuracy, n)}}`` (accuracy NaN over no examples)."""
        def acc(m: np.ndarray) -> tuple[float, int]:
            return (float(m.mean()) if len(m) else float("nan")), len(m)

        return {"n": self.n, "clean_accuracy": acc(self.clean)[0],
                "robust": {k: acc(m) for k, m in self.robust.items()},
                "worst_case": {e: acc(self.worst(e)) for e in self.budgets()}}

    def save(self, folder: str | os.PathLike, name: str = OUTCOMES) -> dict[str, Any]:
        """Write ``folder/name`` atomically; returns what the record says of the file."""
        path = Path(folder) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        entries = [{"attack": a, "eps_255": e, "n": int(len(m))} for (a, e), m in self.robust.items()]
        header = {"format": FORMAT, "n": self.n, "dataset_sha256": self.dataset_sha256, "cascade": self.cascade,
                  "split_size": self.split_size, "entries": entries}
        arrays = {"header": np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8),
                  "indices": self.indices.astype(np.int32 if self.n and self.indices.max() < 2**31 else np.int64),
                  "clean": np.packbits(self.clean)}
        arrays.update({f"robust_{i}": np.packbits(m) for i, m in enumerate(self.robust.values())})
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
        return {"file": name, "format": FORMAT, "n": self.n, "dataset_sha256": self.dataset_sha256,
                "bytes": path.stat().st_size}

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Outcomes":
        """Read an outcomes file (or the one in a folder) without executing code.

        Raises:
            CheckpointError: if the file is missing or not an outcomes file.
        """
        path = Path(path)
        if path.is_dir():
            path = path / OUTCOMES
        if not path.is_file():
            raise CheckpointError(f"{path}: no per-example outcomes (evaluations record them since robquant "
                                  "0.1.0's evidence format; run the evaluation again)")
        try:
            with np.load(path, allow_pickle=False) as data:
                header = json.loads(bytes(data["header"]).decode())
                n = int(header["n"])
                clean = np.unpackbits(data["clean"], count=n).astype(bool)
                robust = {(e["attack"], float(e["eps_255"])): np.unpackbits(data[f"robust_{i}"], count=e["n"]).astype(bool)
                          for i, e in enumerate(header["entries"])}
                indices = data["indices"].astype(np.int64)
        except (KeyError, ValueError, OSError) as exc:
            raise CheckpointError(f"{path}: not a robquant outcomes file ({exc})") from None
        if header.get("format") != FORMAT:
            raise CheckpointError(f"{path}: outcomes format {header.get('format')}, this robquant reads {FORMAT}")
        return cls(indices, clean, robust, header.get("dataset_sha256", ""), bool(header.get("cascade")),
                   int(header.get("split_size", 0)))


def save_grid(path: str | os.PathLike, correct: np.ndarray, **axes: Any) -> dict[str, Any]:
    """Write per-example outcomes over a grid of conditions (``correct``: bool, one axis per entry of
    ``axes``, in order, then the examples) to ``path`` atomically, bit-packed, with each axis's values;
    returns what the record says of the file (its name, shape and sha256). Read with :func:`load_grid`."""
    path = Path(path)
    correct = np.asarray(correct, dtype=bool)
    if correct.ndim != len(axes) + 1:
        raise ValueError(f"outcomes of shape {correct.shape} need {correct.ndim - 1} axes, got {list(axes)}")
    header = {"axes": {name: list(values) for name, values in axes.items()}, "shape": list(correct.shape)}
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez_compressed(tmp, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
                        correct=np.packbits(correct, axis=-1))
    os.replace(tmp, path)
    return {"file": path.name, "shape": list(correct.shape), "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def load_grid(path: str | os.PathLike) -> tuple[dict[str, list[Any]], np.ndarray]:
    """The axes and outcomes of a file :func:`save_grid` wrote, read without executing code.

    Raises:
        CheckpointError: the file is missing or not such a file.
    """
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            header = json.loads(bytes(data["header"]).decode())
            shape = tuple(header["shape"])
            correct = np.unpackbits(data["correct"], axis=-1, count=shape[-1]).astype(bool).reshape(shape)
            return header["axes"], correct
    except (KeyError, ValueError, OSError) as exc:
        raise CheckpointError(f"{path}: not a robquant per-example outcomes file ({exc})") from None


def from_masks(clean: Any, robust: Mapping[tuple[str, float], Any], labels: Mapping[float, float] | None = None,
               *, dataset_sha256: str = "", cascade: bool = False, indices: Any = None, split_size: int = 0) -> Outcomes:
    """Outcomes from an evaluation's masks (tensors or arrays), its budgets ``eps`` renamed by
    ``labels`` (``{eps in [0, 1]: label /255}``; default ``eps * 255`` rounded)."""
    def as_array(m: Any) -> np.ndarray:
        return m.detach().cpu().numpy() if hasattr(m, "detach") else np.asarray(m)

    clean = as_array(clean).astype(bool)
    def label(e: float) -> float:
        return float(labels[e]) if labels and e in labels else round(e * 255, 6)

    robust_ = {(a, label(e)): as_array(m).astype(bool) for (a, e), m in robust.items()}
    idx = np.arange(len(clean)) if indices is None else np.asarray(indices)
    return Outcomes(idx, clean, robust_, dataset_sha256, cascade, split_size)
