"""Integer forms of quantized tensors, shared by the quantizers (each gives its own) and the
integer execution (:mod:`robquant.quant.integer`): weights as sums of integer codes times
per-channel scales."""

from __future__ import annotations

from dataclasses import dataclass

import torch

Terms = list[tuple[torch.Tensor, torch.Tensor]]  # (integer-valued codes like W, per-channel scale (C,))


@dataclass(frozen=True)
class ActGrid:
    """A per-tensor activation grid, as an activation quantizer applies it:
    ``y = (clamp(round(x / scale) + zero_point, qmin, qmax) - zero_point) * scale``, after a ReLU
    when ``relu``. What an export writes as one QuantizeLinear/DequantizeLinear pair."""

    scale: float
    zero_point: int
    qmin: int
    qmax: int
    relu: bool

    @property
    def bounds(self) -> tuple[float, float]:
        """The smallest and largest values the grid represents."""
        return (self.qmin - self.zero_point) * self.scale, (self.qmax - self.zero_point) * self.scale


class IntegerGridError(ValueError):
    """A weight tensor that should lie on an integer grid does not."""


def per_channel(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``v`` (C,) shaped to broadcast over dim 0 of ``like`` (C, ...)."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def reconstruct(terms: Terms) -> torch.Tensor:
    """The weights the integer terms stand for: sum of codes x per-channel scale."""
    return sum(n * per_channel(s, n) for n, s in terms)


def checked(terms: Terms, w: torch.Tensor, what: str, tol: float = 1e-5) -> Terms:
    """``terms`` if they reconstruct ``w`` (relative to its largest magnitude), else IntegerGridError."""
    w = w.double()
    if bool(((reconstruct(terms) - w).abs() > tol * w.abs().max().clamp_min(1e-12)).any()):
        raise IntegerGridError(f"{what} weights are not on their grid")
    return terms


def uniform_terms(w: torch.Tensor) -> Terms:
    """``w`` (C, ...) as ``s N + o`` per channel, N integer; the step is found from the values."""
    rows = w.detach().double().flatten(1)
    scales, offsets, codes = [], [], []
    for row in rows:
        values = torch.unique(row)
        lo = values[0]
        if len(values) == 1:
            scales.append(torch.ones((), dtype=torch.float64))
            offsets.append(lo)
            codes.append(torch.zeros_like(row))
            continue
        # values a rounding apart (a level written once by float32 fake quantization and once from its
        # code in float64, as a bit flip writes it) are one level: gaps below 1e-6 of the range are none
        gaps = values[1:] - values[:-1]
        base = gaps[gaps > 1e-6 * (values[-1] - lo)].min()
        for k in range(1, 257):  # the smallest gap is a multiple of the step if levels are unused
            step = base / k
            n = torch.round((row - lo) / step)
            # one gap carries the float32 rounding of two stored values, which n up to 2^8 - 1
            # multiplies: the step is taken again from the whole range before it is checked
            step = (values[-1] - lo) / n.max()
            n = torch.round((row - lo) / step)
            if bool(((lo + n * step - row).abs() <= 1e-3 * step).all()):
                break
        else:
            raise IntegerGridError("weights are not on a uniform grid")
        scales.append(step)
        offsets.append(lo)
        codes.append(n)
    shape = w.shape
    n = torch.stack(codes).view(shape)
    return [(n, torch.stack(scales)), (torch.ones_like(n), torch.stack(offsets))]
