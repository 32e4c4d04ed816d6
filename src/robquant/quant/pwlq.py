"""Piecewise linear quantization of weights (Fang et al., ECCV 2020), per output channel.

Each channel's range [-m, m] (m = max|w|) is split at a breakpoint p into a centre [-p, p],
quantized on a signed symmetric b-bit grid (scale 2p/(2^b - 1)), and two tails [p, m] and
[-m, -p], each on an unsigned (b-1)-bit grid with offset p (scale (m - p)/(2^(b-1) - 1)).
Compute is b-bit; storage is b + 1 bits (one region bit per weight).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from robquant.errors import ConfigError
from robquant.quant.grid import IntegerGridError, Terms, uniform_terms
from robquant.quant.storage import StoredWeights, affine_storage, pwlq_storage

BREAKPOINTS = ("gauss", "laplace", "exact", "search")


def breakpoint_gauss(m: torch.Tensor) -> torch.Tensor:
    """Closed-form optimal breakpoint for Gaussian weights, in std units: ln(0.8614 m + 0.6079)."""
    return torch.log(0.86143114 * m + 0.607901097496529)


def breakpoint_laplace(m: torch.Tensor) -> torch.Tensor:
    """Closed-form optimal breakpoint for Laplacian weights, in std units: 0.8030 sqrt(m) - 0.3167."""
    return 0.80304483 * torch.sqrt(m) - 0.3166785508381478


def _expected_error_slope(p: float, m: float) -> float:
    """dE/dp of the expected squared error for a standard Gaussian (non-overlapping PWLQ)."""
    cdf = 0.5 * (1 + math.erf(p / math.sqrt(2)))
    pdf = math.exp(-0.5 * p * p) / math.sqrt(2 * math.pi)
    return p - 2 * m + 2 * m * cdf + m * (2 * p - m) * pdf


def breakpoint_exact(m: float, tol: float = 1e-9, max_iter: int = 200) -> float:
    """Root of dE/dp = p - 2m + 2mF(p) + m(2p - m)f(p) on (0, m) by bisection (std units)."""
    lo, hi = 0.0, float(m)
    f_lo = _expected_error_slope(lo, m)
    for _ in range(max_iter):
        mid = 0.5 * (lo + hi)
        f_mid = _expected_error_slope(mid, m)
        if f_mid * f_lo > 0:
            lo, f_lo = mid, f_mid
        else:
            hi = mid
        if hi - lo < tol:
            break
    return 0.5 * (lo + hi)


def pwlq_grid(w: torch.Tensor, p: torch.Tensor, m: torch.Tensor, bits: int) -> torch.Tensor:
    """Quantize rows of ``w`` (C, K) with breakpoints ``p`` and ranges ``m`` (C, 1) onto the PWLQ grid."""
    tiny = torch.finfo(w.dtype).tiny
    s_centre = (2 * p / (2**bits - 1)).clamp_min(tiny)
    centre = torch.round(w / s_centre).clamp(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) * s_centre
    tail_levels = 2 ** (bits - 1) - 1
    s_tail = ((m - p) / tail_levels).clamp_min(tiny)
    tail = torch.sign(w) * (p + torch.round((w.abs() - p) / s_tail).clamp(0, tail_levels) * s_tail)
    return torch.where(w.abs() < p, centre, tail)


def _search_breakpoints(w: torch.Tensor, m: torch.Tensor, bits: int) -> torch.Tensor:
    """Coarse-to-fine grid over p/m (0.1 steps, then 0.01, then 0.001) minimising each row's L2 error."""
    best = torch.full_like(m, 0.5)
    for step, ratios in ((0.1, torch.arange(1, 10) * 0.1), (0.01, None), (0.001, None)):
        if ratios is None:
            ratios = torch.arange(-10, 11) * step  # offsets around the best so far
            cand = (best + ratios.to(w)).clamp(step, 1 - step)  # (C, R)
        else:
            cand = ratios.to(w).expand(len(w), -1)
        errs = torch.stack([(pwlq_grid(w, cand[:, j:j + 1] * m, m, bits) - w).pow(2).sum(1)
                            for j in range(cand.shape[1])], 1)  # (C, R)
        best = cand.gather(1, errs.argmin(1, keepdim=True))
    return best * m


