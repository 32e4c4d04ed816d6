"""PACT activations and DoReFa weights (the QAT pair of the paper, Choi et al. 2018; Zhou et al. 2016)."""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd import Function

from robquant.quant.grid import ActGrid, Terms, checked
from robquant.quant.storage import StoredWeights, affine_storage
from robquant.quant.ste import round_ste


class _PACTFn(Function):
    """y_q = round(clip(x, 0, a) (2^k - 1) / a) a / (2^k - 1), with PACT's gradient rule:
    dy_q/dx = 1[0 <= x < a], dy_q/da = 1[x >= a]."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: torch.Tensor, bits: int) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, alpha)
        step = alpha / (2**bits - 1)
        return x.clamp(min=0).clamp_(max=alpha).div_(step).round_().mul_(step)  # few kernels: small
        # models on a GPU are bound by launches, not arithmetic

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        # ReLU's and hardtanh's own backward kernels (one pass each), the rule's closed ends as open ones at
        # the neighbouring float: 0 <= x  <=>  x > the largest float below 0, x >= a  <=>  x > the one below
        # a. A product with a bool mask is several times slower on the CPU. The gradient takes the input's
        # layout: a contiguous one (from the pooling) would make every batch norm's backward below it slow.
        x, alpha = ctx.saved_tensors
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            grad = grad.contiguous(memory_format=torch.channels_last)
        zero = torch.zeros((), dtype=x.dtype)
        below_zero = float(torch.nextafter(zero, zero - 1))
        below_alpha = float(torch.nextafter(alpha.detach(), alpha.detach() - 1))
        grad_x = torch.ops.aten.hardtanh_backward(grad, x, below_zero, float(alpha))  # 1[0 <= x < a]
        grad_alpha = torch.ops.aten.threshold_backward(grad, x, below_alpha).sum()  # 1[x >= a]
        return grad_x, grad_alpha.view_as(alpha).to(alpha.dtype), None


class PACT(nn.Module):
    """Parameterised clipping activation: replaces a ReLU; alpha is learned, one per layer.

    alpha is an ordinary parameter, so the optimizer's weight decay regularises it (as PACT's L2
    term on alpha with the weight-decay coefficient).

    alpha's start: PACT's from-scratch value (10) suits training from random parameters. Fine-tuned
    from a trained model, BN-normalised activations almost never reach 10, so alpha's gradient
    1[x >= alpha] is almost always zero and alpha never moves: then set it from the data with
    :meth:`start_calibration` / :meth:`finish_calibration`, which put alpha at the ``percentile``-th
    percentile of the layer's ReLU outputs (per calibration batch, averaged over batches).

    Args:
        bits: Bit-width k (32 = a plain ReLU: nothing clipped or rounded).
        alpha: Initial clipping level (10).
        ste: Use PACT's gradient rule; False plants zero input gradients (plain rounding), for tests.
        percentile: Where calibration puts alpha (99.9).
    """

    relu = True  # it clips at 0 from below: a ReLU at any bit-width

    def __init__(self, bits: int, alpha: float = 10.0, ste: bool = True, percentile: float = 99.9) -> None:
        super().__init__()
        self.bits, self.ste, self.percentile = bits, ste, float(percentile)
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))
        self.calibrating = False
        self._observed: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bits >= 32:
            return torch.relu(x)
        if self.calibrating:
            y = torch.relu(x)
            self._observe(y.detach())
            return y
        if self.ste:
            return _PACTFn.apply(x, self.alpha, self.bits)
        levels = 2**self.bits - 1
        y = torch.minimum(torch.relu(x), self.alpha)
        return torch.round(y * (levels / self.alpha)) * (self.alpha / levels)

    def integer_codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(codes, scale)`` with ``codes * scale`` this layer's output: codes 0..2^bits - 1."""
        alpha = self.alpha.detach()
        scale = alpha / (2**self.bits - 1)
        return torch.round(x.clamp(min=0).clamp(max=alpha) / scale), scale

    def act_grid(self) -> ActGrid:
        """The grid of this layer's output: 0..2^bits - 1 steps of alpha / (2^bits - 1)."""
        levels = 2**self.bits - 1
        return ActGrid(float(self.alpha.detach() / levels), 0, 0, levels, relu=True)

    @torch.no_grad()
    def _observe(self, y: torch.Tensor) -> None:
        flat = y.flatten()
        rank = max(1, min(flat.numel(), round(self.percentile / 100 * flat.numel())))
        self._observed.append(flat.float().kthvalue(rank).values)

    def start_calibration(self) -> None:
        """Observe the next batches (the layer acts as a plain ReLU meanwhile)."""
        self._observed = []
        self.calibrating = True

    @torch.no_grad()
    def finish_calibration(self) -> None:
        """Set alpha to the mean over batches of the per-batch percentile (at least 1e-3, so that a
        layer that never fired keeps a usable grid); raises if no batch was observed."""
        self.calibrating = False
        if self.bits >= 32:
            return
        if not self._observed:
            raise RuntimeError("PACT was never calibrated")
        self.alpha.fill_(max(float(torch.stack(self._observed).mean()), 1e-3))
        self._observed = []

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class _DoReFaFn(Function):
    """DoReFa forward; backward = autograd's through tanh and max|tanh w|, with STE on the rounding,
    written out so that a QAT step launches a handful of kernels per layer instead of dozens."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, bits: int) -> torch.Tensor:  # type: ignore[override]
        levels = 2**bits - 1
        t = torch.tanh(w)
        peak, idx = t.abs().flatten().max(0)
        peak = peak.clamp_min(1e-12)
        ctx.save_for_backward(t, peak, idx)
        r = t.div(peak).mul_(0.5).add_(0.5)  # in [0, 1]
        return r.mul_(levels).round_().mul_(2.0 / levels).sub_(1.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        t, peak, idx = ctx.saved_tensors
        # w_q = 2 round(L r) / L - 1 with r = t / (2 peak) + 1/2; straight-through on round:
        # dw_q/dt = 1 / peak, dw_q/dpeak = -t / peak^2, dpeak/dt = sign(t) at the argmax only
        grad_t = (grad / peak).contiguous()  # idx is a position in logical order, whatever w's layout
        grad_peak = -(grad * t).sum() / (peak * peak)
        flat = grad_t.view(-1)
        flat[idx] += grad_peak * torch.sign(t.reshape(-1)[idx])
        return grad_t.mul_(1 - t * t), None


def dorefa_reference(w: torch.Tensor, bits: int, ste: bool = True) -> torch.Tensor:
    """DoReFa written with plain autograd ops (the oracle for :class:`_DoReFaFn`)."""
    levels = 2**bits - 1
    t = torch.tanh(w)
    r = t / (2 * t.abs().max().clamp_min(1e-12)) + 0.5  # in [0, 1]
    return 2 * (round_ste(r * levels, ste) / levels) - 1


class DoReFaWeightQuantizer(nn.Module):
    """DoReFa weights, per layer: w_q = 2 Q_k(tanh(w) / (2 max|tanh w|) + 1/2) - 1, STE on the rounding.

    Args:
        bits: Bit-width k (32 = identity).
        ste: Straight-through rounding (False: zero gradient).
    """

    def __init__(self, bits: int, ste: bool = True) -> None:
        super().__init__()
        self.bits, self.ste = bits, ste

    @property
    def storage_bits(self) -> int:
        return self.bits

    def integer_terms(self, w_q: torch.Tensor, weight: torch.Tensor, frozen: bool) -> Terms:
        """``w_q = (2 / L) k - 1`` per layer, k in 0..L (L = 2^bits - 1)."""
        levels = 2**self.bits - 1
        scale, n = 2.0 / levels, torch.round((w_q.double() + 1) * (levels / 2.0))
        ones = torch.ones(w_q.shape[0], dtype=torch.float64)
        return checked([(n, ones * scale), (torch.ones_like(n), -ones)], w_q, type(self).__name__)

    def stored_weights(self, terms: Terms, frozen: bool, what: str = "layer") -> StoredWeights:
        """One word per weight: the grid's codes (:func:`~robquant.quant.storage.affine_storage`)."""
        return affine_storage(terms, self.bits, what)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.bits >= 32:
            return w
        if self.ste:
            return _DoReFaFn.apply(w, self.bits)
        return dorefa_reference(w, self.bits, ste=False)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"
