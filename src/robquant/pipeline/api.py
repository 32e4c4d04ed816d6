"""The library's one facade, what the CLI sits on: train, quantize, attack, export one model and attack a
deployed file, each the stage spec a study would build, run by the executor into a store (the CLI's
``train``, ``quantize``, ``attack``, ``export`` and ``attack model.onnx``).

Each call builds one typed spec (:mod:`robquant.pipeline.specs`) and runs it through the executor
core and the stage handlers (:data:`robquant.pipeline.executor.HANDLERS`), as a study's stage runs: the
result is a committed stage of a store, keyed by its spec, resumable (a killed training continues
from its epoch checkpoint; a finished one is found, not redone), and shared with any study or
command that asks for the same work. ``out`` names it: a link to the stage's folder, which holds the
model (``model.safetensors``, ``record.json``) or the evaluation (``outcomes.npz``) and
``stage.json``, the full record. The store is ``store`` when given, else the store of the model a
command starts from, else a folder ``store`` beside ``out``.

Budgets are in /255 units here, as on the command line and in a study; :class:`~robquant.pipeline.specs.Budget`
keeps that label beside the [0, 1] value down to the record.
"""

from __future__ import annotations

import json
import inspect
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from robquant.evaluation.addons import BitFlipRun, DiagnoseRun
from robquant.evaluation.evaluate import attack_runs
from robquant.data import ImageDataset, create_dataset, to_unit
from robquant.defaults import ATTACK_STEPS, BITFLIP_REPEATS, CHECK_EXAMPLES, CHECK_SQUARE_QUERIES, CHECK_TOL, RESTARTS
from robquant.deploy import OPSET, OPSETS, RUNTIMES, load_runtime
from robquant.deploy.stage import FILE, SOURCE_KEY, DeployedRun, export_metadata, file_opset, runtime_agreement
from robquant.errors import CheckpointError, ConfigError
from robquant.modelfolder import RECORD, read_record, read_weights, record_dataset, weights_sha256
from robquant.models import external
from robquant.pipeline.executor import StageContext, execute_stage
from robquant.pipeline.plan import Stage
from robquant.pipeline.specs import (AttackRun, Budget, DataRef, Evaluate, EvaluateDeployed, Export, ImportFP,
                                     ModelRef, ObjectiveRef, Quantize, StageSpec, TrainFP, spec_key)
from robquant.pipeline.store import Store
from robquant.pipeline.study import QAT_STRATEGIES
from robquant.progress import NULL_PROGRESS, Progress
from robquant.provenance import StageInfo
from robquant.quant import AnyQuantConfig
from robquant.quant.coverage import check_coverage
from robquant.train import QAT_FINETUNE, TrainConfig
import robquant.zoo as zoo

STORE = "store"  # the default store's folder name, beside ``out``
ZOO_STORE = Path("runs") / STORE  # where a zoo model is imported when no store is given (never into the package)
INIT_OF_OBJECTIVE = {"clean": "non_robust", "pgd_at": "robust"}  # a study's FP inits and their objectives
STRATEGY_OF_OBJECTIVE = {objective: strategy for strategy, objective in QAT_STRATEGIES.items()}  # the inverse


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cpu``/``cuda``/``cuda:N`` as given.

    Raises:
        ConfigError: for an unknown device or CUDA requested without a GPU.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu" or device.startswith("cuda"):
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: no CUDA device is available (allowed: auto, cpu)")
        try:
            return torch.device(device)
        except RuntimeError:
            pass
    raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {device!r}")


def check_user_model(name: str, options: dict[str, Any], dataset: ImageDataset,
                     quant_configs: Sequence[AnyQuantConfig] = ()) -> None:
    """Before any work: a user's own model (``package.module:factory``) builds, takes the data's
    images, gives its classes, and can be quantized the ways a study asks (see
    :mod:`robquant.quant.coverage`). Registered models pass at once.

    Raises:
        ConfigError: one message naming what is wrong.
    """
    if not external.is_reference(name):
        return
    net = external.build(name, options, num_classes=dataset.num_classes, in_channels=dataset.in_channels)
    external.check_shape(net, name, dataset.in_channels, dataset.image_size, dataset.num_classes)
    check_coverage(net, list(quant_configs), to_unit(dataset.images[:2]))


