"""Quantized layer wrappers: a conv or linear layer that quantizes its weights with a quantizer module
(and, in PWLQ's activation placement, its input with another); a wrapper that quantizes the input
of any other layer (pooling)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _QuantWeight:
    """Mixin: the weights a quantized layer computes with."""

    weight: torch.Tensor
    weight_quant: nn.Module | None
    input_quant: nn.Module | None
    frozen: bool

    def quantized_input(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.input_quant is None else self.input_quant(x)

    def quantized_weight(self) -> torch.Tensor:
        if self.weight_quant is None or self.frozen:
            return self.weight
        return self.weight_quant(self.weight)

    @property
    def quantizes_live(self) -> bool:
        """Whether the weights are quantized on every forward pass (QAT), not stored quantized."""
        return self.weight_quant is not None and not self.frozen

    def freeze(self) -> None:
        """Quantize the weights once, store them, and compute with the stored ones from now on (as
        after PTQ): the same function, without a quantizer call per forward pass."""
        if self.quantizes_live:
            with torch.no_grad():
                self.weight.copy_(self.weight_quant(self.weight))
            self.frozen = True


class QuantConv2d(_QuantWeight, nn.Conv2d):
    """A Conv2d whose weights pass through ``weight_quant`` (None = full precision) and whose
    input passes through ``input_quant`` (None = as it comes).

    With ``frozen=True`` (post-training quantization) the stored weights are already quantized
    and are used as they are; otherwise (QAT) they are quantized on every forward pass, with the
    quantizer's straight-through gradient.
    """

    def __init__(self, conv: nn.Conv2d, weight_quant: nn.Module | None, frozen: bool = False,
                 input_quant: nn.Module | None = None) -> None:
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                         conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
                         device=conv.weight.device, dtype=conv.weight.dtype)
        self.load_state_dict(conv.state_dict())
        self.weight_quant = weight_quant
        self.input_quant = input_quant
        self.frozen = frozen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.quantized_input(x), self.quantized_weight(), self.bias)


class QuantLinear(_QuantWeight, nn.Linear):
    """A Linear layer whose weights pass through ``weight_quant`` (see :class:`QuantConv2d`)."""

    def __init__(self, linear: nn.Linear, weight_quant: nn.Module | None, frozen: bool = False,
                 input_quant: nn.Module | None = None) -> None:
        super().__init__(linear.in_features, linear.out_features, linear.bias is not None,
                         device=linear.weight.device, dtype=linear.weight.dtype)
        self.load_state_dict(linear.state_dict())
        self.weight_quant = weight_quant
        self.input_quant = input_quant
        self.frozen = frozen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.quantized_input(x), self.quantized_weight(), self.bias)


class QuantInput(nn.Module):
    """Any layer (a pooling layer) whose input passes through ``input_quant`` first."""

    def __init__(self, layer: nn.Module, input_quant: nn.Module) -> None:
        super().__init__()
        self.layer, self.input_quant = layer, input_quant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(self.input_quant(x))
