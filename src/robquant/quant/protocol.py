"""The quantizer protocols: what a weight or an activation quantizer gives the rest of robquant. The integer
execution (:mod:`robquant.quant.integer`), the ONNX export (:mod:`robquant.deploy.export`) and the bit flips
(:mod:`robquant.attacks.bitflip`) call these methods and nothing else; a quantizer registered by a user
(:data:`~robquant.quant.config.WEIGHT_QUANTIZERS`, :data:`~robquant.quant.config.ACT_QUANTIZERS`) that
implements them is exported, run in integers and flipped like robquant's own.

- A **weight quantizer** maps a layer's weight to its quantized value (``forward``), gives those values as
  integer terms (``integer_terms``: codes times per-channel scales, :mod:`robquant.quant.grid`) and the words a
  deployment stores (``stored_weights``, :mod:`robquant.quant.storage`).
- An **activation quantizer** maps a tensor to its quantized value (``forward``, after a ReLU when ``relu``),
  gives integer codes and their scale (``integer_codes``) and its grid (``act_grid``, what an export writes).

Both carry ``bits`` (32 or more: full precision). Calibration is each method's (PTQ reads activation
ranges through the quantizers' own statistics, :func:`robquant.quant.quantize`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from robquant.quant.grid import ActGrid, Terms
from robquant.quant.storage import StoredWeights


@runtime_checkable
class WeightQuantizer(Protocol):
    bits: int

    def __call__(self, w: torch.Tensor) -> torch.Tensor: ...

    def integer_terms(self, w_q: torch.Tensor, weight: torch.Tensor, frozen: bool) -> Terms:
        """The quantized weights ``w_q`` (of the float ``weight``) as integer terms; ``frozen``: after PTQ
        (its parameters fixed) rather than live in QAT."""
        ...

    def stored_weights(self, terms: Terms, frozen: bool, what: str) -> StoredWeights:
        """The words a deployment stores for ``terms`` (``what`` names the layer in errors)."""
        ...


@runtime_checkable
class ActQuantizer(Protocol):
    bits: int
    relu: bool

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def integer_codes(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` quantized as integer codes and their scale."""
        ...

    def act_grid(self) -> ActGrid:
        """The grid it applies (one QuantizeLinear/DequantizeLinear pair in an export)."""
        ...
