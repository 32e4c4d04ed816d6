"""The ``robquant`` command line: thin over the library. A user's error becomes one message and
exit 2; an internal one a message naming the log that holds its traceback, and exit 1."""

from __future__ import annotations

import json
import functools
import logging
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import click
import typer
from rich.console import Console
from rich.markup import escape

from robquant import __version__
from robquant.defaults import (ATTACK_STEPS, BATCH_SIZE, BITFLIP_ATTACK_BATCH, BITFLIP_RANDOM_CAP, BITFLIP_REPEATS,
                               BITFLIP_SEARCH_CAP, CALIB_BATCH_SIZE, CALIB_IMAGES, CHECK_EXAMPLES, CHECK_SQUARE_QUERIES,
                               DEPLOYED_SQUARE_QUERIES, EPOCHS, LR, OPSET, PACT_ALPHA, PACT_PERCENTILE, PGD_AT_EPS_255,
                               PGD_AT_STEP_255, PGD_AT_STEPS, QAT_EPOCHS, QAT_LR, RESTARTS, SQUARE_QUERIES,
                               WEIGHT_DECAY)
from robquant.errors import ConfigError, RobquantError, check_range

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="robquant: which quantization pipeline keeps a model robust, and at what cost.")
# piped output (logs, CI) gets room for wide tables instead of rich's default 80 columns
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

DEVICE_HELP = "auto (CUDA when available), cpu, cuda or cuda:N"
DATA_ROOT_HELP = "folder holding the data set (cifar10/cifar100/imagefolder)"
STORE_HELP = ("the store the result is kept in, keyed like a study's stages (default: the input model's store, "
              "else a folder 'store' beside --out)")


def user_errors(fn: F) -> F:
    """Turn robquant's user-facing errors into one red line on stderr and exit code 2, and any
    other error (a bug) into one line naming it and the log that holds its traceback, exit code 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RobquantError as exc:
            err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)  # its brackets as written
            raise typer.Exit(2) from None
        except (typer.Exit, click.exceptions.ClickException, click.exceptions.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:  # a bug: one message, the traceback in a log
            log_path = _write_traceback(fn.__name__)
            err_console.print(f"[bold red]internal error[/] in `robquant {fn.__name__}`: {type(exc).__name__}: "
                              f"{escape(str(exc))}\nThe traceback is in {log_path}; please report it with that file.",
                              highlight=False)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _write_traceback(command: str) -> Path:
    """The current exception's traceback, with the command line and versions, in a new log file
    under ``$ROBQUANT_LOG_DIR`` (default: the system's temporary folder)."""
    import os
    import platform
    import tempfile
    import time
    import traceback

    folder = Path(os.environ.get("ROBQUANT_LOG_DIR") or tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"robquant-{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    path.write_text(f"command: {' '.join(sys.argv)}\nrobquant {__version__}, python {platform.python_version()}, "
                    f"{platform.platform()}\n\n{traceback.format_exc()}")
    return path


_QUIET = {"on": False}  # --quiet: no progress display


def _progress() -> Any:
    """The progress display on stderr for a long command (a context manager giving a
    :class:`~robquant.progress.Progress`); shows nothing under ``--quiet``."""
    from robquant.display import RichProgress
    from robquant.progress import NULL_PROGRESS

    return nullcontext(NULL_PROGRESS) if _QUIET["on"] else RichProgress(err_console)


def _busy(what: str) -> Any:
    """A spinner on stderr naming what a command is doing while it reads or writes (for work with no
    count to show: planning, reading a store, writing a report); shows nothing under ``--quiet``."""
    return nullcontext() if _QUIET["on"] else err_console.status(what)


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="log progress details"),
          quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress display (results and errors only)"),
          version: bool = typer.Option(False, "--version", help="print the version and exit")) -> None:
    _QUIET["on"] = quiet
    if version:
        console.print(f"robquant {__version__}")
        raise typer.Exit(0)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


@app.command()
@user_errors
def train(
    dataset: str = typer.Option(..., help="data set name (see `robquant list`)"),
    model: str = typer.Option("resnet20", help="a registered model (see `robquant list`) or your own, "
                              "package.module:factory (importable, called with --model-kwargs)"),
    model_kwargs: Optional[str] = typer.Option(None, help="your own model's factory options, as JSON"),
    objective: str = typer.Option("clean", help="clean or pgd_at"),
    epochs: Optional[int] = typer.Option(None, help=f"training epochs (default {EPOCHS}, the paper's)"),
    out: Path = typer.Option(..., help="the result's name: a link to its folder in the store (model, record)"),
    store: Optional[Path] = typer.Option(None, help=STORE_HELP),
    fraction: float = typer.Option(1.0, help="fraction of the training set, in (0, 1], class-stratified"),
    seed: int = typer.Option(0, help="seed for initialisation, data order and attacks"),
    batch_size: Optional[int] = typer.Option(None, help=f"examples per step (default {BATCH_SIZE})"),
    lr: Optional[float] = typer.Option(None, help=f"initial learning rate (default {LR:g})"),
    weight_decay: Optional[float] = typer.Option(None, help=f"L2 coefficient (default {WEIGHT_DECAY:g})"),
    schedule: Optional[str] = typer.Option(None, help="multistep (x0.1 at 1/2, 3/4; default), cosine or constant"),
    width: Optional[int] = typer.Option(None, help="model width (ResNet-20: 16)"),
    pgd_eps: Optional[float] = typer.Option(None, help=f"pgd_at: budget in /255 units (default {PGD_AT_EPS_255})"),
    pgd_step: Optional[float] = typer.Option(None, help=f"pgd_at: step in /255 units (default {PGD_AT_STEP_255})"),
    pgd_steps: Optional[int] = typer.Option(None, help=f"pgd_at: attack steps (default {PGD_AT_STEPS})"),
    bn_mode: Optional[str] = typer.Option(None, help="pgd_at: BN mode while generating (eval, the default, or train)"),
    n_test: Optional[int] = typer.Option(None, help="test examples for the final accuracy (default all)"),
    autocast: Optional[str] = typer.Option(None, help="bf16: train under bfloat16 autocast (faster on GPUs with "
                                           "bf16 units; evaluation stays float32)"),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
    download: bool = typer.Option(False, help="download the data set if missing"),
    allow_unverified_data: bool = typer.Option(False, help="accept a data copy whose checksums differ"),
    device: str = typer.Option("auto", help=DEVICE_HELP),
) -> None:
    """Train a model (clean or PGD adversarial training), as a study's FP stage: resumed if killed, found if done."""
    from robquant.pipeline import resolve_device, train_model
    from robquant.train import FP_TRAIN

    check_range("--fraction", fraction, 0.0, 1.0, low_open=True)
    if n_test is not None:
        check_range("--n-test", n_test, 1)
    obj_kw = _pgd_at_options(pgd_eps, pgd_step, pgd_steps, bn_mode) if objective == "pgd_at" else {}
    options = _user_model(model, model_kwargs)
    if width:
        options["width"] = width
    cfg = _recipe(FP_TRAIN, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                  schedule=schedule, seed=seed, autocast=autocast)
    dev = resolve_device(device)
    with _progress() as progress:
        record = train_model(dataset=dataset, model=model, objective=objective, train=cfg, out=out,
                             fraction=fraction, data_root=_opt_str(data_root), device=dev,
                             model_kwargs=options, objective_kwargs=obj_kw,
                             allow_unverified=allow_unverified_data, download=download, n_test=n_test,
                             store=store, progress=progress)
    _print_train(record, out)


