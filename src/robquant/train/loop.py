"""The one training loop: SGD, a schedule, any objective, checkpoint per epoch, exact resume."""

from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robquant.data import DeviceLoader, ImageDataset, epoch_generator
from robquant.defaults import BATCH_SIZE, EPOCHS, LR, WEIGHT_DECAY
from robquant.errors import CheckpointError, ConfigError, check_range
from robquant.progress import NULL_PROGRESS, Progress
from robquant.train.check import HeldOutCheck
from robquant.train.objectives import Objective

log = logging.getLogger(__name__)
SCHEDULES = ("multistep", "cosine", "constant")
AUTOCAST = (None, "bf16")  # TrainConfig.autocast
CHECKPOINT_NAME = "last.pt"


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run (validated on construction).

    Attributes:
        epochs: Passes over the training set.
        batch_size: Examples per step.
        lr: Initial learning rate.
        momentum: SGD momentum.
        weight_decay: L2 coefficient.
        nesterov: Nesterov momentum.
        schedule: ``multistep`` (x gamma at each milestone epoch), ``cosine`` (per step, to 0)
            or ``constant``.
        milestones: Epochs at which ``multistep`` decays; default halfway and three quarters
            (the paper's 100 and 150 of 200).
        gamma: Decay factor of ``multistep``.
        seed: Seed for data order, augmentation and the objective's randomness.
        augment: Apply the data set's default augmentation.
        check_every: Steps between non-finite-loss checks (each check synchronises the device).
        autocast: ``"bf16"``: the training steps' forward passes (an adversarial objective's attack
            included) under bfloat16 autocast, faster on GPUs with bf16 units; weights, optimizer
            and every evaluation stay float32. None (default): float32 throughout. Keyed only when
            set, so float32 stages keep their keys.
    """

    epochs: int = EPOCHS
    batch_size: int = BATCH_SIZE
    lr: float = LR
    momentum: float = 0.9
    weight_decay: float = WEIGHT_DECAY
    nesterov: bool = False
    schedule: str = "multistep"
    milestones: tuple[int, ...] | None = None
    gamma: float = 0.1
    seed: int = 0
    augment: bool = True
    check_every: int = 25
    autocast: str | None = field(default=None, metadata={"keyed": "if_set"})

    def __post_init__(self) -> None:
        check_range("epochs", self.epochs, 1)
        check_range("batch_size", self.batch_size, 1)
        check_range("lr", self.lr, 0.0, low_open=True)
        check_range("momentum", self.momentum, 0.0, 1.0, high_open=True)
        check_range("weight_decay", self.weight_decay, 0.0)
        check_range("gamma", self.gamma, 0.0, 1.0, low_open=True)
        check_range("check_every", self.check_every, 1)
        if self.autocast not in AUTOCAST:
            raise ConfigError(f"autocast must be one of {', '.join(map(str, AUTOCAST))}, got {self.autocast!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.milestones is not None:
            object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))

    def lr_at(self, epoch: int, step: int, steps_per_epoch: int) -> float:
        """Learning rate at ``step`` of ``epoch`` (both from 0)."""
        if self.schedule == "constant":
            return self.lr
        if self.schedule == "cosine":
            t = (epoch * steps_per_epoch + step) / (self.epochs * steps_per_epoch)
            return 0.5 * self.lr * (1 + math.cos(math.pi * t))
        milestones = self.milestones or (self.epochs // 2, (3 * self.epochs) // 4)
        return self.lr * self.gamma ** sum(epoch >= m for m in milestones)


@dataclass
class TrainResult:
    """What :func:`fit` did.

    Attributes:
        status: ``"done"``, or ``"NC"`` (non-convergence: the loss became NaN/inf).
        reason: Why the status is NC (empty otherwise).
        epochs_completed: Epochs finished (including those before a resume).
        history: Per epoch: loss, train accuracy, learning rate, seconds.
        seconds: Wall time of this call.
        resumed_from: Epoch the run resumed from (0 for a fresh run).
        images: Training images seen in total.
        passes_per_image: Forward+backward passes per training image.
        forwards_per_image: Forward passes per training image (a teacher's included).
        memory_format: The layout the model trained in (``channels_last`` or ``contiguous``).
        best_epoch: With a held-out check: the epoch (from 1) whose weights the model holds.
        stop_reason: With a held-out check: why training stopped before its last epoch (empty if not).
    """

    status: str
    reason: str = ""
    epochs_completed: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    resumed_from: int = 0
    images: int = 0
    passes_per_image: int = 1
    forwards_per_image: int = 1
    memory_format: str = "contiguous"
    best_epoch: int | None = None
    stop_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passes_total"] = self.images * self.passes_per_image
        d["forwards_total"] = self.images * self.forwards_per_image
        return d


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (for model initialisation)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def fit(model: nn.Module, train_set: ImageDataset, objective: Objective, config: TrainConfig, *,
        device: torch.device | str = "cpu", checkpoint_dir: str | os.PathLike | None = None,
        progress: Progress = NULL_PROGRESS, channels_last: bool = True,
        check: HeldOutCheck | None = None, held_out: ImageDataset | None = None,
        monitor: ImageDataset | None = None) -> TrainResult:
    """Train ``model`` on ``train_set`` with ``objective``; resume from ``checkpoint_dir`` if possible.

    After every epoch the model, optimizer and history are written atomically to
    ``checkpoint_dir/last.pt``. Because data order, augmentation and the objective's random
    numbers are drawn from generators seeded by (seed, epoch), a resumed run ends with the same
    weights as an uninterrupted one. A NaN/inf loss ends the run with status ``"NC"``.

    With ``channels_last`` (the default) the model's weights and every batch are held in
    channels-last layout while training (convolutions run faster in it on CPUs and GPUs); the same
    function up to float rounding. The model is handed back in the default layout and the record
    says which one trained it (``TrainResult.memory_format``).

    Args:
        model: Model to train in place (already on ``device``).
        train_set: Training split (already subset to the wanted fraction).
        objective: Loss on a batch (see :func:`~robquant.train.create_objective`).
        config: Hyperparameters.
        device: Where to train.
        checkpoint_dir: Folder for the per-epoch checkpoint; None disables checkpoints.
        progress: Progress display.
        channels_last: Train in channels-last layout.
        check: Measure PGD accuracy on ``held_out`` after every epoch (its history gets
            ``held_out_clean`` and ``held_out_pgd``), stop when it collapses and hand back the best
            epoch's weights (see :class:`~robquant.train.check.HeldOutCheck`).
        held_out: The check's images (kept out of ``train_set``).
        monitor: Images outside ``train_set`` whose clean accuracy is measured after every epoch
            (its history gets ``held_out_clean``); it changes nothing in the training.

    Returns:
        A :class:`TrainResult`.

    Raises:
        CheckpointError: if the checkpoint belongs to a different configuration.
    """
    device = torch.device(device)
    loader = DeviceLoader(train_set, config.batch_size, device, shuffle=True, seed=config.seed,
                          augment=train_set.augment if config.augment else None)
    optimizer = torch.optim.SGD([*model.parameters(), *objective.parameters()], lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay, nesterov=config.nesterov)
    ckpt = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    train = {k: v for k, v in asdict(config).items() if not (k == "autocast" and v is None)}  # as before it existed
    meta = {"train": train, "objective": objective.config(), "n_train": len(train_set)}
    if check is not None:
        if held_out is None:
            raise ConfigError("a held-out check needs held_out images")
        meta["check"] = {**asdict(check), "n_held_out": len(held_out)}  # absent without one: older checkpoints match
    if monitor is not None:
        meta["monitor"] = len(monitor)
    result = TrainResult(status="done", passes_per_image=objective.passes_per_image,
                         forwards_per_image=objective.forwards_per_image)
    best: dict[str, torch.Tensor] | None = None  # the best epoch's weights under the check
    if ckpt is not None and ckpt.exists():
        best = _resume(ckpt, meta, model, optimizer, result)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    result.memory_format = "channels_last" if channels_last else "contiguous"
    start = time.perf_counter()
    model.to(memory_format=layout)  # in place: the optimizer keeps the same parameters
    try:
        for epoch in range(result.epochs_completed, config.epochs):
            if result.status == "NC" or result.stop_reason:  # (a resumed run that had stopped)
                break
            stats = _train_epoch(model, loader, objective, optimizer, config, epoch, progress, layout)
            result.images += stats.pop("images")
            if not math.isfinite(stats["loss"]):
                result.status, result.reason = "NC", f"non-finite training loss in epoch {epoch + 1}"
                log.warning("training stopped: %s", result.reason)
            if check is not None and result.status == "done":
                stats.update(check.measure(model, held_out, config.seed, epoch))
                best = _track_best(model, check, result, stats, epoch, best)
            elif monitor is not None and result.status == "done":
                stats["held_out_clean"] = _clean_accuracy(model, monitor, device)
            result.history.append({"epoch": epoch + 1, **stats})
            result.epochs_completed = epoch + 1
            if ckpt is not None:
                _save(ckpt, meta, model, optimizer, result, best)
            if result.stop_reason:
                break
    finally:
        model.to(memory_format=torch.contiguous_format)  # saved weights and later users see the usual layout
    if best is not None and result.status == "done" and result.best_epoch != result.epochs_completed:
        model.load_state_dict(best)
        log.info("kept epoch %d's weights (best held-out PGD accuracy)", result.best_epoch)
    result.seconds = time.perf_counter() - start
    return result


def _train_epoch(model: nn.Module, loader: DeviceLoader, objective: Objective,
                 optimizer: torch.optim.Optimizer, config: TrainConfig, epoch: int,
                 progress: Progress, layout: torch.memory_format = torch.contiguous_format) -> dict[str, float]:
    model.train()
    gen = epoch_generator(config.seed, epoch, loader.device, stream=1)
    loss_sum = torch.zeros((), device=loader.device)
    correct = torch.zeros((), device=loader.device, dtype=torch.long)
    seen, t0, steps = 0, time.perf_counter(), len(loader)
    with progress.task(f"epoch {epoch + 1}/{config.epochs}", total=steps) as task:
        for step, (x, y) in enumerate(loader.epoch(epoch)):
            lr = config.lr_at(epoch, step, steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with torch.autocast(loader.device.type, torch.bfloat16, enabled=config.autocast == "bf16"):
                loss, logits = objective(model, x.contiguous(memory_format=layout), y, gen)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            if (step + 1) % config.check_every == 0:
                if not torch.isfinite(loss_sum):
                    break  # diverged: stop now, fit() records NC
                task.update(loss=loss_sum.item() / seen)
            task.advance()
    return {"loss": loss_sum.item() / max(seen, 1), "train_accuracy": correct.item() / max(seen, 1),
            "lr": lr, "seconds": time.perf_counter() - t0, "images": seen}


def _clean_accuracy(model: nn.Module, images: ImageDataset, device: torch.device) -> float:
    """Clean accuracy on ``images`` by the evaluation's own path (eval mode, float32); the model's mode is restored."""
    from robquant.evaluation import evaluate

    was_training = model.training
    try:
        return evaluate(model, images, [], [], device=device).clean_accuracy
    finally:
        model.train(was_training)


def _track_best(model: nn.Module, check: HeldOutCheck, result: TrainResult, stats: dict[str, float],
                epoch: int, best: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
    """Keep a copy of the weights when held-out PGD accuracy is at its best; set the stop reason on a collapse."""
    scores = [h["held_out_pgd"] for h in result.history if "held_out_pgd" in h]
    top = max(scores, default=-1.0)
    if stats["held_out_pgd"] > top:
        result.best_epoch = epoch + 1
        return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    if stats["held_out_pgd"] < top - check.drop:
        result.stop_reason = (f"held-out PGD accuracy fell to {stats['held_out_pgd']:.3f} in epoch {epoch + 1} "
                              f"from {top:.3f} in epoch {result.best_epoch} (catastrophic overfitting)")
        log.warning("training stopped: %s", result.stop_reason)
    return best


def _save(path: Path, meta: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
          result: TrainResult, best: dict[str, torch.Tensor] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    state = {"meta": meta, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "result": {k: v for k, v in asdict(result).items() if k != "seconds"}}
    if best is not None:
        state["best"] = best
    torch.save(state, tmp)
    os.replace(tmp, path)  # atomic: the checkpoint is the old one or the new one, never half


def _resume(path: Path, meta: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
            result: TrainResult) -> dict[str, torch.Tensor] | None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # no code execution
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
    if _canonical(state.get("meta")) != _canonical(meta):
        raise CheckpointError(f"checkpoint {path} was written by a different configuration; "
                              f"remove it or use another output folder")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    for key, value in state["result"].items():
        setattr(result, key, value)
    result.resumed_from = result.epochs_completed
    log.info("resumed from %s at epoch %d", path, result.epochs_completed)
    return state.get("best")


def _canonical(obj: Any) -> Any:
    """Tuples and lists compare equal (a checkpoint round-trip turns one into the other)."""
    if isinstance(obj, dict):
        return {k: _canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    return obj


def convergence_status(accuracy: float, num_classes: int, margin: float = 0.05) -> tuple[str, str]:
    """``("NC", reason)`` if accuracy is within ``margin`` of chance, else ``("done", "")``."""
    chance = 1.0 / num_classes
    if accuracy <= chance + margin:
        return "NC", f"clean accuracy {accuracy:.3f} is within {margin:g} of chance ({chance:.3f})"
    return "done", ""
