"""The model zoo: trained models shipped with robquant, and your own zoo folders, loaded by name.

``zoo:NAME`` works wherever a model folder does: :func:`robquant.load_model`, a study's
``fp: {robust: {checkpoint: zoo:NAME}}``, and every CLI command that takes a model
(``robquant attack zoo:NAME``). ``robquant zoo`` lists the models with their numbers.

A zoo folder holds ``index.json`` and one model folder per entry (``model.safetensors``,
``record.json``, ``card.md``, ``curve.png``). The index keeps every file's sha256 and every load
checks the weights and the record against it, so a changed or corrupted file is refused by name.
The models shipped with robquant live in the package (``robquant/zoo/models``); folders named in
the environment variable ``ROBQUANT_ZOO`` (separated by ``os.pathsep``) are searched too, and
:func:`add` (``robquant zoo add``) puts a model folder into one.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robquant.errors import CheckpointError, ConfigError, UnknownNameError
from robquant.modelfolder import RECORD, WEIGHTS, read_record, weights_sha256, write_json

PREFIX = "zoo:"
INDEX = "index.json"
ENV = "ROBQUANT_ZOO"
ZOO_VERSION = 1
PACKAGED = Path(__file__).resolve().parent / "models"
LOADED = (WEIGHTS, RECORD)  # the files a load reads: checked on every load
CARD, CURVE = "card.md", "curve.png"


@dataclass(frozen=True)
class ZooEntry:
    """One zoo model.

    Attributes:
        name: What ``zoo:NAME`` names.
        folder: Its model folder.
        files: ``{file name: sha256}`` as the index records them.
        info: The index's summary: ``dataset``, ``model``, ``init``, ``metrics`` (clean, PGD-20,
            AutoAttack accuracies and the examples each was measured on), ``recipe``, ``command``.
        zoo: The zoo folder it belongs to.
    """

    name: str
    folder: Path
    files: dict[str, str]
    info: dict[str, Any] = field(default_factory=dict)
    zoo: Path = PACKAGED

    @property
    def shipped(self) -> bool:
        """Shipped with robquant (rather than from a user's zoo folder)."""
        return self.zoo == PACKAGED

    def verify(self, names: tuple[str, ...] = LOADED) -> Path:
        """Check the files ``names`` against the index; return the model folder.

        Raises:
            CheckpointError: naming the model and the file that is missing or changed.
        """
        for name in names:
            path = self.folder / name
            if name not in self.files:
                raise CheckpointError(f"zoo model {self.name!r}: {INDEX} in {self.zoo} records no sha256 for {name}")
            if not path.is_file():
                raise CheckpointError(f"zoo model {self.name!r}: {path} is missing")
            digest = weights_sha256(path)
            if digest != self.files[name]:
                raise CheckpointError(f"zoo model {self.name!r}: {path} has sha256 {digest[:16]}..., not the "
                                      f"{self.files[name][:16]}... its zoo index records: the file was changed "
                                      f"or corrupted; reinstall it (robquant zoo add, or reinstall robquant)")
        return self.folder


def is_reference(ref: object) -> bool:
    """Whether ``ref`` names a zoo model (``zoo:NAME``)."""
    return isinstance(ref, str) and ref.startswith(PREFIX)


def zoo_folders() -> list[Path]:
    """The zoo folders searched: the packaged one, then those in ``ROBQUANT_ZOO``."""
    extra = [Path(p).expanduser() for p in os.environ.get(ENV, "").split(os.pathsep) if p]
    return [PACKAGED, *extra]


def read_index(zoo: Path) -> dict[str, ZooEntry]:
    """The entries of one zoo folder (none if it has no index yet).

    Raises:
        ConfigError: if the index is not valid JSON or not of this form.
    """
    path = zoo / INDEX
    if not path.is_file():
        return {}
    try:
        index = json.loads(path.read_text())
        models = index["models"]
        return {name: ZooEntry(name, zoo / e["folder"], dict(e["files"]), dict(e.get("info", {})), zoo)
                for name, e in models.items()}
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path} is not a robquant zoo index ({type(exc).__name__}: {exc})") from None


def entries() -> dict[str, ZooEntry]:
    """Every zoo model, by name, from every zoo folder.

    Raises:
        ConfigError: if two zoo folders hold a model of the same name.
    """
    found: dict[str, ZooEntry] = {}
    for zoo in zoo_folders():
        for name, entry in read_index(zoo).items():
            if name in found:
                raise ConfigError(f"zoo model {name!r} is in two zoo folders, {found[name].zoo} and {zoo}: "
                                  f"rename one (robquant zoo add --name)")
            found[name] = entry
    return found


def get(ref: str) -> ZooEntry:
    """The entry ``zoo:NAME`` (or ``NAME``) names.

    Raises:
        UnknownNameError: naming the known models.
    """
    name = ref[len(PREFIX):] if is_reference(ref) else ref
    known = entries()
    if name not in known:
        raise UnknownNameError(f"unknown zoo model {name!r}; known: {', '.join(sorted(known)) or 'none'} "
                               f"(robquant zoo lists them; {ENV} adds your own zoo folders)")
    return known[name]


def resolve(ref: str) -> Path:
    """The model folder of ``zoo:NAME``, its weights and record checked against the zoo index.

    Raises:
        UnknownNameError: for an unknown name.
        CheckpointError: for a missing or changed file.
    """
    return get(ref).verify()


def resolve_path(path: str | os.PathLike) -> Path:
    """``path`` as a model folder or file: a zoo reference resolved (and checked), anything else as it is."""
    return resolve(str(path)) if is_reference(str(path)) else Path(path)


def add(model: str | os.PathLike, name: str, zoo: str | os.PathLike, *, info: dict[str, Any] | None = None,
        card: str | None = None, curve: bool = True) -> ZooEntry:
    """Put a model folder into zoo folder ``zoo`` as ``name`` (replacing an entry of that name).

    Copies the weights and the record, writes ``card.md`` (``card``) and the training curve
    (``curve.png``, from the record's per-epoch history), and records every file's sha256 in the
    zoo's index, written last and atomically: a zoo never indexes a half-written model.

    Raises:
        ConfigError: for a name that is not a plain file name.
        CheckpointError: if ``model`` is not a model folder.
    """
    if not name or name != Path(name).name or name.startswith(".") or ":" in name:
        raise ConfigError(f"zoo model name must be a plain file name without ':', got {name!r}")
    src, record = read_record(model)
    zoo = Path(zoo)
    dest = zoo / name
    tmp = zoo / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in LOADED:
        shutil.copyfile(src / f, tmp / f)
    if card is not None:
        (tmp / CARD).write_text(card)
    if curve and (record.get("train") or {}).get("history"):
        from robquant.zoo.card import plot_curve

        plot_curve(record, tmp / CURVE, title=name)
    files = {p.name: weights_sha256(p) for p in sorted(tmp.iterdir())}
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    index_path = zoo / INDEX
    index = json.loads(index_path.read_text()) if index_path.is_file() else {"zoo_version": ZOO_VERSION, "models": {}}
    index["models"][name] = {"folder": name, "files": files, "info": info or {}}
    write_json(index_path, index)
    return read_index(zoo)[name]