def run_spec(spec: StageSpec, store: Store, ctx: StageContext) -> tuple[Path, dict[str, Any]]:
    """Run ``spec`` through the executor core into ``store`` unless it is committed there already;
    return its folder and its record. A failure raises the stage's own error (kept in the store)."""
    key = spec_key(spec)
    if key not in store.finished([key]):
        execute_stage(Stage(spec, key), ctx, raise_errors=True)
    folder = store.artifact_dir(key)
    return folder, json.loads((folder / "stage.json").read_text())


def link(out: str | os.PathLike, folder: Path) -> Path:
    """Make ``out`` a (relative) link to the stage ``folder``, replacing an earlier link."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.link")
    if tmp.is_symlink():
        tmp.unlink()
    tmp.symlink_to(os.path.relpath(folder.resolve(), out.parent.resolve()), target_is_directory=True)
    os.replace(tmp, out)
    return out


def check_out(out: str | os.PathLike | None) -> None:
    """Before any work: ``out`` can become a link (it does not exist, is a link, or is an empty folder).

    Raises:
        ConfigError: naming ``out`` when it holds something else.
    """
    if out is None:
        return
    path = Path(out)
    if path.is_symlink() or not path.exists():
        return
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()
        return
    raise ConfigError(f"--out {path} exists and is not a link to a robquant result: name another (it becomes a "
                      "link to the result's folder in the store)")


def open_store(store: str | os.PathLike | None, out: str | os.PathLike | None) -> Store:
    """The store given, else ``store`` beside ``out`` (a command starting from a model uses that
    model's store: :func:`_parent`)."""
    if store is not None:
        return Store(store)
    if out is None:
        raise ConfigError("give --store (the store to keep the result in) or --out")
    return Store(Path(out).parent / STORE)


def locate(path: str | os.PathLike) -> tuple[Store, str] | None:
    """The store and key of a committed stage's folder (or a link to one), None for a folder elsewhere."""
    folder = Path(path).resolve()
    if folder.is_file():
        folder = folder.parent
    root = folder.parent.parent
    if folder.parent.name != "stages" or not (root / "index.sqlite").is_file():
        return None
    store = Store(root)
    return (store, folder.name) if folder.name in store.finished([folder.name]) else None


def _data(name: str, data_root: str | None, n_test: int | None, allow_unverified: bool,
          download: bool = False) -> tuple[DataRef, ImageDataset]:
    """The data reference and its test split, loaded now: a bad name or root fails before any work."""
    ref = DataRef(name, n_test, data_root, allow_unverified)
    test = create_dataset(name, data_root, "test", download=download, allow_unverified=allow_unverified)
    if download:
        create_dataset(name, data_root, "train", download=True, allow_unverified=allow_unverified)
    return ref, test


def _data_in(ctx: StageContext, name: str, data_root: str | None, n_test: int | None,
             allow_unverified: bool) -> DataRef:
    """:func:`_data`, its test split kept in ``ctx`` for the stage."""
    ref, test = _data(name, data_root, n_test, allow_unverified)
    ctx.keep(ref, "test", test)
    return ref


def _model_ref(name: str, options: dict[str, Any]) -> ModelRef:
    """A study's model reference: a user's own with the hash of its source file."""
    if external.is_reference(name):
        external.resolve(name)
        return ModelRef(name, dict(options), external.source_hash(name)["sha256"])
    from robquant.models import MODELS

    MODELS.get(name)
    return ModelRef(name, dict(options))


def _objective(name: str, kwargs: dict[str, Any] | None) -> ObjectiveRef:
    from robquant.train.objectives import OBJECTIVES

    OBJECTIVES.get(name)
    return ObjectiveRef(name, dict(kwargs or {}))


def train_model(*, dataset: str, model: str, objective: str, train: TrainConfig, out: str | os.PathLike,
                fraction: float = 1.0, data_root: str | None = None, device: str | torch.device = "cpu",
                model_kwargs: dict[str, Any] | None = None, objective_kwargs: dict[str, Any] | None = None,
                allow_unverified: bool = False, download: bool = False, n_test: int | None = None,
                store: str | os.PathLike | None = None, progress: Progress = NULL_PROGRESS) -> dict[str, Any]:
    """Train a model from seeded random parameters, as a study's ``train_fp`` stage (``init``
    ``non_robust`` for the clean objective, ``robust`` for ``pgd_at``), and link ``out`` to it.

    The record holds the config (the stage's spec), seed, data provenance (verified or not),
    training history, clean test accuracy, status ("done" or "NC"), size, versions and timings.

    Returns:
        The record.
    """
    check_out(out)
    obj, ref = _objective(objective, objective_kwargs), _model_ref(model, model_kwargs or {})
    data, test = _data(dataset, data_root, n_test, allow_unverified, download)
    check_user_model(ref.name, dict(ref.kwargs), test)  # a factory that cannot build is refused before any store
    st = open_store(store, out)  # after every check: a refused command leaves no store behind
    ctx = StageContext(st, resolve_device(device), progress)
    ctx.keep(data, "test", test)
    spec = TrainFP(data, ref, INIT_OF_OBJECTIVE.get(objective, objective), obj, fraction, train,
                   label=f"train {Path(out).name}")
    folder, record = run_spec(spec, st, ctx)
    link(out, folder)
    return record


def _contexts(device: torch.device, progress: Progress) -> Callable[[Store], StageContext]:
    """``ctx_for(store)``: one stage context per store (data and parent models loaded once)."""
    contexts: dict[Path, StageContext] = {}

    def ctx_for(st: Store) -> StageContext:
        return contexts.setdefault(st.root, StageContext(st, device, progress))

    return ctx_for


def check_model_files(checkpoint: str | os.PathLike) -> None:
    """Before any store folder exists: a zoo model's files against its index, and a model folder
    from elsewhere read (its record, and its weights without executing code).

    Raises:
        CheckpointError: naming the file that is missing, changed, corrupt or not weights-only.
    """
    path = zoo.resolve_path(checkpoint)
    if locate(path) is None:
        read_record(path)
        read_weights(path)


def _parent(checkpoint: str | os.PathLike, store: Store | None, ctx_for: Callable[[Store], StageContext],
            data_root: str | None = None, allow_unverified: bool = False) -> tuple[Store, str, dict[str, Any]]:
    """The store, key and keyed config of the model stage ``checkpoint`` names; a model folder from
    elsewhere is first imported into the store (keyed by its weights; its data read from ``data_root``). A zoo
    model (``zoo:NAME``, its files checked) is imported like one, into ``runs/store`` when no store is given."""
    from_zoo = zoo.is_reference(str(checkpoint))
    checkpoint = zoo.resolve_path(checkpoint)
    found = locate(checkpoint)
    if found is not None and (store is None or found[0].root.resolve() == store.root.resolve()):
        st, key = found
        return st, key, st.get(key)["config"]
    folder, record = read_record(checkpoint)
    name = record_dataset(record)
    if name is None:
        raise ConfigError(f"{folder / RECORD} names no data set")
    st = store if store is not None else (found[0] if found else Store(ZOO_STORE if from_zoo else folder.parent / STORE))
    ctx = ctx_for(st)
    model = record["model"]
    kwargs = {k: v for k, v in (model.get("kwargs") or {}).items() if k not in ("mean", "std")}
    spec = ImportFP(_data_in(ctx, name, data_root, None, allow_unverified), ModelRef(model["name"], kwargs), "imported",
                    weights_sha256(folder), str(folder.resolve()), label=f"import {folder.name}")
    run_spec(spec, st, ctx)
    key = spec_key(spec)
    return st, key, st.get(key)["config"]


def quantize_model(checkpoint: str | os.PathLike, *, quant: AnyQuantConfig, out: str | os.PathLike,
                   fraction: float = 1.0, seed: int = 0, train: TrainConfig | None = None,
                   objective: str = "clean", objective_kwargs: dict[str, Any] | None = None,
                   reinit: bool = False, teacher: str | os.PathLike | None = None,
                   data_root: str | None = None, allow_unverified: bool = False,
                   device: str | torch.device = "cpu", n_test: int | None = None,
                   store: str | os.PathLike | None = None, progress: Progress = NULL_PROGRESS) -> dict[str, Any]:
    """Quantize a saved full-precision model by PTQ, or fine-tune it by QAT, as a study's
    ``quantize`` stage, and link ``out`` to the result.

    PTQ calibrates activations on ``quant.calib_images`` training images drawn (seeded) from the
    class-stratified ``fraction``. QAT trains with ``objective`` on that fraction with ``train``
    (default: :data:`~robquant.train.QAT_FINETUNE`, seeded with ``seed``). ``reinit=True`` starts
    from random parameters (QAT), keeping the checkpoint's architecture and data set. ``teacher``
    is the robust model folder the ``transfer`` (RRM) objective matches.

    Returns:
        The record (with the quantization config, model size and the parent's key).
    """
    check_out(out)
    if reinit and quant.method != "qat":
        raise ConfigError("--reinit needs --method qat (PTQ of random parameters is meaningless)")
    check_model_files(checkpoint)
    dev = resolve_device(device)
    given = Store(store) if store is not None else None
    ctx_for = _contexts(dev, progress)

    st, parent, config = _parent(checkpoint, given, ctx_for, data_root, allow_unverified)
    ctx = ctx_for(st)
    data = _data_in(ctx, config["data"]["name"], data_root, n_test, allow_unverified)
    model = ModelRef(**config["model"])
    if model.source is None and external.is_reference(model.name):
        raise CheckpointError(f"{checkpoint} holds a user's model imported without its source hash: train it again")
    obj = train_cfg = None
    teacher_key = None
    if quant.method == "qat":
        train_cfg = train or replace(QAT_FINETUNE, seed=seed)
        obj = _objective(objective, objective_kwargs)
        if objective == "transfer":
            if teacher is None:
                raise ConfigError("objective transfer needs a teacher (the robust full-precision model)")
            teacher_key = _parent(teacher, st, ctx_for, data_root, allow_unverified)[1]
    spec = Quantize(data, model, "random" if reinit else config.get("init", "imported"), quant.method,
                    quant.precision, fraction, seed, quant,
                    strategy=STRATEGY_OF_OBJECTIVE.get(objective, objective) if quant.method == "qat" else None,
                    train=train_cfg, objective=obj, checkpoint=None if reinit else parent, teacher=teacher_key,
                    label=f"{quant.method} {quant.precision} {Path(out).name}")
    folder, record = run_spec(spec, st, ctx)
    link(out, folder)
    return record


def _diagnose_run(options: dict[str, Any], budgets: tuple[Budget, ...]) -> tuple[Budget, DiagnoseRun]:
    """The trust checks' run from the options given (:meth:`DiagnoseRun.at`'s defaults for the rest) and
    the budget they judge, which becomes the budget of record.

    Raises:
        ConfigError: a budget not among the evaluation's, an option the checks do not take.
    """
    at = options.get("eps", budgets[-1].label)
    main = next((b for b in budgets if b.label == at), None)
    if main is None:
        raise ConfigError(f"--diagnose-eps must be one of --eps ({', '.join(f'{b.label:g}' for b in budgets)}), "
                          f"got {at:g}")
    # the constructor's own keywords (collapse_eps given in /255 as the study writes it)
    known = tuple("collapse_eps" if k == "collapse_eps_255" else k
                  for k in inspect.signature(DiagnoseRun.at).parameters if k != "eps_255")
    unknown = sorted(set(options) - {"eps", *known})
    if unknown:
        raise ConfigError(f"diagnose takes no option {', '.join(unknown)}; it takes: eps, {', '.join(known)}")
    given = {("collapse_eps_255" if k == "collapse_eps" else k): v for k, v in options.items() if k != "eps"}
    return main, DiagnoseRun.at(main.label, **given)


def _bitflip_run(options: dict[str, Any], n_test: int | None, checkpoint: str | os.PathLike) -> BitFlipRun:
    """The bit-flip attack's run from the options given (:meth:`BitFlipRun.of`'s defaults for the rest),
    for a model that stores quantized weights.

    Raises:
        ConfigError: a full-precision model, an unknown method, a bad number, an option it does not take.
    """
    from robquant.quant.precision import parse_precision

    quant = (read_record(zoo.resolve_path(checkpoint))[1].get("model") or {}).get("quant") or {}
    if parse_precision(quant.get("precision", "A32W32")).weight_bits >= 32:
        raise ConfigError(f"--attack bitflip flips bits of stored integer weights: {checkpoint} stores its weights in "
                          "full precision (quantize it first)")
    known = tuple(inspect.signature(BitFlipRun.of).parameters)  # the constructor's own
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"bitflip takes no option {', '.join(unknown)}; it takes: {', '.join(known)}")
    given = {k: v for k, v in options.items() if k not in ("n", "seeds")}
    return BitFlipRun.of(options.get("n") or n_test or CHECK_EXAMPLES,
                         options.get("seeds", range(BITFLIP_REPEATS)), **given)


