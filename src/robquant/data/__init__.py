"""Data sets as device-resident uint8 tensors: a registry, verified CIFAR, offline sets, loaders.

Example:
    >>> ds = create_dataset("digits", split="train")
    >>> loader = DeviceLoader(ds.subset(0.5, seed=0), batch_size=64, shuffle=True, augment=ds.augment)
"""

from __future__ import annotations

import os
from typing import Any, Callable

from robquant.data.base import PIXEL_LEVELS, Augment, ImageDataset, channel_stats, stratified_index, to_unit
from robquant.data.cifar import CIFAR10, CIFAR100, load_cifar, md5sum
from robquant.data.loader import DeviceLoader, augment_batch, epoch_generator
from robquant.data.small import load_digits, load_imagefolder, make_synthetic
from robquant.errors import ConfigError
from robquant.registry import Registry

DATASETS: Registry[Callable[..., ImageDataset]] = Registry("dataset")
SPLITS = ("train", "test")


@DATASETS.register("cifar10")
def _cifar10(root: str | None, split: str, **kw: Any) -> ImageDataset:
    return load_cifar(CIFAR10, root, split, **kw)


@DATASETS.register("cifar100")
def _cifar100(root: str | None, split: str, **kw: Any) -> ImageDataset:
    return load_cifar(CIFAR100, root, split, **kw)


@DATASETS.register("digits")
def _digits(root: str | None, split: str, **kw: Any) -> ImageDataset:
    return load_digits(split, **_drop_download_flags(kw))


@DATASETS.register("synthetic")
def _synthetic(root: str | None, split: str, **kw: Any) -> ImageDataset:
    return make_synthetic(split, **_drop_download_flags(kw))


@DATASETS.register("imagefolder")
def _imagefolder(root: str | None, split: str, **kw: Any) -> ImageDataset:
    return load_imagefolder(root, split, **_drop_download_flags(kw))


def _drop_download_flags(kw: dict[str, Any]) -> dict[str, Any]:
    """Offline sets have nothing to download or verify."""
    return {k: v for k, v in kw.items() if k not in ("download", "allow_unverified")}


def create_dataset(name: str, root: str | os.PathLike | None = None, split: str = "train",
                   **kwargs: Any) -> ImageDataset:
    """Load split ``split`` of data set ``name``.

    Args:
        name: One of :func:`list_datasets`.
        root: Data root (needed by ``cifar10``, ``cifar100`` and ``imagefolder``).
        split: ``"train"`` or ``"test"``.
        **kwargs: Passed to the loader, e.g. ``download=True``, ``allow_unverified=True`` for
            CIFAR, ``n_train=...`` for ``synthetic``.

    Raises:
        UnknownNameError: for an unknown name (the message lists the known ones).
        ConfigError: for an unknown split.
        DataError: if the data is missing or fails verification.
    """
    factory = DATASETS.get(name)
    if split not in SPLITS:
        raise ConfigError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return factory(None if root is None else os.fspath(root), split, **kwargs)


def list_datasets() -> list[str]:
    """Names accepted by :func:`create_dataset`."""
    return DATASETS.names()


__all__ = [
    "PIXEL_LEVELS", "to_unit",
    "Augment", "CIFAR10", "CIFAR100", "DeviceLoader", "ImageDataset", "augment_batch",
    "channel_stats", "create_dataset", "epoch_generator", "list_datasets", "load_cifar", "md5sum",
    "stratified_index",
]