def _user_model(model: Optional[str], kwargs_json: Optional[str]) -> dict[str, Any]:
    """Let a model the user names (package.module:factory) be imported; its options from JSON."""
    import json

    from robquant.models import external

    if model is not None and external.is_reference(model):
        external.resolve(model)
        external.allow(model)
    if not kwargs_json:
        return {}
    try:
        options = json.loads(kwargs_json)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--model-kwargs must be a JSON object, got {kwargs_json!r} ({exc.msg})") from None
    if not isinstance(options, dict):
        raise ConfigError(f"--model-kwargs must be a JSON object, got {kwargs_json!r}")
    return options


def _recipe(default: Any, **given: Any) -> Any:
    """``default`` (a TrainConfig) with the options the user gave (not None)."""
    from dataclasses import replace

    return replace(default, **{k: v for k, v in given.items() if v is not None})


def _pgd_at_options(eps: Optional[float], step: Optional[float], steps: Optional[int],
                    bn_mode: Optional[str]) -> dict[str, Any]:
    """PGD adversarial training's options: the given ones (eps and step in /255 units, converted
    here) over :data:`robquant.train.PGD_AT`."""
    from dataclasses import asdict

    from robquant.train import PGD_AT

    given = {"eps": None if eps is None else eps / 255, "step_size": None if step is None else step / 255,
             "steps": steps, "bn_mode": bn_mode}
    return {**asdict(PGD_AT), **{k: v for k, v in given.items() if v is not None}}


def _print_train(record: dict[str, Any], out: Path) -> None:
    from robquant.modelfolder import ModelMetrics

    m = ModelMetrics.read(record)
    status = record["status"] + (f" ({record['reason']})" if record["reason"] else "")
    console.print(f"status {status}; clean accuracy {100 * m.clean_accuracy:.2f}% on {m.n_test} "
                  f"test images; {record['timings']['train_s']:.1f} s")
    if not record["data"]["verified"]:
        console.print("[yellow]note:[/] trained on a data copy whose checksums were not verified")
    console.print(f"saved to {out} -> {Path(out).resolve()}")


