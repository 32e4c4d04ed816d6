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
from robquant.defaults import CHECK_TOL
from robquant.errors import ConfigError
from robquant.quant.grid import IntegerGridError, Terms, reconstruct
from robquant.quant.protocol import ActQuantizer, WeightQuantizer
from robquant.quant.storage import StoredWeights
from robquant.quant.ste import exact_float32

__all__ = ["IntegerGridError", "StoredWeights", "Terms", "integer_agreement", "integer_model", "reconstruct",
           "stored_weights", "weight_terms"]

def _weight_quantizer(layer: QuantConv2d | QuantLinear, what: str = "layer") -> WeightQuantizer:
    """The layer's weight quantizer, checked to implement the protocol.

    Raises:
        ConfigError: it does not (naming the methods it lacks).
    """
    q = layer.weight_quant
    if not isinstance(q, WeightQuantizer):
        missing = [m for m in ("bits", "integer_terms", "stored_weights") if not hasattr(q, m)]
        raise ConfigError(f"{what}: the weight quantizer {type(q).__name__} does not implement "
                          f"robquant.quant.protocol.WeightQuantizer (missing {', '.join(missing)})")
    return q


def weight_terms(layer: QuantConv2d | QuantLinear, what: str = "layer") -> Terms | None:
    """The layer's quantized weights as integer terms (the quantizer's own integer form), or None
    for full-precision weights."""
    if layer.weight_quant is None or layer.weight_quant.bits >= 32:
        return None
    q = _weight_quantizer(layer, what)
    with torch.no_grad():
        return q.integer_terms(layer.quantized_weight().float(), layer.weight, layer.frozen)


def stored_weights(layer: QuantConv2d | QuantLinear, what: str = "layer") -> StoredWeights:
    """The layer's quantized weights as the words a deployment stores (:mod:`robquant.quant.storage`):
    the quantizer's own storage where it has one (PWLQ), else one code per weight.

    Raises:
        ConfigError: full-precision weights, or codes that are not one word per weight.
    """
    terms = weight_terms(layer, what)
    if terms is None:
        raise ConfigError(f"{what}: full-precision weights store no integer words")
    return _weight_quantizer(layer, what).stored_weights(terms, layer.frozen, what)


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
        codes, scale = q.integer_codes(x)
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
        elif isinstance(module, ActQuantizer) and id(module) not in owned:
            swaps.append((name, _IntAct(module, tape)))
    for name, wrapper in swaps:
        replace_module(net, name, wrapper)
    net.double()
    for module in net.modules():
        if isinstance(module, _IntLayer) and module.terms is not None:
            module.terms = [(n.double(), s.double()) for n, s in module.terms]
            module.weight = reconstruct(module.terms)
    return IntegerModel(net, stats)


@exact_float32()  # the fake-quantized model in full float32 (no TF32 on CUDA)
def integer_agreement(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor | None = None,
                      batch_size: int = 256, threshold: float = CHECK_TOL) -> dict[str, Any]:
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