def chosen_attacks(names: Sequence[str], options: dict[str, Any], extra: dict[str, Any] | None = None,
                   field: str = "attack option") -> list[tuple[str, dict[str, Any]]]:
    """Each named attack with the options it declares, picked from one set offered to all (the command
    line's): ``options`` the common ones (None: not given), ``extra`` options named by the user, each of
    which at least one of the attacks must declare (``field`` names them in the message).

    Raises:
        ConfigError: an unknown attack, an extra option no attack declares, a value an attack's declaration
            does not allow.
    """
    from robquant.attacks import ATTACKS

    extra = extra or {}
    declared = {o for name in names for o in ATTACKS.get(name).OPTIONS}
    if set(extra) - declared:
        raise ConfigError(f"{field} {', '.join(sorted(set(extra) - declared))}: no attack of --attack "
                          f"{','.join(names)!r} declares it; they declare: {', '.join(sorted(declared)) or 'none'}")
    return [(name, ATTACKS.get(name).select_options(options | extra)) for name in names]


def attack_model(checkpoint: str | os.PathLike, *,
                 attacks: Sequence[AttackRun | str | tuple[str, dict[str, Any]]],
                 eps: Sequence[float], n_test: int | None = None, dataset: str | None = None,
                 data_root: str | None = None, allow_unverified: bool = False,
                 device: str | torch.device = "cpu", batch_size: int = 256, seed: int = 0,
                 out: str | os.PathLike | None = None, surrogate: str | os.PathLike | None = None,
                 cascade: bool = False, diagnose: dict[str, Any] | None = None, store: str | os.PathLike | None = None,
                 bitflip: dict[str, Any] | None = None, add_ons: Sequence[Any] = (),
                 progress: Progress = NULL_PROGRESS) -> dict[str, Any]:
    """Evaluate a saved model's clean and robust accuracy, as a study's ``evaluate`` stage.

    Args:
        checkpoint: Model folder (a stage of a store, a link to one, or a folder from elsewhere, imported first).
        attacks: Typed runs (:class:`~robquant.evaluation.AttackRun`), attack names or ``(name,
            options)`` pairs ([0, 1] units; the option ``label`` names the results). A ``transfer``
            attack crafts on ``surrogate``.
        eps: Budgets in /255 units.
        n_test: Evaluate the first ``n_test`` test examples.
        dataset: Test data set; defaults to the one the model was trained on.
        out: A link to the evaluation's folder (optional: the record is the stage's ``stage.json``).
        surrogate: Model folder for transfer attacks and the trust checks (by default the
            checkpoint's full-precision parent, when it has one).
        cascade: Run each attack only on what the earlier ones left robust (see
            :func:`~robquant.evaluation.evaluate`).
        diagnose: Run :func:`~robquant.evaluation.diagnose` with these options (``eps`` /255, one of
            ``eps``, default the largest; ``n``, ``steps``, ``restarts``, ``square_queries``,
            ``autoattack``) and record its checks under ``diagnostics``; the budget of record is its ``eps``.
        bitflip: Also flip bits of the stored weights (:mod:`robquant.attacks.bitflip`) with these options
            (``n``, default ``n_test`` or 200; ``seeds``, default 0, 1, 2; ``methods``, ``attack_batch``,
            ``search_cap``, ``random_cap``) and record the flips to break it under ``bitflip``.
        add_ons: More evaluation add-ons' runs (:mod:`robquant.evaluation.addons`; a plug-in's, registered
            with :func:`~robquant.evaluation.addons.register_add_on`), each keyed under its ``FIELD`` and its
            result recorded under its ``RECORD_KEY``.

    Returns:
        The record (``path``: its folder).
    """
    check_out(out)
    check_model_files(checkpoint)
    dev = resolve_device(device)
    flips = None if bitflip is None else _bitflip_run(bitflip, n_test, checkpoint)
    given = Store(store) if store is not None else None
    ctx_for = _contexts(dev, progress)

    st, key, config = _parent(checkpoint, given, ctx_for, data_root, allow_unverified)
    ctx = ctx_for(st)
    data = _data_in(ctx, dataset or config["data"]["name"], data_root, n_test, allow_unverified)
    if flips is not None:  # the attack batch from outside the judged examples, before any work
        from robquant.attacks.bitflip import check_attack_pool

        check_attack_pool(flips.n, flips.attack_batch, len(ctx.dataset(data, "test")))
    budgets = tuple(Budget.of(e) for e in sorted(set(eps)))
    runs = tuple(attack_runs(attacks, budgets))  # typed, labels distinct, before any work
    if surrogate is not None:
        surrogate_key = _parent(surrogate, st, ctx_for, data_root, allow_unverified)[1]
    else:  # the full-precision parent the model was quantized from
        made = StageInfo.read((st.get(key) or {}).get("record"))
        surrogate_key = made.parents.get("checkpoint") if made else None
    if surrogate_key is None and any(r.needs_surrogate for r in runs):
        raise ConfigError("a transfer attack needs a surrogate: the model records no full-precision parent "
                          "(pass --surrogate)")
    main, check = (budgets[-1], None) if diagnose is None else _diagnose_run(diagnose, budgets)
    spec = Evaluate(data, key, runs, budgets, main, seed, batch_size, cascade, (check, flips, *add_ons),
                    surrogate_key if (check is not None or any(r.needs_surrogate for r in runs)) else None,
                    architecture=ModelRef(**config["model"]), label=f"evaluate {Path(checkpoint).name}")
    folder, record = run_spec(spec, st, ctx)
    if out is not None:
        link(out, folder)
    return {**record, "path": str(folder)}