@app.command()
@user_errors
def attack(
    checkpoint: Path = typer.Argument(..., help="model folder written by `robquant train`, or an .onnx file "
                                      "written by `robquant export` (evaluated on --runtime)"),
    runtime: Optional[str] = typer.Option(None, help="an .onnx model's runtime: onnxruntime (the default for .onnx), "
                                          "openvino (pip install 'robquant[openvino]') or executorch (the same integer "
                                          "model built from --reference as an ExecuTorch program with XNNPACK; pip "
                                          "install 'robquant[executorch]')"),
    reference: Optional[Path] = typer.Option(None, help=".onnx: the fake-quantized model folder it was exported "
                                             "from (default: the one its metadata names)"),
    fusion: bool = typer.Option(True, "--fusion/--no-fusion", help=".onnx: the runtime's own rewriting, on as it "
                                "ships (ONNX Runtime's QDQ fusion, which also quantizes float weights beside "
                                "quantized activations to int8; OpenVINO's default inference precision, bf16 on CPUs "
                                "with bf16 units); off: the graph as written, in float32"),
    model: Optional[str] = typer.Option(None, help="your own model (package.module:factory) when the folder holds "
                                        "one: loading it imports that code, so it must be named"),
    attack_name: str = typer.Option("pgd", "--attack", help="attack name(s), comma-separated: pgd, fgsm, autoattack, "
                                    "apgd, square, transfer; bitflip flips bits of a quantized model's stored "
                                    "weights (no eps: the flips to bring accuracy to chance)"),
    bitflip_seeds: int = typer.Option(BITFLIP_REPEATS, help="bitflip: seeds (attack batches and random draws), each a run of the "
                                      "bit search and of random flips (about 2-6 s each on the digits ResNet-20)"),
    bitflip_batch: Optional[int] = typer.Option(None, help="bitflip: the search's attack batch (default Rakin et "
                                                f"al.'s {BITFLIP_ATTACK_BATCH}; on a CPU, 32 broke CIFAR-10 ResNet-20s in about as many "
                                                "flips in 64-81 % of the time)"),
    bitflip_caps: Optional[str] = typer.Option(None, help="bitflip: at most this many flips, search,random (default "
                                               f"{BITFLIP_SEARCH_CAP},{BITFLIP_RANDOM_CAP}; a run not broken within its cap is recorded as such)"),
    eps: str = typer.Option("1,2,4,8", help="budgets in /255 units, comma-separated"),
    attack_option: Optional[list[str]] = typer.Option(None, "--attack-option", help="KEY=VALUE, repeatable: a further "
                                                      "option of the attack by the name it declares (a plug-in's "
                                                      "own; the value read as YAML)"),
    steps: int = typer.Option(ATTACK_STEPS, help="PGD / transfer steps"),
    step_size: Optional[float] = typer.Option(None, help="PGD step in /255 units (default eps/4)"),
    restarts: int = typer.Option(RESTARTS, help="PGD restarts"),
    norm: str = typer.Option("linf", help="linf or l2"),
    pixel_grid: bool = typer.Option(False, "--pixel-grid", help="pgd / fgsm: keep every adversarial input on the "
                                    "8-bit grid (k/255 within the budget): images that survive being saved"),
    aa_attacks: Optional[str] = typer.Option(None, help="autoattack: sub-attacks, comma-separated (default the "
                                             "standard apgd-ce,apgd-t,fab-t,square)"),
    square_queries: Optional[int] = typer.Option(None, help=f"square: queries per example (default {SQUARE_QUERIES}, "
                                                 f"AutoAttack's; on an .onnx model {DEPLOYED_SQUARE_QUERIES}: about a minute for 200 "
                                                 "digits images at 4 budgets on 2 cores, and the time grows "
                                                 "with the queries: 500 took twice as long)"),
    surrogate: Optional[Path] = typer.Option(None, help="transfer / diagnostics: surrogate model folder (default: "
                                             "the recorded full-precision parent)"),
    n_test: Optional[int] = typer.Option(None, help="evaluate the first N test examples (default all; 200 for an "
                                         ".onnx model)"),
    diagnose: bool = typer.Option(False, "--diagnose", help="also run the trust checks (masking, convergence, "
                                  "black-box, AutoAttack, integer execution) at the largest eps"),
    diagnose_n: int = typer.Option(CHECK_EXAMPLES, help="--diagnose: test examples"),
    diagnose_eps: Optional[float] = typer.Option(None, help="--diagnose: the budget (/255) the checks judge, "
                                                 "one of --eps (default the largest)"),
    dataset: Optional[str] = typer.Option(None, help="test data set (default: the training one)"),
    seed: int = typer.Option(0, help="seed for random starts"),
    batch_size: int = typer.Option(256, help="examples per batch"),
    out: Optional[Path] = typer.Option(None, help="a link to the evaluation's folder in the store (optional; the "
                                       "record is its stage.json)"),
    store: Optional[Path] = typer.Option(None, help=STORE_HELP),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
    allow_unverified_data: bool = typer.Option(False, help="accept a data copy whose checksums differ"),
    device: str = typer.Option("auto", help=DEVICE_HELP),
) -> None:
    """Clean and robust accuracy of a saved model over an eps sweep; prints a table, writes JSON."""
    from robquant.display import bitflip_table, diagnostics_table, robustness_table
    from robquant.pipeline import attack_model, chosen_attacks, resolve_device

    _user_model(model, None)
    eps_list = parse_eps(eps)
    if n_test is not None:
        check_range("--n-test", n_test, 1)
    if runtime is not None or checkpoint.suffix == ".onnx":
        queries = DEPLOYED_SQUARE_QUERIES if square_queries is None else square_queries
        _attack_deployed(checkpoint, runtime or "onnxruntime", reference, eps_list, n_test or CHECK_EXAMPLES, steps,
                         restarts, check_range("--square-queries", queries, 1), dataset, data_root,
                         allow_unverified_data, seed, batch_size, out, store, device, fusion)
        return
    check_range("--diagnose-n", diagnose_n, 1)
    sub = [a.strip() for a in aa_attacks.split(",") if a.strip()] if aa_attacks else None
    names = [a.strip() for a in attack_name.split(",") if a.strip()]
    bitflip = _bitflip_options(bitflip_seeds, bitflip_batch, bitflip_caps) if "bitflip" in names else None
    names = [a for a in names if a != "bitflip"]  # not an input attack: no budgets, its own record
    given = {"steps": steps, "restarts": restarts, "norm": norm, "attacks": sub,
             "step_size": None if step_size is None else check_range("--step-size", step_size, 0.0) / 255,
             "n_queries": check_range("--square-queries", SQUARE_QUERIES if square_queries is None else square_queries, 1),
             "pixel_grid": pixel_grid or None}
    specs = chosen_attacks(names, given, _attack_options(attack_option or []), "--attack-option")
    if not specs and bitflip is None:
        raise ConfigError("--attack needs at least one attack name")
    options = None
    if diagnose:  # Square's queries: --square-queries when given, else the trust checks' own (as in a study)
        options = {"eps": max(eps_list) if diagnose_eps is None else check_range("--diagnose-eps", diagnose_eps, 0.0),
                   "n": diagnose_n, "steps": steps, "restarts": restarts,
                   "square_queries": CHECK_SQUARE_QUERIES if square_queries is None else square_queries,
                   **({"autoattack": sub} if sub else {})}
    dev = resolve_device(device)
    with _progress() as progress:
        record = attack_model(checkpoint, attacks=specs, eps=eps_list, n_test=n_test, dataset=dataset,
                              data_root=_opt_str(data_root), allow_unverified=allow_unverified_data,
                              device=dev, batch_size=batch_size, seed=seed, out=out, store=store,
                              surrogate=_opt_str(surrogate), diagnose=options, bitflip=bitflip, progress=progress)
    if specs:
        console.print(robustness_table(str(checkpoint), record["result"]))
    if "diagnostics" in record:
        console.print(diagnostics_table(record["diagnostics"]))
    if "bitflip" in record:
        console.print(bitflip_table(f"{checkpoint}: bit flips to break it", record["bitflip"]))
    console.print(f"record: {Path(record['path']) / 'stage.json'}" + (f" (linked as {out})" if out else ""))


def _bitflip_options(seeds: int, batch: Optional[int], caps: Optional[str]) -> dict[str, Any]:
    """``--bitflip-*`` as the bit-flip run's options (its constructor checks the numbers)."""
    options: dict[str, Any] = {"seeds": tuple(range(int(check_range("--bitflip-seeds", seeds, 1))))}
    if batch is not None:
        options["attack_batch"] = int(check_range("--bitflip-batch", batch, 1))
    if caps is not None:
        parts = [c.strip() for c in caps.split(",")]
        if len(parts) != 2 or not all(c.isdigit() and int(c) >= 1 for c in parts):
            raise ConfigError(f"--bitflip-caps must be two whole numbers >= 1, search,random (e.g. "
                              f"{BITFLIP_SEARCH_CAP},{BITFLIP_RANDOM_CAP}), got {caps!r}")
        options["search_cap"], options["random_cap"] = int(parts[0]), int(parts[1])
    return options


