"""Small offline data sets: scikit-learn's digits, synthetic blobs, and image folders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from robquant.data.base import Augment, ImageDataset, channel_stats, stratified_index
from robquant.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}


def load_digits(split: str, *, test_fraction: float = 0.2, split_seed: int = 0) -> ImageDataset:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, offline), scaled to [0, 1].

    The train/test split is class-stratified and fixed by ``split_seed``; the stats used for the
    model's normalisation are those of the training split.
    """
    from sklearn.datasets import load_digits as _load

    bunch = _load()
    pixels = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # 0..16 -> 0..255
    images = torch.from_numpy(pixels).unsqueeze(1)  # (N, 1, 8, 8)
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    test_idx = stratified_index(labels, test_fraction, split_seed)
    is_test = torch.zeros(len(labels), dtype=torch.bool)
    is_test[test_idx] = True
    mean, std = channel_stats(images[~is_test])
    index = is_test if split == "test" else ~is_test
    return ImageDataset(
        name="digits", split=split, images=images[index], labels=labels[index], num_classes=10,
        mean=mean, std=std, augment=Augment(crop_pad=1, flip=False),
        provenance={"source": "sklearn.datasets.load_digits", "verified": True},
    )


def make_synthetic(split: str, *, num_classes: int = 10, image_size: int = 8, channels: int = 1,
                   n_train: int = 512, n_test: int = 256, noise: float = 40.0,
                   seed: int = 0) -> ImageDataset:
    """A learnable synthetic data set: one random prototype image per class plus pixel noise.

    Deterministic for a seed; the train and test splits share prototypes but not noise.
    """
    gen = torch.Generator().manual_seed(seed)
    shape = (channels, image_size, image_size)
    prototypes = torch.rand((num_classes, *shape), generator=gen) * 255
    n = n_train if split == "train" else n_test
    split_gen = torch.Generator().manual_seed(seed * 2 + (split == "test"))
    labels = torch.arange(n) % num_classes
    labels = labels[torch.randperm(n, generator=split_gen)]
    x = prototypes[labels] + noise * torch.randn((n, *shape), generator=split_gen)
    images = x.round().clamp(0, 255).to(torch.uint8)
    mean, std = channel_stats(images)
    return ImageDataset(name="synthetic", split=split, images=images, labels=labels,
                        num_classes=num_classes, mean=mean, std=std,
                        provenance={"source": f"synthetic(seed={seed})", "verified": True})


def load_imagefolder(root: str | os.PathLike | None, split: str) -> ImageDataset:
    """Images under ``root/<split>/<class>/*.png|jpg``; classes are the sorted folder names.

    All images must share one size; they are converted to RGB, or kept as grey when every
    file is single-channel.
    """
    from PIL import Image

    if root is None:
        raise DataError("imagefolder needs --data-root DIR holding train/<class>/ and test/<class>/")
    base = Path(root).expanduser() / split
    if not base.is_dir():
        raise DataError(f"imagefolder: no folder {str(base)!r} (expected DIR/{split}/<class>/*.png|jpg)")
    classes = sorted(p.name for p in base.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"imagefolder: {str(base)!r} has no class folders")
    files, labels = [], []
    for label, cls in enumerate(classes):
        for f in sorted((base / cls).iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f)
                labels.append(label)
    if not files:
        raise DataError(f"imagefolder: no .png/.jpg images under {str(base)!r}")
    modes = {Image.open(files[0]).mode}
    mode = "L" if modes <= {"L"} else "RGB"
    arrays = []
    for f in files:
        with Image.open(f) as img:
            a = np.asarray(img.convert(mode), dtype=np.uint8)
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    if len({a.shape for a in arrays}) != 1:
        raise DataError(f"imagefolder: images under {str(base)!r} differ in size")
    images = torch.from_numpy(np.stack(arrays))
    mean, std = channel_stats(images)
    return ImageDataset(name="imagefolder", split=split, images=images,
                        labels=torch.tensor(labels, dtype=torch.int64), num_classes=len(classes),
                        mean=mean, std=std, augment=Augment(crop_pad=max(1, images.shape[-1] // 8), flip=True),
                        provenance={"source": str(base), "verified": None, "classes": classes})
