"""Uniform quantizers: per-tensor or per-channel, symmetric or asymmetric; weights and activations."""

from __future__ import annotations

import torch
from torch import nn

from robquant.errors import ConfigError
from robquant.quant.grid import ActGrid, Terms, checked, per_channel, uniform_terms
from robquant.quant.storage import StoredWeights, affine_storage
from robquant.quant.ste import fake_quant

CALIBRATIONS = ("minmax", "topk_median")


def uniform_qparams(lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool
                    ) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Scale, zero point and integer range of a uniform grid covering [lo, hi].

    - ``lo >= 0`` everywhere (e.g. after ReLU): unsigned grid on [0, hi], levels 0..2^b-1.
    - ``symmetric``: signed grid on +-max(|lo|, |hi|), scale 2m/(2^b-1), levels -2^(b-1)..2^(b-1)-1.
    - otherwise: asymmetric grid on [lo, hi] with an integer zero point, levels 0..2^b-1.
    """
    levels = 2**bits - 1
    tiny = torch.finfo(torch.float32).tiny
    if bool((lo >= 0).all()):
        scale = (hi / levels).clamp_min(tiny)
        return scale, torch.zeros_like(scale), 0, levels
    if symmetric:
        m = torch.maximum(lo.abs(), hi.abs())
        scale = (2 * m / levels).clamp_min(tiny)
        return scale, torch.zeros_like(scale), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    scale = ((hi - lo) / levels).clamp_min(tiny)
    zero_point = torch.round(-lo / scale).clamp(0, levels)
    return scale, zero_point, 0, levels


class UniformWeightQuantizer(nn.Module):
    """Uniform weight quantizer, range from the weights' min/max (per output channel by default).

    Args:
        bits: Bit-width (32 = identity).
        per_channel: One range per output channel (dim 0), else one per tensor.
        symmetric: Signed symmetric grid (else asymmetric with a zero point).
        ste: Straight-through gradient.
    """

    def __init__(self, bits: int, per_channel: bool = True, symmetric: bool = True, ste: bool = True) -> None:
        super().__init__()
        self.bits, self.per_channel, self.symmetric, self.ste = bits, per_channel, symmetric, ste

    @property
    def storage_bits(self) -> int:
        return self.bits

    def integer_terms(self, w_q: torch.Tensor, weight: torch.Tensor, frozen: bool) -> Terms:
        """Live (QAT): this quantizer's own grid of ``weight``; frozen (stored after PTQ): the grid
        found from the stored values."""
        if frozen:
            return uniform_terms(w_q)
        scale = self.qparams(weight)[0]  # w_q / scale = code - zero point
        scale = scale.double().expand(w_q.shape[0], *([1] * (w_q.dim() - 1))).flatten()
        return checked([(torch.round(w_q.double() / per_channel(scale, w_q)), scale)], w_q, type(self).__name__)

    def stored_weights(self, terms: Terms, frozen: bool, what: str = "layer") -> StoredWeights:
        """One word per weight: the grid's codes (:func:`~robquant.quant.storage.affine_storage`)."""
        return affine_storage(terms, self.bits, what)

    def qparams(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """Scale and zero point (broadcastable to ``w``) and integer range of ``w``'s grid."""
        if self.per_channel:
            flat = w.detach().flatten(1)
            shape = (-1,) + (1,) * (w.dim() - 1)
            lo, hi = flat.min(1).values.view(shape), flat.max(1).values.view(shape)
        else:
            lo, hi = w.detach().min(), w.detach().max()
        return uniform_qparams(lo, hi, self.bits, self.symmetric)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.bits >= 32:
            return w
        scale, zp, qmin, qmax = self.qparams(w)
        return fake_quant(w, scale, zp, qmin, qmax, self.ste)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, per_channel={self.per_channel}, symmetric={self.symmetric}"


class UniformActQuant(nn.Module):
    """A calibrated uniform per-layer activation quantizer (PTQ activations).

    It either replaces a ReLU (``relu=True``: ReLU, then quantize) or quantizes a layer's input as
    it is (``relu=False``: PWLQ's placement, in front of every conv, linear and pooling layer).

    Calibration (between :meth:`start_calibration` and :meth:`finish_calibration`) passes values
    through unchanged; each batch contributes a low and a high range estimate, averaged over
    batches: ``topk_median`` takes the median of the k smallest and of the k largest values
    (PWLQ's rule, k = 10; the lower median of the k, as ``torch.median``), ``minmax`` the extremes.
    The batch size matters (the top-k of a larger batch reaches further into the tail): PWLQ's
    code uses batches of 4 images. Afterwards the grid is fixed: unsigned on [0, r_u] when
    r_l >= 0, else signed symmetric on +-max(|r_l|, r_u).

    Args:
        bits: Bit-width (32 = no quantization).
        calibration: ``topk_median`` or ``minmax``.
        symmetric: Grid used if the calibrated range includes negatives.
        ste: Straight-through gradient (False plants zero gradients, for tests).
        topk: k of ``topk_median``.
        relu: Apply a ReLU first (the quantizer replaces one).
    """

    def __init__(self, bits: int, calibration: str = "topk_median", symmetric: bool = True,
                 ste: bool = True, topk: int = 10, relu: bool = True) -> None:
        super().__init__()
        if calibration not in CALIBRATIONS:
            raise ConfigError(f"calibration must be one of {', '.join(CALIBRATIONS)}, got {calibration!r}")
        self.bits, self.calibration, self.symmetric, self.ste, self.topk = bits, calibration, symmetric, ste, topk
        self.relu = relu
        self.calibrating = False
        self.register_buffer("range_lo", torch.zeros(()))
        self.register_buffer("range_hi", torch.zeros(()))
        self.register_buffer("batches", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.relu:
            x = torch.relu(x)
        if self.bits >= 32:
            return x
        if self.calibrating:
            self._observe(x.detach())
            return x
        scale, zp, qmin, qmax = self._qparams()
        return fake_quant(x, scale, zp, qmin, qmax, self.ste)

    def integer_codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(codes, scale)`` with ``codes * scale`` this quantizer's output (codes relative to the
        zero point)."""
        scale, zp, qmin, qmax = self._qparams()
        x = torch.relu(x) if self.relu else x
        return (torch.round(x * (1.0 / scale)) + zp).clamp(qmin, qmax) - zp, scale

    def act_grid(self) -> ActGrid:
        """The frozen range's grid (after calibration)."""
        scale, zp, qmin, qmax = self._qparams()
        return ActGrid(float(scale), int(zp), qmin, qmax, relu=self.relu)

    def _qparams(self) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """The frozen range's grid, computed again only when the range changed (in place or loaded)."""
        state = (self.range_lo._version, self.range_hi._version, self.range_lo.data_ptr(), self.range_hi.data_ptr())
        cached = getattr(self, "_grid", None)
        if cached is None or cached[0] != state:
            self._grid = (state, uniform_qparams(self.range_lo, self.range_hi, self.bits, self.symmetric))
        return self._grid[1]

    @torch.no_grad()
    def _observe(self, x: torch.Tensor) -> None:
        flat = x.flatten()
        if self.calibration == "minmax":
            lo, hi = flat.min(), flat.max()
        else:
            k = min(self.topk, flat.numel())
            lo = flat.topk(k, largest=False).values.median()
            hi = flat.topk(k).values.median()
        n = self.batches.item()
        self.range_lo.mul_(n / (n + 1)).add_(lo / (n + 1))  # running mean over batches
        self.range_hi.mul_(n / (n + 1)).add_(hi / (n + 1))
        self.batches += 1

    def start_calibration(self) -> None:
        """Forget earlier statistics and observe the next batches."""
        self.range_lo.zero_()
        self.range_hi.zero_()
        self.batches.zero_()
        self.calibrating = True

    def finish_calibration(self) -> None:
        """Freeze the grid; raises if no batch was observed."""
        if self.bits < 32 and self.batches.item() == 0:
            raise RuntimeError("activation quantizer was never calibrated")
        self.calibrating = False

    def extra_repr(self) -> str:
        return f"bits={self.bits}, calibration={self.calibration}, relu={self.relu}"