def _attack_options(items: list[str]) -> dict[str, Any]:
    """``--attack-option KEY=VALUE`` items as options (values read as YAML scalars), or ConfigError."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--attack-option must be KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--attack-option {key.strip()}: cannot read {value!r} as a value") from None
    return out


def _attack_deployed(path: Path, runtime: str, reference: Optional[Path], eps: list[float], n: int, steps: int,
                     restarts: int, square_queries: int, dataset: Optional[str], data_root: Optional[Path],
                     allow_unverified: bool, seed: int, batch_size: int, out: Optional[Path], store: Optional[Path],
                     device: str, fusion: bool = True) -> None:
    from robquant.display import deployed_table
    from robquant.pipeline import attack_onnx, resolve_device

    if path.suffix != ".onnx":
        raise ConfigError(f"--runtime evaluates an exported .onnx file, got {path} (write one with `robquant export`)")
    with _progress() as progress:
        record = attack_onnx(path, eps=eps, runtime=runtime, reference=_opt_str(reference), dataset=dataset,
                             data_root=_opt_str(data_root), allow_unverified=allow_unverified, n=n, steps=steps,
                             restarts=restarts, square_queries=square_queries, seed=seed, batch_size=batch_size,
                             device=resolve_device(device), fusion=fusion, out=out, store=store, progress=progress)
    console.print(deployed_table(f"{path} on {runtime} (reference {record['reference']})", record["results"]))
    console.print(f"record: {Path(record['path']) / 'stage.json'}" + (f" (linked as {out})" if out else ""))


@app.command()
@user_errors
def export(
    checkpoint: Path = typer.Argument(..., help="model folder (quantized or not) written by robquant"),
    model: Optional[str] = typer.Option(None, help="your own model (package.module:factory) when the folder holds "
                                        "one: loading it imports that code, so it must be named"),
    format: str = typer.Option("onnx", "--format", help="onnx (QuantizeLinear/DequantizeLinear)"),
    out: Path = typer.Option(..., help="the file's name, e.g. model.onnx: a link to the file in the store"),
    store: Optional[Path] = typer.Option(None, help=STORE_HELP),
    opset: int = typer.Option(OPSET, help="ONNX opset, 13-20"),
    check_n: int = typer.Option(256, help="test images on which ONNX Runtime is compared with the model (0: skip)"),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
    allow_unverified_data: bool = typer.Option(False, help="accept a data copy whose checksums differ"),
) -> None:
    """Export a model as ONNX with integer (QDQ) weights and activations, checked by onnx.checker."""
    from robquant.pipeline import export_model

    _user_model(model, None)
    check_range("--check-n", check_n, 0)
    with _busy(f"exporting {checkpoint} (and running the file on ONNX Runtime)"):
        info = export_model(checkpoint, out, format=format, opset=opset, data_root=_opt_str(data_root),
                            allow_unverified=allow_unverified_data, check_n=check_n, store=store)
    branches = sorted(set(info["layers"].values()) - {0})
    qdq = sum(1 for v in info["layers"].values() if v)
    console.print(f"wrote {out} ({info['bytes'] / 1024:.0f} KiB, opset {info['opset']}, "
                  f"{info['seconds']:.2f} s), checked by onnx.checker; record: {info['record']}")
    console.print(f"  {qdq} of {len(info['layers'])} conv/linear layers with integer weights"
                  + (f" ({'/'.join(map(str, branches))} branch{'es' if branches != [1] else ''} per layer)"
                     if branches else "")
                  + f"; {len(info['activations'])} quantized activations: "
                  + (", ".join(sorted(set(info["activations"].values()))) or "none"))
    if info["agreement"] is not None:
        console.print(f"  ONNX Runtime agrees with the model on {100 * info['agreement']:.1f} % of {info['n']} "
                      "test images (top-1)")
        if info["agreement_unfused"] is not None:
            console.print(f"  with its QDQ fusion off: {100 * info['agreement_unfused']:.1f} % (the fusion quantizes "
                          "float weights beside quantized activations to int8; `robquant attack --no-fusion`)")
    else:
        console.print("  (install onnxruntime to compare the export with the model)")


@app.command()
@user_errors
def quantize(
    checkpoint: Path = typer.Argument(..., help="full-precision model folder written by `robquant train`"),
    model: Optional[str] = typer.Option(None, help="your own model (package.module:factory) when the folder holds "
                                        "one: loading it imports that code, so it must be named"),
    method: str = typer.Option(..., help="ptq (post-training, PWLQ weights) or qat (quantization-aware, PACT/DoReFa)"),
    precision: str = typer.Option(..., help="AxWy: activation bits x, weight bits y, each 2..8, 16 or 32"),
    out: Path = typer.Option(..., help="the result's name: a link to its folder in the store (model, record)"),
    store: Optional[Path] = typer.Option(None, help=STORE_HELP),
    quantizer: Optional[str] = typer.Option(None, help="the weights' quantizer by name: `robquant list` shows those "
                                            "registered per method (default pwlq for ptq, dorefa for qat)"),
    breakpoint: Optional[str] = typer.Option(None, help="PTQ, PWLQ breakpoint: gauss (default), laplace, exact or "
                                             "search"),
    first_last: bool = typer.Option(False, "--quantize-first-last", help="also quantize the first and last layer"),
    calib_images: Optional[int] = typer.Option(None, help="calibration images from the training fraction (PTQ "
                                               f"ranges, QAT's PACT alpha; default {CALIB_IMAGES})"),
    calib_batch_size: Optional[int] = typer.Option(None, help=f"images per calibration batch (default {CALIB_BATCH_SIZE}, PWLQ's)"),
    act_placement: Optional[str] = typer.Option(None, help="PTQ activations: inputs (of every conv, linear and "
                                                "pooling layer; PWLQ's code; default) or relu"),
    pact_init: Optional[str] = typer.Option(None, help="QAT: PACT alpha from the data (a percentile of each "
                                            "layer's activations) or fixed (--pact-alpha); default data, "
                                            "fixed with --reinit"),
    pact_alpha: Optional[float] = typer.Option(None, help=f"QAT: PACT alpha when fixed (default {PACT_ALPHA:g}, PACT's "
                                               "from-scratch value)"),
    pact_percentile: Optional[float] = typer.Option(None, help=f"QAT: percentile of pact_init data (default {PACT_PERCENTILE:g})"),
    fraction: float = typer.Option(1.0, help="fraction of the training set (calibration / fine-tuning)"),
    epochs: Optional[int] = typer.Option(None, help=f"QAT: fine-tuning epochs (default {QAT_EPOCHS}, the paper's)"),
    objective: str = typer.Option("clean", help="QAT: clean, pgd_at, fast_adversarial or transfer (RRM "
                                  "distillation from --teacher)"),
    teacher: Optional[Path] = typer.Option(None, help="QAT --objective transfer: the robust full-precision model "
                                           "folder whose features the quantized model learns to match"),
    lr: Optional[float] = typer.Option(None, help=f"QAT: initial learning rate (default {QAT_LR:g}, cosine schedule)"),
    batch_size: Optional[int] = typer.Option(None, help=f"QAT: examples per step (default {BATCH_SIZE})"),
    weight_decay: Optional[float] = typer.Option(None, help="QAT: L2 coefficient, also regularises PACT's alpha "
                                                 f"(default {WEIGHT_DECAY:g})"),
    reinit: bool = typer.Option(False, help="QAT: start from random parameters (keep the architecture)"),
    pgd_eps: Optional[float] = typer.Option(None, help=f"pgd_at: budget in /255 units (default {PGD_AT_EPS_255})"),
    pgd_step: Optional[float] = typer.Option(None, help=f"pgd_at: step in /255 units (default {PGD_AT_STEP_255})"),
    pgd_steps: Optional[int] = typer.Option(None, help=f"pgd_at: attack steps (default {PGD_AT_STEPS})"),
    seed: int = typer.Option(0, help="seed for calibration images, data order and attacks"),
    n_test: Optional[int] = typer.Option(None, help="test examples for the final accuracy (default all)"),
    data_root: Optional[Path] = typer.Option(None, help=DATA_ROOT_HELP),
    allow_unverified_data: bool = typer.Option(False, help="accept a data copy whose checksums differ"),
    device: str = typer.Option("auto", help=DEVICE_HELP),
) -> None:
    """Quantize a trained model: PTQ (fold BN, PWLQ, calibrate) or QAT fine-tuning with any objective."""
    from robquant.pipeline import quantize_model, resolve_device
    from robquant.quant import QuantConfig
    from robquant.train import QAT_FINETUNE

    _user_model(model, None)
    check_range("--fraction", fraction, 0.0, 1.0, low_open=True)
    # the method's own options (the config says which, and their defaults); one it does not have is an error
    cfg = QuantConfig(method=method, precision=precision, weight_quantizer=quantizer, breakpoint=breakpoint,
                      quantize_first_last=first_last, calib_images=calib_images, calib_batch_size=calib_batch_size,
                      act_placement=act_placement, pact_alpha=pact_alpha, pact_percentile=pact_percentile,
                      pact_init=pact_init or ("fixed" if reinit and method == "qat" else None))
    train_cfg = _recipe(QAT_FINETUNE, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                        seed=seed)
    obj_kw = _pgd_at_options(pgd_eps, pgd_step, pgd_steps, None) if objective == "pgd_at" else {}
    if objective == "transfer" and teacher is None:
        raise ConfigError("--objective transfer needs --teacher (the robust full-precision model folder RRM "
                          "distils from)")
    if teacher is not None and objective != "transfer":
        raise ConfigError(f"--teacher goes with --objective transfer, got --objective {objective}")
    dev = resolve_device(device)
    with _progress() as progress:
        record = quantize_model(checkpoint, quant=cfg, out=out, fraction=fraction, seed=seed, train=train_cfg,
                                objective=objective, objective_kwargs=obj_kw, reinit=reinit,
                                teacher=_opt_str(teacher), data_root=_opt_str(data_root),
                                allow_unverified=allow_unverified_data, device=dev, n_test=n_test, store=store,
                                progress=progress)
    size = record["size"]
    console.print(f"{cfg.method.upper()} {cfg.precision}: {size['bytes']:,} bytes "
                  f"({size['fp32_bytes'] / size['bytes']:.1f}x smaller than FP32)")
    _print_train(record, out)


@app.command()
@user_errors
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="output folder (the demo's store)"),
    study_path: Optional[Path] = typer.Option(None, "--study", help="another study instead of configs/demo.yaml"),
    device: str = typer.Option("auto", help=DEVICE_HELP),
    verbose: bool = typer.Option(False, "--verbose", help="also the Table-2-style summary, the findings' notes and "
                                 "the cells behind each verdict (the report has them all)"),
) -> None:
    """Offline demo: the paper's whole grid at tiny scale on scikit-learn's digits (a few minutes
    on 2 CPU cores), then its Findings and regime (the report has the rest). Resumable: run it again to
    continue."""
    from importlib import resources

    from robquant.pipeline.executor import execute_local

    path = study_path or Path(str(resources.files("robquant") / "configs" / "demo.yaml"))
    study, plan, st = _plan(path, out / "store")
    from robquant.display import SUMMARY_WIDTH

    console.print(f"demo study [bold]{study.name}[/] ({path}): {len(plan.cells)} cells, {len(plan.stages)} stages; "
                  f"store {st.root}", width=SUMMARY_WIDTH)
    dev = _device(device)
    with _progress() as progress:
        summary = execute_local(plan, st, dev, progress=progress)
    console.print(f"ran {len(summary.ran)} stages in {summary.seconds:.1f} s ({len(summary.skipped)} were done, "
                  f"{len(summary.failed)} failed)", width=SUMMARY_WIDTH)
    if verbose:
        _print_summary(plan, st)
    _print_report(plan, st, out / "report", verbose=verbose)
    if summary.failed or summary.blocked:
        raise typer.Exit(1)


def _print_report(plan: Any, st: Any, out: Path, formats: list[str] | None = None, verbose: bool = False) -> None:
    """The report written; the terminal gets the Findings and the regime in about 40 lines of at most 100
    columns (``verbose``: with their notes and the cells behind each verdict)."""
    from robquant.display import SUMMARY_WIDTH, findings_summary, regime_summary, report_table
    from robquant.report import FORMATS, write_report

    with _busy(f"writing the report of {plan.study.name} to {out} (tables, figures, verdicts)"):
        result = write_report(plan, st, out, formats or FORMATS)
    if verbose:
        for name in ("findings", "regime", "evidence"):
            console.print(report_table(result[name]))
    else:
        console.print(findings_summary(result["findings"]), width=SUMMARY_WIDTH)
        if result["regime"] is not None:
            console.print(regime_summary(result["regime"]), width=SUMMARY_WIDTH)
    verdicts = ", ".join(f"{k} {v}" for k, v in result["paper_labels"].items())
    console.print(f"Table-1 labels vs the paper: {verdicts}", width=SUMMARY_WIDTH)
    console.print(f"report of {result['rows']} models written to {out} "
                  f"({', '.join(sorted({p.suffix.lstrip('.') for p in result['files']}))})", width=SUMMARY_WIDTH)
    html_path = out / "report.html"
    if html_path.is_file():
        console.print(f"open {html_path} in a browser", width=SUMMARY_WIDTH)


@app.command()
@user_errors
def report(
    study_path: Path = typer.Argument(..., metavar="STUDY", help="study file (YAML)"),
    out: Optional[Path] = typer.Option(None, help="output folder (default: report/ beside the store)"),
    fmt: str = typer.Option("md,latex,csv,html", "--format", help="comma-separated: md, latex, csv, html"),
    store: Optional[Path] = typer.Option(None, help="store folder (default: the study's)"),
    verbose: bool = typer.Option(False, "--verbose", help="print the findings' notes and the cells behind each "
                                 "verdict too (the report has them all)"),
) -> None:
    """The study's tables (paper Tables 1-5, cost, paper comparison) and figures, from the store alone;
    the terminal gets its Findings and regime."""
    formats = [f.strip() for f in fmt.split(",") if f.strip()]
    with _busy(f"planning {study_path}"):
        study, plan, _ = _plan(study_path, store, open_store=False)
    root = Path(study.store)
    if not (root / "index.sqlite").is_file():
        raise ConfigError(f"--store {str(root)!r} holds no study results: run `robquant run {study_path}` first")
    from robquant.pipeline.store import Store

    st = Store(root)
    _print_report(plan, st, out or Path(study.store).parent / "report", formats, verbose)


def _plan(study_path: Path, store_dir: Optional[Path], open_store: bool = True, runs: bool = False):
    """The study (its store replaced by ``store_dir`` when given), its plan and its store (None
    without ``open_store``: opening creates the folder)."""
    from robquant.pipeline.plan import build_plan
    from robquant.pipeline.store import Store
    from robquant.pipeline.study import load_study

    study = load_study(study_path)
    if store_dir is not None:
        study = study.model_copy(update={"store": str(store_dir)})
    plan = build_plan(study)
    if open_store:  # about to run: a user's own model is checked before any work
        _check_model(plan)
    if runs:  # and every runtime the deployed evaluation names is installed, before the store is made
        study.evaluation.deployed.check_installed()
    return study, plan, Store(study.store) if open_store else None


def _design_warnings(study: Any) -> list[str]:
    """What the study cannot decide at the findings' margin (planned before it runs)."""
    from robquant.data import create_dataset
    from robquant.report.power import design_warnings

    ds = study.dataset
    return design_warnings(study, lambda: len(create_dataset(ds.name, ds.root, "test",
                                                             allow_unverified=ds.allow_unverified)))


