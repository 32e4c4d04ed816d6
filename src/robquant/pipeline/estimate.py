"""How long a plan will take on this device: the passes each stage counts, times seconds per pass
measured here on the study's own model and data.

The training and calibration passes are known exactly. An evaluation's passes depend on results
not yet known: attacks run only on correctly classified examples, PGD drops an example at the first
iterate that fools the model, and a cascaded attack sees only the survivors of the earlier ones.
The estimate assumes :data:`~robquant.defaults.ASSUMED_ACCURACY` and :data:`~robquant.defaults.ASSUMED_SURVIVAL` (typical of CIFAR
ResNet-20 models, robust or not, between 1/255 and 8/255), and a bit search that breaks a model in
:data:`~robquant.defaults.ASSUMED_SEARCH_FLIPS` flips.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from robquant.defaults import ASSUMED_ACCURACY, ASSUMED_SURVIVAL
from robquant.pipeline.plan import Plan, Stage
from robquant.pipeline.specs import AttackRun, Evaluate, ImportFP, Quantize, TrainFP
from robquant.provenance import device_name

BROKEN_AFTER = 0.3  # share of its steps PGD spends on an example it breaks


@dataclass(frozen=True)
class Speeds:
    """Seconds per image of each kind of pass (batch 128), and of loading the data, on one device.

    Attributes:
        device: Where they were measured.
        train_fp / train_q: One training step (forward, backward, update) of the FP / QAT model.
        grad_fp / grad_q: One input-gradient pass (an attack step) of the FP model as adversarial
            training attacks it / of a quantized model.
        grad_view: One attack step on the FP model's BN-folded attack view (evaluation).
        fwd_fp / fwd_q: One forward pass without gradients.
        fwd_calib: One calibration forward pass (batches of 4).
        load_train / load_test: Seconds to load each split (once per stage that reads it).
        train_fp_bf16 / train_q_bf16 / grad_fp_bf16 / grad_q_bf16: The same training and attack passes
            under bf16 autocast (``autocast: bf16`` recipes): faster where the CPU or GPU has bf16
            units, slower where it emulates them.
    """

    device: str
    train_fp: float
    train_q: float
    grad_fp: float
    grad_q: float
    grad_view: float
    fwd_fp: float
    fwd_q: float
    fwd_calib: float
    load_train: float
    load_test: float
    train_fp_bf16: float
    train_q_bf16: float
    grad_fp_bf16: float
    grad_q_bf16: float

    def bf16_ratio(self) -> float:
        """Time of an FP training step under bf16 autocast over its float32 time, here."""
        return self.train_fp_bf16 / self.train_fp


SPEEDS_VERSION = 2  # bump when Speeds gains a field: cached speeds of another version are measured again


def _per_image(fn: Callable[[], object], images: int, device: torch.device, repeats: int = 3) -> float:
    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    once()  # warm-up
    return statistics.median(once() for _ in range(repeats)) / images


def measure_speeds(study: Any, device: torch.device) -> Speeds:
    """Time each kind of pass on the study's model (random parameters, the QAT form at A4W4) and
    the study's data (a few seconds on a CPU). The global random state is left as it was."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        return _measure(study, device)


