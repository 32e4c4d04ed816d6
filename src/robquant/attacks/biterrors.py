"""Random bit errors in a quantized model's stored weights: its accuracy against the bit error rate.

Hardware faults (a worn or under-volted memory, radiation) flip stored bits at random. Each bit of every
word a deployment stores (:mod:`robquant.quant.storage`, the same words as the bit search of
:mod:`robquant.attacks.bitflip` flips) is flipped independently with probability ``p``, the bit error rate;
the model is then evaluated as it is. Several draws per rate give the spread a rate causes; a word flipped
back to itself is the weight as it was. The bit search is the worst case, this the typical one.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np
import torch

from robquant.attacks.bitflip import FlippableModel
from robquant.data import to_unit
from robquant.defaults import BIT_ERROR_DRAWS, BIT_ERROR_RATES
from robquant.errors import ConfigError, check_range
from robquant.progress import NULL_PROGRESS, Progress
from robquant.quant.ste import exact_float32


def error_mask(words: torch.Tensor, bits: int, p: float, generator: torch.Generator) -> tuple[torch.Tensor, int]:
    """An XOR mask for ``words`` (int64), each of their ``bits`` low bits set independently with
    probability ``p``, and how many bits it sets."""
    hits = torch.rand((words.numel(), bits), generator=generator, dtype=torch.float64) < p
    weights = torch.tensor([1 << b for b in range(bits)], dtype=torch.int64)
    return (hits.to(torch.int64) @ weights).view_as(words), int(hits.sum())


def apply_bit_errors(fm: FlippableModel, p: float, generator: torch.Generator) -> int:
    """Reset ``fm`` to its stored words, flip each stored bit with probability ``p`` and write the weights
    the words decode to (an unchanged word keeps its weight exactly). Returns how many bits it flipped."""
    check_range("bit error rate", p, 0.0, 1.0)
    fm.reset()
    flipped = 0
    with torch.no_grad():
        for m, store in fm.layers.values():
            mask, count = error_mask(store.words, store.bits, p, generator)
            if count == 0:
                continue
            flipped += count
            changed = mask != 0
            store.words ^= mask
            decoded = store.decode(store.words).to(m.weight.dtype).view_as(m.weight)
            m.weight.copy_(torch.where(changed.view_as(m.weight), decoded, m.weight))
    return flipped


def _correct(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]
                          for i in range(0, len(x), batch_size)]).cpu()


@exact_float32()
def bit_error_evaluation(model: torch.nn.Module, dataset: Any, *, n: int | None = None,
                         rates: Sequence[float] = BIT_ERROR_RATES, draws: int = BIT_ERROR_DRAWS, seed: int = 0,
                         batch_size: int = 256, device: torch.device | str = "cpu",
                         progress: Progress = NULL_PROGRESS) -> tuple[dict[str, Any], np.ndarray]:
    """Accuracy of ``model`` on its first ``n`` test examples with random bit errors at each rate, ``draws``
    independent draws per rate (seeded by ``seed``).

    Returns:
        The result (``rates``, ``draws``, ``n``, ``total_bits``, ``clean_accuracy`` without errors,
        ``accuracy`` and ``flipped`` per rate and draw, ``seed``, ``seconds``) and the per-example evidence,
        ``(rates, draws, n)`` bool: correct or not.

    Raises:
        ConfigError: no rate, a rate outside [0, 1], no draw, no example, or a model without quantized weights.
    """
    t0 = time.perf_counter()
    rates = [float(check_range("bit_errors rates", r, 0.0, 1.0)) for r in rates]
    if not rates:
        raise ConfigError("bit_errors rates must name at least one rate")
    check_range("bit_errors draws", draws, 1)
    device = torch.device(device)
    held = dataset.head(n)
    if len(held) == 0:
        raise ConfigError("bit errors need at least one test example")
    x, y = to_unit(held.images).to(device), held.labels.to(device)
    fm = FlippableModel(model.to(device))
    clean = _correct(fm.model, x, y, batch_size)
    correct = np.zeros((len(rates), draws, len(held)), dtype=bool)
    flipped = np.zeros((len(rates), draws), dtype=np.int64)
    generator = torch.Generator().manual_seed(seed)
    with progress.task("bit errors", total=len(rates) * draws) as task:
        for i, p in enumerate(rates):
            for d in range(draws):
                flipped[i, d] = apply_bit_errors(fm, p, generator)
                correct[i, d] = _correct(fm.model, x, y, batch_size).numpy()
                task.advance()
    fm.reset()
    result = {"rates": rates, "draws": draws, "n": len(held), "total_bits": fm.total_bits, "seed": seed,
              "clean_accuracy": float(clean.double().mean()),
              "accuracy": correct.mean(2).tolist(), "flipped": flipped.tolist(),
              "seconds": time.perf_counter() - t0}
    return result, correct


__all__ = ["apply_bit_errors", "bit_error_evaluation", "error_mask"]