def _check_model(plan: Any) -> None:
    from robquant.data import create_dataset
    from robquant.models import external
    from robquant.pipeline import check_user_model
    from robquant.pipeline.specs import Quantize

    model, ds = plan.study.model, plan.study.dataset
    if not external.is_reference(model.name):
        return
    test = create_dataset(ds.name, ds.root, "test", allow_unverified=ds.allow_unverified)
    check_user_model(model.name, model.options(), test,
                     [s.spec.quant for s in plan.stages.values() if isinstance(s.spec, Quantize)])


def _estimate(plan: Any, store: Any, device: Any, todo: set[str]) -> float | None:
    """Estimate every stage's wall time on ``device`` (speeds measured once per store and device),
    print the total for the stages to run, and return it (None if the speeds cannot be measured)."""
    from robquant.defaults import ASSUMED_ACCURACY, ASSUMED_SEARCH_FLIPS, ASSUMED_SURVIVAL
    from robquant.pipeline.estimate import bf16_warning, cached_speeds, estimate_plan

    try:
        speeds = cached_speeds(plan.study, device, store.root)
    except RobquantError as exc:  # e.g. the data set is missing: the run will say so
        console.print(f"no time estimate: {escape(str(exc))}")
        return None
    for key, seconds in estimate_plan(plan, speeds, plan.n_train()).items():
        plan.stages[key].estimated_s = seconds
    total = sum(plan.stages[k].estimated_s for k in todo)
    flips = any(plan.stages[k].kind == "evaluate" and plan.stages[k].spec.add_on("bitflip") for k in todo)
    console.print(f"estimated wall time on {speeds.device}: {total / 60:.1f} min for {len(todo)} stages (measured "
                  f"speeds; attacks assume {100 * ASSUMED_ACCURACY:g} % clean accuracy and "
                  f"{100 * ASSUMED_SURVIVAL:g} % of attacked examples surviving each attack"
                  + (f"; a bit search {ASSUMED_SEARCH_FLIPS} flips to break a model)" if flips else ")"))
    warning = bf16_warning(plan, todo, device, speeds.bf16_ratio())
    if warning:
        console.print(f"[yellow]warning:[/] {warning}")
    return total