FORMATS = ("onnx",)


def export_model(checkpoint: str | os.PathLike, out: str | os.PathLike, *, format: str = "onnx",
                 opset: int = OPSET, data_root: str | None = None, allow_unverified: bool = False,
                 check_n: int = 256, store: str | os.PathLike | None = None,
                 progress: Progress = NULL_PROGRESS) -> dict[str, Any]:
    """Export a saved model (quantized or not) as an ONNX QDQ model (see :mod:`robquant.deploy.export`),
    as an ``export`` stage of the model's store (or ``store``); ``out`` becomes a link to the file.

    The file records where it came from (metadata ``robquant.source``: the model folder), so that
    ``robquant attack model.onnx`` finds the fake-quantized model to compare with. With onnxruntime
    installed, the export is run on the first ``check_n`` test images and its top-1 agreement with
    the model is recorded (0 skips it).

    Returns:
        ``{"path" (the file in the store), "opset", "seconds", "bytes", "layers", "activations", "checked",
        "agreement", "n", "agreement_unfused", "record"}`` (the unfused agreement measured only below
        99 % agreement: the runtime with its QDQ fusion off).
    """
    if format not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    if opset not in OPSETS:
        raise ConfigError(f"opset must be one of {', '.join(map(str, OPSETS))}, got {opset}")
    check_out(out)
    check_model_files(checkpoint)  # before any store folder exists
    ctx_for = _contexts(torch.device("cpu"), progress)
    st, key, config = _parent(checkpoint, Store(store) if store is not None else None, ctx_for, data_root,
                              allow_unverified)
    ctx = ctx_for(st)
    data = _data_in(ctx, config["data"]["name"], data_root, None, allow_unverified)
    spec = Export(data, key, format, opset, check_n, architecture=ModelRef(**config["model"]),
                  label=f"export {Path(out).name}")
    folder, record = run_spec(spec, st, ctx)
    link(out, folder / FILE)
    return {**record["export"], **record["check"], "path": str(folder / FILE), "record": str(folder / "stage.json")}


