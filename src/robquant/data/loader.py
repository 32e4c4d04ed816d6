"""A data loader whose whole split lives on the device.

The split is moved to the device once as a uint8 tensor. At the start of each epoch it is
shuffled and augmented there in a few large tensor ops (each example gets its own random crop and
flip, still in uint8, in chunks to bound memory); each batch is then a slice converted to float in
[0, 1]. No worker processes, no host round-trips, and very few kernel launches per step, which is
what keeps a small model on a GPU busy. Shuffling and augmentation draw from a generator seeded by (seed, epoch), so an
epoch is reproducible on its own - which is what makes resuming from a checkpoint exact.
"""

from __future__ import annotations

from typing import Iterator

import torch

from robquant.data.base import Augment, ImageDataset, to_unit


def epoch_generator(seed: int, epoch: int, device: torch.device, stream: int = 0) -> torch.Generator:
    """A generator for one epoch; ``stream`` separates independent uses (data, attacks, ...)."""
    gen = torch.Generator(device=device)
    gen.manual_seed((seed * 1_000_003 + epoch * 7919 + stream * 104_729) % (2**63))
    return gen


class DeviceLoader:
    """Batches from an :class:`ImageDataset` held on ``device``.

    Args:
        dataset: The split to iterate.
        batch_size: Examples per batch.
        device: Where the data and the batches live.
        shuffle: Visit examples in a random order each epoch.
        augment: Augmentation; defaults to none (pass ``dataset.augment`` for training).
        drop_last: Drop the last incomplete batch.
        seed: Base seed for shuffling and augmentation.
    """

    def __init__(self, dataset: ImageDataset, batch_size: int, device: torch.device | str = "cpu", *,
                 shuffle: bool = False, augment: Augment | None = None, drop_last: bool = False,
                 seed: int = 0) -> None:
        self.device = torch.device(device)
        self.images = dataset.images.to(self.device)  # (N, C, H, W) uint8
        self.labels = dataset.labels.to(self.device)  # (N,)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment or Augment()
        self.drop_last = drop_last
        self.seed = seed

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self, epoch: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield ``(x, y)`` batches for ``epoch``: x float ``(B, C, H, W)`` in [0, 1], y ``(B,)``."""
        gen = epoch_generator(self.seed, epoch, self.device)
        n = len(self.labels)
        images, labels = self.images, self.labels
        if self.shuffle:
            order = torch.randperm(n, generator=gen, device=self.device)
            images, labels = images[order], labels[order]
        if self.augment.crop_pad or self.augment.flip:
            images = torch.cat([augment_batch(images[i:i + AUGMENT_CHUNK], self.augment, gen)
                                for i in range(0, n, AUGMENT_CHUNK)])
        for i in range(len(self)):
            idx = slice(i * self.batch_size, min(n, (i + 1) * self.batch_size))
            yield to_unit(images[idx]), labels[idx]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.epoch(0)


AUGMENT_CHUNK = 8192  # examples augmented at once: bounds the padded copy's memory


def augment_batch(x: torch.Tensor, augment: Augment, gen: torch.Generator) -> torch.Tensor:
    """Random crop after zero padding and random horizontal flip, per example, on x's device.

    Works on any dtype (uint8 images or float batches) and keeps it.
    """
    b, _, h, w = x.shape
    if augment.crop_pad:
        p = augment.crop_pad
        padded = torch.nn.functional.pad(x, (p, p, p, p))  # (B, C, H+2p, W+2p)
        dy = torch.randint(0, 2 * p + 1, (b, 1), generator=gen, device=x.device)
        dx = torch.randint(0, 2 * p + 1, (b, 1), generator=gen, device=x.device)
        rows = (dy + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
        cols = (dx + torch.arange(w, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
        padded = padded.gather(2, rows.expand(b, x.shape[1], h, w + 2 * p))
        x = padded.gather(3, cols.expand(b, x.shape[1], h, w))
    if augment.flip:
        flip = torch.rand(b, generator=gen, device=x.device) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return x