def _print_summary(plan: Any, store: Any) -> None:
    from robquant.display import summary_table
    from robquant.report import collect

    with _busy(f"reading the records of {plan.study.name}"):
        results = collect(plan, store)
    if not results:
        return
    top = max(r.fraction for r in results)
    seeds = sorted({r.seed for r in results})
    ev = plan.study.evaluation
    console.print(summary_table(
        f"{plan.study.name}: clean accuracy / robustness (worst case over attacks, eps {ev.main_eps:g}/255), "
        f"fraction {top:g}, mean of seeds {seeds}", [r for r in results if r.fraction == top]))


@app.command()
@user_errors
def run(
    study_path: Path = typer.Argument(..., metavar="STUDY", help="study file (YAML)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan and its cost; run nothing"),
    executor: str = typer.Option("local", help="local (this process) or ray"),
    address: Optional[str] = typer.Option(None, help="ray: cluster address (default: start a local instance)"),
    gpus_per_stage: float = typer.Option(0.25, help="ray: GPU fraction per stage (0.25: four share a GPU)"),
    store: Optional[Path] = typer.Option(None, help="store folder (default: the study's)"),
    device: str = typer.Option("auto", help=DEVICE_HELP),
) -> None:
    """Plan a study as a dependency graph and run what is not done yet (resumable)."""
    from robquant.display import plan_table
    from robquant.pipeline.executor import execute_local, pending

    if executor not in ("local", "ray"):
        raise ConfigError(f"--executor must be local or ray, got {executor!r}")
    check_range("--gpus-per-stage", gpus_per_stage, 0.0, 1.0)
    study, plan, st = _plan(study_path, store, runs=not dry_run)
    todo = {s.key for s in pending(plan, st)}
    dev = _device(device)
    estimate = _estimate(plan, st, dev, todo)
    kinds = {k: sum(1 for s in plan.stages.values() if s.kind == k)
             for k in ("train_fp", "import_fp", "quantize", "evaluate")}
    kinds = {k: n for k, n in kinds.items() if n or k != "import_fp"}
    console.print(f"study [bold]{study.name}[/]: {len(plan.cells)} cells, {len(plan.stages)} stages "
                  f"({', '.join(f'{n} {k}' for k, n in kinds.items())}); {len(plan.stages) - len(todo)} done, "
                  f"{len(todo)} to run; store {st.root}")
    reasons: dict[str, int] = {}
    for _, reason in plan.dropped:
        reasons[reason] = reasons.get(reason, 0) + 1
    for reason, n in reasons.items():
        console.print(f"  dropped {n} grid cell(s): {reason}")
    for warning in _design_warnings(study):
        console.print(f"[yellow]warning:[/] {warning}")
    if dry_run:
        rows = [{"key": s.key, "kind": s.kind, "label": s.label, "status": "pending" if s.key in todo else "done",
                 **s.cost} for s in plan.order()]
        console.print(plan_table(rows))
        total = {k: sum(s.cost.get(k, 0) for s in plan.stages.values() if s.key in todo) for k in ("forward", "backward")}
        console.print(f"cost to run: {total['forward']:.3g} forward and {total['backward']:.3g} backward "
                      f"image passes")
        return
    if not todo:
        console.print(f"nothing to do: all {len(plan.stages)} stages are done")
        _print_summary(plan, st)
        return
    with _progress() as progress:
        if executor == "ray":
            from robquant.pipeline.ray_executor import execute_ray

            summary = execute_ray(plan, st, dev, address=address, gpus_per_stage=gpus_per_stage, progress=progress)
        else:
            summary = execute_local(plan, st, dev, progress=progress)
    console.print(f"ran {len(summary.ran)} stages in {summary.seconds:.1f} s; {len(summary.skipped)} were done; "
                  f"{len(summary.failed)} failed; {len(summary.blocked)} blocked by a failed parent")
    if summary.ran and estimate and executor == "local":
        planned = sum(plan.stages[k].estimated_s or 0 for k in summary.ran)
        console.print(f"wall time {summary.seconds / 60:.1f} min; estimated {planned / 60:.1f} min for these stages "
                      f"(measured / estimated = {summary.seconds / planned:.2f})")
    for key, err in summary.failed.items():
        console.print(f"  [red]failed[/] {key[:10]} {plan.stages[key].label}: {err}")
    _print_summary(plan, st)
    if summary.failed or summary.blocked:
        raise typer.Exit(1)


