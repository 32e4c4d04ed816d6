"""Shared helpers of the benchmarks: argument parsing, side-by-side timing, CIFAR-sized data."""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch

from robquant.data import Augment, ImageDataset, create_dataset


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser with --device and --repeats."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=3)
    return p


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall time of ``fn()``, synchronising the GPU before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def side_by_side(fns: dict[str, Callable[[], object]], device: torch.device, repeats: int) -> dict[str, float]:
    """Median seconds of each function after one warm-up, runs interleaved so that drifts in
    machine load hit all of them alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(timed(fn, device))
    return {name: statistics.median(t) for name, t in times.items()}


def cifar_sized(n: int) -> ImageDataset:
    """Synthetic 32x32 RGB training data with CIFAR's augmentation (crop pad 4, flip)."""
    data = create_dataset("synthetic", n_train=n, image_size=32, channels=3)
    data.augment = Augment(crop_pad=4, flip=True)
    return data
