"""Integer execution of a fake-quantized model (an exact emulation in int64/float64 on the CPU).

Fake quantization computes in float32 with values that lie on integer grids. This module runs the
same network the way integer hardware would and says whether the two agree:

- every quantized weight tensor is written as integer codes times per-channel scales:
  uniform and DoReFa grids as ``W = s N + o`` (``o`` an offset, zero for symmetric grids),
  PWLQ as the sum of its centre grid, its tail grid, the tails' breakpoint and the
  bias-correction shift, each an integer tensor with its own scale (PWLQ's piecewise
  convolution);
- every quantized activation is carried as integer codes and one scale;
- a layer whose input is an activation code tensor accumulates integer products exactly
  (integer-valued float64, converted to int64), then requantises the accumulator with the
  per-channel multiplier ``s_in * s_w`` and adds the bias; the next quantized activation turns
  the result back into integer codes;
- everything between quantized layers (BatchNorm of QAT models, residual additions, pooling)
  runs in float64; a layer with its own input quantizer (PWLQ's placement) turns its input into
  codes first.

Layers whose input is not on an activation grid (the full-precision first layer, weight-only
precisions) run in float64 with their integer weights and are counted as such.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robquant.models.surgery import modes_restored, replace_module
from robquant.quant.modules import QuantConv2d, QuantLinear
from robquant.quant.pact import PACT, DoReFaWeightQuantizer
from robquant.quant.pwlq import PWLQWeightQuantizer
from robquant.quant.uniform import UniformActQuant, UniformWeightQuantizer, uniform_qparams

Terms = list[tuple[torch.Tensor, torch.Tensor]]  # (integer-valued codes like W, per-channel scale (C,))


class IntegerGridError(ValueError):
    """A weight tensor that should lie on an integer grid does not."""


def _uniform_terms(w: torch.Tensor) -> Terms:
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
        base = (values[1:] - values[:-1]).min()
        for k in range(1, 257):  # the smallest gap is a multiple of the step if levels are unused
            step = base / k
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


def _pwlq_terms(w: torch.Tensor, q: PWLQWeightQuantizer) -> Terms:
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


def _per_channel(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``v`` (C,) shaped to broadcast over dim 0 of ``like`` (C, ...)."""
    return v.view(-1, *([1] * (like.dim() - 1)))


def reconstruct(terms: Terms) -> torch.Tensor:
    """The weights the integer terms stand for: sum of codes x per-channel scale."""
    return sum(n * _per_channel(s, n) for n, s in terms)


def weight_terms(layer: QuantConv2d | QuantLinear) -> Terms | None:
    """The layer's quantized weights as integer terms, or None for full-precision weights."""
    if layer.weight_quant is None or getattr(layer.weight_quant, "bits", 32) >= 32:
        return None
    with torch.no_grad():
        w = layer.quantized_weight().float()
    q = layer.weight_quant
    if layer.frozen and isinstance(q, PWLQWeightQuantizer):
        return _pwlq_terms(w, q)
    if isinstance(q, DoReFaWeightQuantizer):  # w_q = (2/L) k - 1 per layer, k in 0..L
        levels = 2**q.bits - 1
        scale, n = 2.0 / levels, torch.round((w.double() + 1) * (levels / 2.0))
        ones = torch.ones(w.shape[0], dtype=torch.float64)
        terms = [(n, ones * scale), (torch.ones_like(n), -ones)]
    elif isinstance(q, UniformWeightQuantizer) and not layer.frozen:  # the quantizer's own grid
        scale = q.qparams(layer.weight)[0]  # w_q / scale = code - zero point
        scale = scale.double().expand(w.shape[0], *([1] * (w.dim() - 1))).flatten()
        terms = [(torch.round(w.double() / _per_channel(scale, w)), scale)]
    else:  # frozen uniform weights: the grid is found from the values
        return _uniform_terms(w)
    if bool(((reconstruct(terms) - w.double()).abs() > 1e-5 * w.double().abs().max().clamp_min(1e-12)).any()):
        raise IntegerGridError(f"{type(q).__name__} weights are not on their grid")
    return terms