def _measure(study: Any, device: torch.device) -> Speeds:
    from robquant.attacks.view import attack_view
    from robquant.data import create_dataset, to_unit
    from robquant.quant import QATConfig, quantize

    ds = study.dataset
    t0 = time.perf_counter()
    create_dataset(ds.name, ds.root, "train", allow_unverified=ds.allow_unverified)  # timed only
    load_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    test = create_dataset(ds.name, ds.root, "test", allow_unverified=ds.allow_unverified)
    load_test = time.perf_counter() - t0
    batch = 128
    x = to_unit(test.images[:batch]).to(device)
    x = torch.cat([x] * (-(-batch // len(x))))[:batch]
    y = torch.randint(0, test.num_classes, (batch,), device=device)
    from robquant.modelfolder import build_model
    from robquant.train.stages import architecture_spec
    from robquant.pipeline.specs import ModelRef

    fp = build_model(architecture_spec(ModelRef(study.model.name, study.model.options()), test)).to(device)
    qat = quantize(fp, QATConfig(precision="A4W4", pact_init="fixed"))
    view = attack_view(fp.eval())

    def step(model: torch.nn.Module) -> Callable[[], None]:
        opt = torch.optim.SGD(model.parameters(), lr=1e-6)

        def run() -> None:
            model.train()
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return run

    def grad(model: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            xa = x.clone().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(xa), y), xa)
        return run

    def forward(model: torch.nn.Module, inputs: torch.Tensor) -> Callable[[], None]:
        def run() -> None:
            with torch.no_grad():
                model(inputs)
        return run

    def bf16(fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            with torch.autocast(device.type, torch.bfloat16):
                fn()
        return run

    speeds = {"train_fp": _per_image(step(fp), batch, device), "train_q": _per_image(step(qat), batch, device),
              "train_fp_bf16": _per_image(bf16(step(fp)), batch, device),
              "train_q_bf16": _per_image(bf16(step(qat)), batch, device)}
    fp.eval()
    qat.eval()
    speeds.update(grad_fp_bf16=_per_image(bf16(grad(fp)), batch, device),
                  grad_q_bf16=_per_image(bf16(grad(qat)), batch, device))
    speeds.update(grad_fp=_per_image(grad(fp), batch, device), grad_q=_per_image(grad(qat), batch, device),
                  grad_view=_per_image(grad(view), batch, device), fwd_fp=_per_image(forward(fp, x), batch, device),
                  fwd_q=_per_image(forward(qat, x), batch, device),
                  fwd_calib=_per_image(forward(qat, x[:4]), 4, device))
    return Speeds(device=device_name(device), load_train=load_train, load_test=load_test, **speeds)


def cached_speeds(study: Any, device: torch.device, store_root: str | Path) -> Speeds:
    """:func:`measure_speeds`, kept in ``speeds.json`` of the store for the same device, torch
    version, model and data set (re-measured when any of them changes)."""
    ident = {"device": device_name(device), "torch": torch.__version__, "model": study.model.model_dump(),
             "dataset": study.dataset.name, "version": SPEEDS_VERSION}
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(store_root) / "speeds.json"
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return Speeds(**cache[key])
    speeds = measure_speeds(study, device)
    cache[key] = asdict(speeds)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cache, indent=2))
    tmp.replace(path)
    return speeds


def _training_seconds(spec: TrainFP | Quantize, images: int, speeds: Speeds, quantized: bool) -> float:
    """Seconds of the stage's epochs over ``images`` with its objective, from the passes the
    objective declares: one training step, its extra gradient passes and extra forwards."""
    assert spec.objective is not None and spec.train is not None
    forwards, passes = spec.objective.cost()
    bf16 = spec.train.autocast == "bf16"
    step = {(False, False): speeds.train_fp, (True, False): speeds.train_q, (False, True): speeds.train_fp_bf16,
            (True, True): speeds.train_q_bf16}[quantized, bf16]
    grad = {(False, False): speeds.grad_fp, (True, False): speeds.grad_q, (False, True): speeds.grad_fp_bf16,
            (True, True): speeds.grad_q_bf16}[quantized, bf16]
    per_image = step + (passes - 1) * grad + (forwards - passes) * speeds.fwd_fp
    seconds = spec.train.epochs * images * per_image
    check = getattr(spec, "check", None)
    if check is not None:  # the held-out check: float32, eval mode, after every epoch
        seconds += spec.train.epochs * check.n * (check.steps * speeds.grad_fp + speeds.fwd_fp)
    return seconds


def _attack_seconds(attack: AttackRun, examples: float, speeds: Speeds) -> float:
    """Seconds of one attack on ``examples`` at one budget, from the passes the attack declares
    (an attack that stops early drops the examples it breaks, :data:`BROKEN_AFTER` of the way)."""
    cost = attack.cost()
    share = ASSUMED_SURVIVAL + (1 - ASSUMED_SURVIVAL) * BROKEN_AFTER if cost.early_stop else 1.0
    grad = speeds.grad_view if attack.needs_surrogate else speeds.grad_q  # the FP surrogate's attack view
    return examples * (cost.gradients * share * grad + cost.forwards * speeds.fwd_q)


def _evaluation_seconds(spec: Evaluate, speeds: Speeds, test_size: int) -> float:
    n_test = min(spec.data.n_test or test_size, test_size)
    seconds = speeds.load_test + n_test * speeds.fwd_q
    for budget in spec.budgets:
        left = 1.0  # share of the correct examples the cascade still attacks
        for a in spec.attacks:
            if not a.runs_at(budget):
                continue
            examples = min(a.n or n_test, n_test) * ASSUMED_ACCURACY * (left if spec.cascade else 1.0)
            seconds += _attack_seconds(a, examples, speeds)
            left *= ASSUMED_SURVIVAL
    for addon in spec.add_ons:  # each add-on's expected passes, as it declares them
        gradients, forwards = addon.work(spec)
        seconds += gradients * speeds.grad_q + forwards * speeds.fwd_q
    return seconds


def estimate_seconds(stage: Stage, speeds: Speeds, n_train: int, test_size: int = 10_000) -> float:
    """Estimated wall time of one stage on the device ``speeds`` were measured on (``test_size``: the
    test split's size, what a stage with ``n_test: null`` evaluates on)."""
    spec = stage.spec
    n_test = min(spec.data.n_test or test_size, test_size)
    if isinstance(spec, Evaluate):
        return _evaluation_seconds(spec, speeds, test_size)
    if isinstance(spec, ImportFP):  # load the data, then the clean accuracy
        return speeds.load_train + speeds.load_test + n_test * speeds.fwd_fp
    seconds = speeds.load_train + speeds.load_test
    images = max(1, round(n_train * spec.fraction))
    if isinstance(spec, TrainFP):
        return seconds + _training_seconds(spec, images, speeds, quantized=False) + n_test * speeds.fwd_fp
    if spec.quant.needs_calibration:
        seconds += spec.quant.calib_images * speeds.fwd_calib
    if spec.method == "qat":
        seconds += _training_seconds(spec, images, speeds, quantized=True)
    return seconds + n_test * speeds.fwd_q


def estimate_plan(plan: Plan, speeds: Speeds, n_train: int, test_size: int | None = None) -> dict[str, float]:
    """``{stage key: estimated seconds}`` for every stage of ``plan`` (``test_size``: default the
    plan's test split, loaded once)."""
    test_size = plan.n_test_split() if test_size is None else test_size
    return {key: estimate_seconds(stage, speeds, n_train, test_size) for key, stage in plan.stages.items()}


def bf16_warning(plan: Plan, todo: set[str], device: torch.device, ratio: float) -> str | None:
    """What bf16 autocast will cost where the CPU has no bf16 units (None where it has them, or no stage of
    ``todo`` asks): ``ratio``, a training step's time under bf16 over float32 as measured here
    (:meth:`Speeds.bf16_ratio`)."""
    from robquant.provenance import cpu_bf16

    asking = [k for k in todo if getattr(getattr(plan.stages[k].spec, "train", None), "autocast", None) == "bf16"]
    if not asking or device.type != "cpu" or cpu_bf16():
        return None
    return (f"{len(asking)} stage(s) train under bf16 autocast, but this CPU has no bf16 units (PyTorch's oneDNN sees "
            f"none): bf16 is emulated, and a training step measured here takes {ratio:.2f}x its float32 time (the "
            f"estimate counts it); remove autocast: bf16 from the recipe to train in float32 (a new stage key)")