def _reference(path: Path, model: Any, reference: str | os.PathLike | None) -> str | os.PathLike:
    """The model folder a deployed file was exported from: ``reference``, else the one its metadata
    names (the stage of the file's own store when it was exported into one)."""
    if reference is not None:
        return reference
    meta = model.metadata
    found = locate(path.resolve())
    if found is not None and meta.get("robquant.stage") in found[0].finished([meta.get("robquant.stage", "")]):
        return found[0].artifact_dir(meta["robquant.stage"])
    if SOURCE_KEY not in meta:
        raise ConfigError(f"{path} records no source model folder: pass --reference (the model folder it was "
                          "exported from)")
    if not (Path(meta[SOURCE_KEY]) / RECORD).is_file():
        raise ConfigError(f"{path} was exported from {meta[SOURCE_KEY]}, which is not a model folder here: pass "
                          "--reference")
    return meta[SOURCE_KEY]


def attack_onnx(path: str | os.PathLike, *, eps: Sequence[float], runtime: str = "onnxruntime",
                reference: str | os.PathLike | None = None, dataset: str | None = None,
                data_root: str | None = None, allow_unverified: bool = False, n: int = CHECK_EXAMPLES,
                steps: int = ATTACK_STEPS, restarts: int = RESTARTS, square_queries: int = CHECK_SQUARE_QUERIES,
                seed: int = 0, batch_size: int = 256,
                device: torch.device | str = "cpu", threads: int | None = None, fusion: bool = True,
                out: str | os.PathLike | None = None, store: str | os.PathLike | None = None,
                progress: Progress = NULL_PROGRESS) -> dict[str, Any]:
    """Robustness of a deployed ONNX model on its runtime (ONNX Runtime or OpenVINO) at each budget: clean accuracy, PGD
    transferred from the fake-quantized model, Square on the runtime, and top-1 agreement with
    the fake-quantized model (see :mod:`robquant.deploy.runtime`), as an ``evaluate_deployed``
    stage of the reference model's store (or ``store``), keyed by the file's sha256.

    Args:
        path: The ``.onnx`` file.
        eps: Budgets in /255 units (as on the command line; recorded as written).
        reference: The model folder it was exported from (default: the one its metadata names).
        dataset: Test data set (default: the one its metadata names).
        fusion: The runtime's QDQ fusion (see :class:`~robquant.deploy.RuntimeModel`).
        out: A link to the evaluation's folder (optional: the record is its ``stage.json``).

    Returns:
        The record (``path``: its folder; ``results``: one per budget).

    Raises:
        ConfigError: an unknown runtime, no reference or data set to be found, onnxruntime missing.
        CheckpointError: the reference changed since the file was exported from it.
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    path = Path(path)
    model = load_runtime(runtime, path, threads, fusion)  # checks the runtime and the file load, before any work
    check_out(out)
    ref_folder = _reference(path, model, reference)
    meta = model.metadata
    if meta.get("robquant.weights_sha256") not in (None, weights_sha256(ref_folder)):
        raise CheckpointError(f"{ref_folder} changed since {path} was exported from it (weights sha256 differs)")
    dev = resolve_device(device)
    ctx_for = _contexts(dev, progress)
    st, key, config = _parent(ref_folder, Store(store) if store is not None else None, ctx_for, data_root,
                              allow_unverified)
    name = dataset or meta.get("robquant.dataset") or config["data"]["name"]
    ctx = ctx_for(st)
    data = _data_in(ctx, name, data_root, None, allow_unverified)
    runs = tuple(DeployedRun(b.eps, n, steps, restarts, square_queries, file_opset(path), CHECK_TOL, runtime, fusion,
                             label=b.label) for b in (Budget.of(e) for e in eps))
    spec = EvaluateDeployed(data, weights_sha256(path), key, runs, seed, batch_size, str(path.resolve()), threads,
                            architecture=ModelRef(**config["model"]), label=f"attack {path.name}")
    folder, record = run_spec(spec, st, ctx)
    if out is not None:
        link(out, folder)
    return {**record, "path": str(folder)}


__all__ = ["FORMATS", "attack_onnx", "export_metadata", "export_model", "runtime_agreement"]