class _Tape:
    """Activation tensors produced by integer activation quantizers, by identity: (codes, scale)."""

    def __init__(self) -> None:
        self.entries: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def put(self, out: torch.Tensor, codes: torch.Tensor, scale: torch.Tensor) -> None:
        self.entries[id(out)] = (out, codes, scale)

    def get(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        entry = self.entries.get(id(x))
        return (entry[1], entry[2]) if entry is not None and entry[0] is x else None


class _IntAct(nn.Module):
    """An activation quantizer that emits integer codes (kept on the tape) and their float value."""

    def __init__(self, quant: nn.Module, tape: _Tape) -> None:
        super().__init__()
        self.quant, self.tape = quant, tape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.quant
        if q.bits >= 32:
            return q(x)
        if isinstance(q, PACT):
            alpha = q.alpha.detach()
            scale = alpha / (2**q.bits - 1)
            codes = torch.round(x.clamp(min=0).clamp(max=alpha) / scale)
        else:
            scale, zp, qmin, qmax = uniform_qparams(q.range_lo, q.range_hi, q.bits, q.symmetric)
            x = torch.relu(x) if q.relu else x
            codes = (torch.round(x * (1.0 / scale)) + zp).clamp(qmin, qmax) - zp
        out = codes * scale
        self.tape.put(out, codes.to(torch.int64), scale)
        return out


class _IntLayer(nn.Module):
    """A conv/linear layer computing with integer weight terms; integer accumulation when its input
    is an activation code tensor."""

    def __init__(self, layer: QuantConv2d | QuantLinear, terms: Terms | None, tape: _Tape, stats: dict[str, int]
                 ) -> None:
        super().__init__()
        self.layer, self.tape, self.stats = layer, tape, stats
        self.input_quant = _IntAct(layer.input_quant, tape) if layer.input_quant is not None else None
        self.terms = terms
        self.weight: torch.Tensor | None = None  # float weights of the float path, set once in float64

    def _op(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if isinstance(self.layer, QuantConv2d):
            return self.layer._conv_forward(x, w, None)
        return F.linear(x, w)

    def _channel(self, v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return v.view(1, -1, *([1] * (like.dim() - 2)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_quant is not None:
            x = self.input_quant(x)
        bias = self.layer.bias
        coded = self.tape.get(x)
        if self.terms is None or coded is None:
            self.stats["float"] += 1
            y = self._op(x, self.layer.weight if self.weight is None else self.weight)
        else:
            self.stats["integer"] += 1
            codes, s_in = coded
            y = torch.zeros((), dtype=torch.float64, device=x.device)
            for n, s in self.terms:
                acc = torch.round(self._op(codes.double(), n)).to(torch.int64)  # exact integer accumulation
                y = y + acc.double() * self._channel(s * s_in, acc)  # requantisation
        return y if bias is None else y + self._channel(bias, y)


@dataclass
class IntegerModel:
    """The integer emulation of a quantized model (float64 on the CPU). Call it on [0, 1] images."""

    net: nn.Module
    stats: dict[str, int]

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.stats["integer"] = self.stats["float"] = 0
        return self.net(x.detach().to("cpu", torch.float64))


def integer_model(model: nn.Module) -> IntegerModel:
    """Build the integer emulation of ``model`` (a model from :func:`~robquant.quant.quantize`)."""
    net = copy.deepcopy(model).cpu().eval()
    tape, stats = _Tape(), {"integer": 0, "float": 0}
    swaps: list[tuple[str, nn.Module]] = []
    owned = set()  # input quantizers of conv/linear layers: their _IntLayer codes the input itself
    for name, module in net.named_modules():
        if isinstance(module, (QuantConv2d, QuantLinear)):
            swaps.append((name, _IntLayer(module, weight_terms(module), tape, stats)))
            owned.add(id(module.input_quant))
        elif isinstance(module, (UniformActQuant, PACT)) and id(module) not in owned:
            swaps.append((name, _IntAct(module, tape)))
    for name, wrapper in swaps:
        replace_module(net, name, wrapper)
    net.double()
    for module in net.modules():
        if isinstance(module, _IntLayer) and module.terms is not None:
            module.terms = [(n.double(), s.double()) for n, s in module.terms]
            module.weight = reconstruct(module.terms)
    return IntegerModel(net, stats)


def integer_agreement(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor | None = None,
                      batch_size: int = 256, threshold: float = 0.01) -> dict[str, Any]:
    """Compare ``model`` (fake quantization, as used for accuracy) with its integer execution.

    Args:
        model: A quantized model.
        x: Clean inputs in [0, 1].
        x_adv: Adversarial inputs (e.g. PGD against ``model``), optional.
        threshold: Top-1 disagreement above this fraction is flagged.

    Returns:
        ``clean_agreement`` and ``adversarial_agreement`` (top-1, fractions), ``max_logit_diff``,
        ``layers`` (how many ran with integer accumulation and how many in float), ``flag``.
    """
    emulation = integer_model(model)
    device = next(model.parameters()).device
    out: dict[str, Any] = {}
    diff = 0.0
    with modes_restored(model, training=False):
        for key, inputs in (("clean", x), ("adversarial", x_adv)):
            if inputs is None or len(inputs) == 0:
                continue
            agree = 0
            for i in range(0, len(inputs), batch_size):
                batch = inputs[i:i + batch_size]
                with torch.no_grad():
                    fq = model(batch.to(device)).double().cpu()
                ints = emulation(batch)
                agree += int((fq.argmax(1) == ints.argmax(1)).sum())
                diff = max(diff, float((fq - ints).abs().max()))
            out[f"{key}_agreement"] = agree / len(inputs)
    out["max_logit_diff"] = diff
    out["layers"] = dict(emulation.stats)
    out["threshold"] = threshold
    out["flag"] = any(out.get(f"{k}_agreement", 1.0) < 1 - threshold for k in ("clean", "adversarial"))
    return out
