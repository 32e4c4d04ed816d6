"""The held-out PGD check of adversarial training: catches catastrophic overfitting, keeps the best epoch."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from robquant.attacks import PGD
from robquant.data import ImageDataset, epoch_generator, stratified_index, to_unit
from robquant.errors import ConfigError, check_range


@dataclass(frozen=True)
class HeldOutCheck:
    """PGD on held-out training images after every epoch (ALGORITHMS sec. 12).

    Single-step adversarial training can overfit catastrophically: within an epoch the model
    becomes robust to its own one-step attack and PGD accuracy collapses towards 0 (Wong et al.
    2020). Measured on images the model never trains on, in float32 and eval mode, after each
    epoch: training stops when the accuracy falls ``drop`` below its best so far, and the model
    handed back is the best epoch's.

    Attributes:
        n: Held-out training images (class-stratified, seeded, taken out of the training set).
        eps: The check's budget in [0, 1] units (8/255).
        step_size: Its step (2/255).
        steps: Its steps (10).
        drop: Stop once held-out PGD accuracy is this far below its best (0.2 = 20 points; a
            collapse drops it by about the whole robust accuracy).
    """

    n: int = 1000
    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 10
    drop: float = 0.2

    def __post_init__(self) -> None:
        check_range("check.n", self.n, 1)
        check_range("check.eps", self.eps, 0.0)
        check_range("check.step_size", self.step_size, 0.0, low_open=True)
        check_range("check.steps", self.steps, 1)
        check_range("check.drop", self.drop, 0.0, 1.0, low_open=True)

    def passes(self) -> int:
        """Forward+backward passes per held-out image and epoch (the attack's steps and a clean forward)."""
        return self.steps + 1

    def measure(self, model: nn.Module, held_out: ImageDataset, seed: int, epoch: int,
                batch_size: int = 500) -> dict[str, float]:
        """Clean and PGD accuracy of ``model`` on ``held_out`` (random starts seeded by seed and epoch)."""
        device = next(model.parameters()).device
        gen = epoch_generator(seed, epoch, device, stream=2)
        was_training = model.training
        model.eval()
        clean = robust = 0
        try:
            for start in range(0, len(held_out), batch_size):
                x = to_unit(held_out.images[start:start + batch_size].to(device))  # (B, C, H, W)
                y = held_out.labels[start:start + batch_size].to(device)
                with torch.no_grad():
                    right = model(x).argmax(1) == y
                clean += int(right.sum())
                if right.any():
                    attack = PGD(model, self.eps, steps=self.steps, step_size=self.step_size, generator=gen,
                                 fold_bn=False)  # one pass over few images: folding would not pay off
                    with torch.no_grad():
                        robust += int((model(attack(x[right], y[right])).argmax(1) == y[right]).sum())
        finally:
            model.train(was_training)
        return {"held_out_clean": clean / len(held_out), "held_out_pgd": robust / len(held_out)}


def split_held_out(train_set: ImageDataset, n: int, seed: int) -> tuple[ImageDataset, ImageDataset]:
    """``(rest, held_out)``: ``n`` class-stratified, seeded training images taken out (n per class in proportion).

    Raises:
        ConfigError: if ``n`` leaves no training image.
    """
    if n >= len(train_set):
        raise ConfigError(f"check.n must be below the {len(train_set)} training images, got {n}")
    held = stratified_index(train_set.labels, n / len(train_set), seed)
    keep = torch.ones(len(train_set), dtype=torch.bool)
    keep[held] = False
    rest = train_set.select(torch.nonzero(keep).flatten(), held_out=len(held), held_out_seed=seed)
    return rest, train_set.select(held, split="held_out")


def outside_fraction(full: ImageDataset, fraction: float, fraction_seed: int, n: int, seed: int) -> ImageDataset:
    """``n`` class-stratified, seeded training images that the ``(fraction, fraction_seed)`` subset of
    ``full`` does not hold (see :meth:`~robquant.data.ImageDataset.subset`): a held-out set that costs
    the training nothing.

    Raises:
        ConfigError: if fewer than ``n`` images lie outside the subset (``fraction`` 1 leaves none).
    """
    keep = torch.full((len(full),), fraction < 1.0)  # fraction 1 leaves none
    if fraction < 1.0:
        keep[stratified_index(full.labels, fraction, fraction_seed)] = False
    rest = torch.nonzero(keep).flatten()
    if n > len(rest):
        raise ConfigError(f"qat.held_out must be at most the {len(rest)} training images outside fraction "
                          f"{fraction:g}, got {n}")
    pick = stratified_index(full.labels[rest], n / len(rest), seed)  # n up to each class's rounding
    gen = torch.Generator().manual_seed(seed)
    if len(pick) > n:
        pick = pick[torch.randperm(len(pick), generator=gen)[:n]]
    elif len(pick) < n:
        others = torch.ones(len(rest), dtype=torch.bool)
        others[pick] = False
        spare = torch.nonzero(others).flatten()
        pick = torch.cat([pick, spare[torch.randperm(len(spare), generator=gen)[:n - len(pick)]]])
    pick = torch.sort(pick).values
    return full.select(rest[pick], split="held_out", held_out=len(pick), held_out_seed=seed)

