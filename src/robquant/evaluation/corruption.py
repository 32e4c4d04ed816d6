"""A model's accuracy on naturally corrupted test images (:mod:`robquant.data.corruptions`), per
corruption and severity, with the per-example evidence."""

from __future__ import annotations

import hashlib
import time
from typing import Any, Sequence

import numpy as np
import torch

from robquant.data import to_unit
from robquant.data.corruptions import corrupted
from robquant.progress import NULL_PROGRESS


def corruption_evaluation(model: Any, dataset: Any, *, n: int | None, names: Sequence[str],
                          severities: Sequence[int], seed: int = 0, batch_size: int = 256, device: Any = "cpu",
                          progress: Any = None) -> tuple[dict[str, Any], np.ndarray]:
    """Clean accuracy of ``model`` on the first ``n`` test examples under each corruption and severity.

    Returns:
        The result (``names``, ``severities``, ``n``, ``clean_accuracy``, ``accuracy`` per corruption and
        severity, each corrupted set's ``sha256``, ``seed``, ``seconds``) and the per-example evidence,
        ``(names, severities, n)`` bool: correct or not.
    """
    t0 = time.perf_counter()
    progress = progress or NULL_PROGRESS
    held = dataset.head(n)
    labels = held.labels.to(device)
    model = model.to(device).eval()

    def correct_on(pixels: np.ndarray) -> np.ndarray:
        x = to_unit(torch.from_numpy(pixels))
        with torch.no_grad():
            return torch.cat([model(x[i:i + batch_size].to(device)).argmax(1) == labels[i:i + batch_size]
                              for i in range(0, len(x), batch_size)]).cpu().numpy()

    clean = correct_on(held.images.cpu().numpy())
    correct = np.zeros((len(names), len(severities), len(held)), dtype=bool)
    digests: dict[str, list[str]] = {}
    with progress.task("corruptions", total=len(names) * len(severities)) as task:
        for i, name in enumerate(names):
            for j, severity in enumerate(severities):
                pixels = corrupted(held, name, severity, seed)
                digests.setdefault(name, []).append(hashlib.sha256(pixels.tobytes()).hexdigest())
                correct[i, j] = correct_on(pixels)
                task.advance()
    result = {"names": list(names), "severities": list(severities), "n": len(held), "seed": seed,
              "clean_accuracy": float(clean.mean()),
              "accuracy": {name: correct[i].mean(1).tolist() for i, name in enumerate(names)},
              "sha256": digests, "seconds": time.perf_counter() - t0}
    return result, correct


__all__ = ["corruption_evaluation"]
