"""The in-memory data set every loader returns, and class-stratified subsets."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from functools import cached_property

import torch

from robquant.errors import check_range


PIXEL_LEVELS = 255  # an 8-bit pixel's largest value: [0, 1] units are pixels / 255


def to_unit(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (0-255) as float32 in [0, 1], the units every model and attack takes: the one
    place robquant converts them."""
    return pixels / float(PIXEL_LEVELS)  # uint8 -> float32 in one kernel


@dataclass(frozen=True)
class Augment:
    """Training-time augmentation, applied per batch on the device.

    Attributes:
        crop_pad: Zero-pad by this many pixels, then crop back at a random offset (0 = off).
        flip: Random horizontal flip with probability 1/2.
    """

    crop_pad: int = 0
    flip: bool = False


@dataclass
class ImageDataset:
    """One split of an image classification data set, held as a single uint8 tensor.

    Attributes:
        name: Registry name of the data set.
        split: ``"train"`` or ``"test"``.
        images: ``(N, C, H, W)`` uint8 pixels.
        labels: ``(N,)`` int64 class indices.
        num_classes: Number of classes.
        mean: Per-channel mean in [0, 1] units (for the model's internal normalisation).
        std: Per-channel standard deviation in [0, 1] units.
        augment: Default training augmentation for this data set.
        provenance: Where the data came from and whether its checksums were verified.
    """

    name: str
    split: str
    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: Augment = Augment()
    provenance: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W) uint8, got {tuple(self.images.shape)} "
                             f"{self.images.dtype}")
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def in_channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    @cached_property
    def sha256(self) -> str:
        """sha256 of the images and labels (what a per-example record's indices point into)."""
        h = hashlib.sha256()
        h.update(repr((tuple(self.images.shape), str(self.images.dtype))).encode())
        h.update(self.images.cpu().contiguous().numpy().tobytes())
        h.update(self.labels.cpu().to(dtype=torch.int64).contiguous().numpy().tobytes())
        return h.hexdigest()

    def select(self, index: torch.Tensor, **provenance: object) -> "ImageDataset":
        """A new data set with the examples at ``index`` (provenance extended by ``provenance``)."""
        return replace(self, images=self.images[index], labels=self.labels[index],
                       provenance={**self.provenance, **provenance})

    def head(self, n: int | None) -> "ImageDataset":
        """The first ``n`` examples (all when ``n`` is None or larger than the split)."""
        if n is None or n >= len(self):
            return self
        check_range("n", n, 1)
        return self.select(torch.arange(n), n_used=n)

    def subset(self, fraction: float, seed: int = 0) -> "ImageDataset":
        """A class-stratified, seed-fixed subset holding ``fraction`` of each class.

        Each class keeps ``round(fraction * n_c)`` examples (at least one). The same
        (fraction, seed) always selects the same examples, and examples keep their order.

        Raises:
            ConfigError: if ``fraction`` is not in (0, 1].
        """
        check_range("fraction", fraction, 0.0, 1.0, low_open=True)
        if fraction == 1.0:
            return self
        index = stratified_index(self.labels, fraction, seed)
        return self.select(index, fraction=fraction, fraction_seed=seed)


def stratified_index(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Indices of a class-stratified random subset, sorted ascending."""
    gen = torch.Generator().manual_seed(seed)
    keep = []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        k = max(1, round(fraction * len(idx)))
        keep.append(idx[torch.randperm(len(idx), generator=gen)[:k]])
    return torch.sort(torch.cat(keep)).values


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images, in [0, 1] units."""
    x = to_unit(images).transpose(0, 1).reshape(images.shape[1], -1)  # (C, N*H*W)
    std = x.std(dim=1).clamp_min(1e-3)
    return tuple(x.mean(dim=1).tolist()), tuple(std.tolist())