@app.command()
@user_errors
def status(
    study_path: Path = typer.Argument(..., metavar="STUDY", help="study file (YAML)"),
    store: Optional[Path] = typer.Option(None, help="store folder (default: the study's)"),
) -> None:
    """Show a study's stages: done, NC, running, failed, pending."""
    with _busy(f"planning {study_path} and reading its store"):
        study, plan, st = _plan(study_path, store)
        rows = {r["key"]: r for r in st.rows()}
    counts: dict[str, int] = {}
    for key in plan.stages:
        state = rows.get(key, {}).get("status", "pending")
        if state == "running" and not _alive(rows[key].get("pid")):
            state = "interrupted"
        counts[state] = counts.get(state, 0) + 1
    finished = counts.get("done", 0) + counts.get("NC", 0)
    console.print(f"study [bold]{study.name}[/]: {finished}/{len(plan.stages)} stages finished "
                  f"({100 * finished / len(plan.stages):.0f} %): "
                  + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    for key, stage in plan.stages.items():
        row = rows.get(key, {})
        if row.get("status") in ("failed", "running"):
            err = (row.get("error") or "").splitlines()[:1]
            console.print(f"  {row['status']} {key[:10]} {stage.label} {err[0] if err else ''}")
    _print_summary(plan, st)


def _alive(pid: Optional[int]) -> bool:
    import os

    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _device(device: str) -> Any:
    """``--device`` to a torch device (imported lazily: the CLI starts without torch)."""
    from robquant.pipeline import resolve_device

    return resolve_device(device)


@app.command("list")
def list_names(markdown: bool = typer.Option(False, "--markdown", help="print every study-file field and every "
                                             "attack's declared options as markdown tables (docs/options.md)")) -> None:
    """List the registered data sets, models, attacks, training objectives and quantizers (per method)."""
    if markdown:
        from robquant.display import options_reference

        sys.stdout.write(options_reference())
        return
    from robquant.attacks import list_attacks
    from robquant.data import list_datasets
    from robquant.models import list_models
    from robquant.quant.config import ACT_QUANTIZERS, WEIGHT_QUANTIZERS
    from robquant.train import list_objectives

    for kind, names in (("datasets", list_datasets()), ("models", list_models()),
                        ("attacks", list_attacks()), ("objectives", list_objectives())):
        console.print(f"[bold]{kind}[/]: {', '.join(names)}")
    for kind, registry in (("weight quantizers", WEIGHT_QUANTIZERS), ("activation quantizers", ACT_QUANTIZERS)):
        console.print(f"[bold]{kind}[/]: " + "; ".join(f"{method}: {', '.join(registry.names(method))}"
                                                        for method in ("ptq", "qat")))
    from robquant.attacks import ATTACKS

    console.print("[bold]attack options[/] (as declared; a study's attack entry or --attack-option KEY=VALUE):")
    for name in list_attacks():
        options = ATTACKS.get(name).DECLARED.values()
        console.print(f"  {name}: " + ("; ".join(o.describe() for o in options) or "none"), soft_wrap=True)


zoo_app = typer.Typer(add_completion=False, invoke_without_command=True,
                      help="The model zoo: trained models shipped with robquant, loaded by name (zoo:NAME) "
                      "wherever a model folder is taken; your own zoo folders in ROBQUANT_ZOO.")
app.add_typer(zoo_app, name="zoo")


@zoo_app.callback()
@user_errors
def zoo_list(ctx: typer.Context) -> None:
    """List the zoo's models with their numbers (clean, PGD-20 and AutoAttack accuracy, on how many test images)."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from robquant.zoo import entries

    def pct(m: dict[str, Any], key: str) -> str:
        return "-" if m.get(key) is None else f"{100 * m[key]:.2f} ({m.get(key + '_n', 0):,})"

    table = Table(title="robquant zoo (accuracy %, test images)")
    for column in ("name", "data", "model", "init", "clean", "PGD-20", "AutoAttack", "from"):
        table.add_column(column)
    for name, entry in sorted(entries().items()):
        info, m = entry.info, entry.info.get("metrics", {})
        table.add_row(f"zoo:{name}", info.get("dataset", "?"), info.get("model", "?"), info.get("init", "?"),
                      pct(m, "clean"), pct(m, "pgd20"), pct(m, "autoattack"),
                      "robquant" if entry.shipped else str(entry.zoo))
    console.print(table)


@zoo_app.command("add")
@user_errors
def zoo_add(
    model: Path = typer.Argument(..., help="the model folder (a study's FP stage, or a link to one)"),
    name: str = typer.Option(..., help="the zoo name (zoo:NAME)"),
    into: Path = typer.Option(..., help="the zoo folder (put it in ROBQUANT_ZOO to load it by name)"),
    evaluation: Optional[Path] = typer.Option(None, help="an evaluate stage's folder on this model: its clean, "
                                              "PGD-20 and AutoAttack accuracy go into the index and the card"),
    description: str = typer.Option("", help="a sentence for the card"),
    command: Optional[list[str]] = typer.Option(None, help="a command that reproduces it (repeatable)"),
    data_note: str = typer.Option("", help="a note on the data for the card"),
) -> None:
    """Put a trained model into a zoo folder: its weights, record, card and training curve, hashed in the index."""
    from robquant.modelfolder import read_record, record_dataset
    from robquant.report.paper import paper_numbers
    from robquant.zoo import add
    from robquant.zoo.card import evaluation_summary, render_card

    _, record = read_record(model)
    config = record.get("config") or {}
    init = config.get("init", "?")
    info: dict[str, Any] = {"dataset": record_dataset(record), "model": record["model"]["name"], "init": init,
                            "description": description, "command": command or [], "data_note": data_note,
                            "recipe": {"train": config.get("train"), "objective": config.get("objective"),
                                       "check": config.get("check")}}
    if evaluation is not None:
        stage = evaluation / "stage.json"
        if not stage.is_file():
            raise ConfigError(f"--evaluation {evaluation}: no stage.json (an evaluate stage's folder)")
        info["metrics"] = evaluation_summary(json.loads(stage.read_text()))
        if (evaluation / "outcomes.npz").is_file():  # the first 1,000 examples' clean accuracy: a check's yardstick
            from robquant.evaluation.outcomes import Outcomes

            clean = Outcomes.load(evaluation / "outcomes.npz").clean[:1000]
            info["metrics"].update(clean_first=float(clean.mean()), clean_first_n=int(len(clean)))
    regime = paper_numbers().get("regime", {}).get(init)
    if info["dataset"] == "cifar10" and regime:
        info["paper"] = {"clean": regime["clean"] / 100, "pgd20": regime["pgd20"] / 100}
    entry = add(model, name, into, info=info, card=render_card(name, record, info))
    console.print(f"zoo:{name} -> {entry.folder} ({len(entry.files)} files hashed in {into / 'index.json'})")


def parse_eps(text: str, field: str = "--eps") -> list[float]:
    """Parse a comma-separated eps list in /255 units (the budgets' labels; they become [0, 1]
    units with their label beside them, :class:`~robquant.pipeline.specs.Budget`).

    Raises:
        ConfigError: for an empty list, a non-number or a negative value (naming ``field``).
    """
    parts = [p.strip() for p in text.split(",")]
    if not parts or parts == [""]:
        raise ConfigError(f"{field} needs at least one value (in /255 units, e.g. 1,2,4,8)")
    values = []
    for p in parts:
        try:
            v = float(p)
        except ValueError:
            raise ConfigError(f"{field} values must be numbers (in /255 units), got {p!r}") from None
        if not v >= 0:
            raise ConfigError(f"{field} values must be >= 0 (in /255 units), got {p!r}")
        values.append(v)
    return values


def _opt_str(p: Optional[Path]) -> Optional[str]:
    return None if p is None else str(p)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="robquant")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