class PWLQWeightQuantizer(nn.Module):
    """PWLQ for a layer's weights, one breakpoint per output channel.

    The per-channel breakpoint, range, and bias-correction shift and scale are kept as buffers
    (recorded and saved with the model).

    Args:
        channels: Output channels of the layer.
        bits: Compute bit-width b (storage is b + 1).
        breakpoint: ``gauss`` (closed form, default), ``laplace``, ``exact`` (bisection) or
            ``search`` (grid search on the actual weights).
        bias_correction: Match each channel's mean and std after quantization:
            ``w_q <- (w_q + mean(w) - mean(w_q)) * std(w) / std(w_q)``.
    """

    def __init__(self, channels: int, bits: int, breakpoint: str = "gauss", bias_correction: bool = True) -> None:
        super().__init__()
        if breakpoint not in BREAKPOINTS:
            raise ConfigError(f"breakpoint must be one of {', '.join(BREAKPOINTS)}, got {breakpoint!r}")
        if bits < 2:
            raise ConfigError(f"PWLQ needs at least 2 bits, got {bits}")
        self.bits, self.breakpoint, self.bias_correction = bits, breakpoint, bias_correction
        for name in ("p", "m", "shift", "ratio"):
            self.register_buffer(name, torch.zeros(channels))

    def integer_terms(self, w_q: torch.Tensor, weight: torch.Tensor, frozen: bool) -> Terms:
        """Frozen (after PTQ): centre codes, signed tail codes, tail sign and the bias-correction
        shift, each with its per-channel scale; live: the grid found from the values."""
        return pwlq_terms(w_q, self) if frozen else uniform_terms(w_q)

    @property
    def storage_bits(self) -> int:
        return self.bits + 1

    def stored_weights(self, terms: Terms, frozen: bool, what: str = "PWLQ") -> StoredWeights:
        """The words a deployment stores (see :mod:`robquant.quant.storage`): frozen, a region bit above
        each weight's code (``bits + 1`` wide); live, the uniform grid's codes."""
        return pwlq_storage(terms, self.bits) if frozen else affine_storage(terms, self.bits, f"{what} (PWLQ, live)")

    def breakpoints(self, w: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """Breakpoints (C, 1) for rows of ``w`` (C, K) with ranges ``m`` (C, 1)."""
        if self.breakpoint == "search":
            return _search_breakpoints(w, m, self.bits)
        sigma = w.std(1, keepdim=True) + 1e-12
        m_t = m / sigma
        if self.breakpoint == "gauss":
            p_t = breakpoint_gauss(m_t)
        elif self.breakpoint == "laplace":
            p_t = breakpoint_laplace(m_t)
        else:
            p_t = torch.tensor([[breakpoint_exact(v)] for v in m_t.flatten().tolist()], dtype=w.dtype, device=w.device)
        # a breakpoint lies strictly inside (0, m/2]
        return (p_t * sigma).clamp(min=1e-6 * m, max=m / 2)

    @torch.no_grad()
    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """Quantize ``w`` (C, ...) and record the per-channel parameters; returns w's shape."""
        rows = w.flatten(1)  # (C, K)
        m = rows.abs().max(1, keepdim=True).values.clamp_min(1e-12)
        p = self.breakpoints(rows, m)
        q = pwlq_grid(rows, p, m, self.bits)
        shift, ratio = torch.zeros_like(m), torch.ones_like(m)
        if self.bias_correction and rows.shape[1] > 1:
            shift = rows.mean(1, keepdim=True) - q.mean(1, keepdim=True)
            ratio = rows.std(1, keepdim=True) / (q.std(1, keepdim=True) + 1e-12)
            q = (q + shift) * ratio
        for name, value in (("p", p), ("m", m), ("shift", shift), ("ratio", ratio)):
            getattr(self, name).copy_(value.flatten())
        return q.view_as(w)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, breakpoint={self.breakpoint}, bias_correction={self.bias_correction}"


def pwlq_terms(w: torch.Tensor, q: PWLQWeightQuantizer) -> Terms:
    """Frozen PWLQ weights as four integer tensors: centre codes, signed tail codes, tail sign, ones."""
    rows = w.detach().double().flatten(1)
    p, m = q.p.double().view(-1, 1), q.m.double().view(-1, 1)
    shift, ratio = q.shift.double().view(-1, 1), q.ratio.double().view(-1, 1)
    grid = rows / ratio - shift
    s_c = 2 * p / (2**q.bits - 1)
    tail_levels = 2 ** (q.bits - 1) - 1
    s_t = (m - p) / tail_levels
    n_c = torch.round(grid / s_c).clamp(-(2 ** (q.bits - 1)), 2 ** (q.bits - 1) - 1)
    n_t = torch.round((grid.abs() - p) / s_t).clamp(0, tail_levels)
    sign = torch.sign(grid)
    err_c = (n_c * s_c - grid).abs()
    err_t = (sign * (p + n_t * s_t) - grid).abs()
    tail = (err_t < err_c).double()
    terms = [(n_c * (1 - tail), ratio * s_c), (sign * n_t * tail, ratio * s_t), (sign * tail, ratio * p),
             (torch.ones_like(grid), ratio * shift)]
    recon = sum(n * s for n, s in terms)
    if bool(((recon - rows).abs() > 1e-4 * rows.abs().amax(1, keepdim=True).clamp_min(1e-12)).any()):
        raise IntegerGridError("PWLQ weights do not match their recorded breakpoints")
    return [(n.view_as(w), s.flatten()) for n, s in terms]
