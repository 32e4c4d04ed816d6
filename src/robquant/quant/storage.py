"""Quantized weights as the words a deployment stores: one ``bits``-wide integer word per weight,
and the rule that turns words back into weights. What a bit-flip attack flips
(:mod:`robquant.attacks.bitflip`): any word of the field decodes to a weight the layer can hold,
so a flipped model is still a valid integer model (it exports like the original).

- One integer code per weight (uniform, DoReFa: ``W = s N + o`` per output channel): the grid's
  own code, as the ONNX export writes it: a ``bits``-bit two's-complement field for grids through
  zero (the int8 the export writes, at 8 bits), else the level as an unsigned field
  (:func:`affine_storage`).
- PWLQ (frozen after PTQ): a region bit above a ``bits``-bit code: the centre grid's code in two's
  complement, or the tail's sign and level (sign-magnitude: ``bits - 1`` bits of level), so a word
  is ``bits + 1`` wide, as PWLQ's storage (:attr:`~robquant.quant.pwlq.PWLQWeightQuantizer.storage_bits`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from robquant.errors import ConfigError
from robquant.quant.grid import Terms, per_channel


def _twos(words: torch.Tensor, bits: int) -> torch.Tensor:
    """A ``bits``-bit two's-complement field as signed integers."""
    return torch.where(words >= 2 ** (bits - 1), words - 2**bits, words)


@dataclass
class StoredWeights:
    """A layer's weights as stored words: ``words`` (int64, the weight's shape) each ``bits`` wide,
    ``decode(words)`` the weights they stand for (float64, the weight's shape); ``signed``: the words
    are two's-complement codes (else unsigned levels)."""

    words: torch.Tensor
    bits: int
    decode: Callable[[torch.Tensor], torch.Tensor]
    signed: bool = False

    @property
    def top(self) -> int:
        """The largest word of the field."""
        return 2**self.bits - 1

    def weights(self) -> torch.Tensor:
        return self.decode(self.words)

    def codes(self) -> torch.Tensor:
        """The integers the words hold: two's complement read as signed where ``signed``."""
        return _twos(self.words, self.bits) if self.signed else self.words.clone()


def affine_storage(terms: Terms, bits: int, what: str) -> StoredWeights:
    """Words of a layer whose weights are one integer code per weight plus per-channel constants
    (``terms``: one varying tensor and constant ones, as uniform and DoReFa quantizers give them).

    The words are the grid's own codes, as the ONNX export writes them (:mod:`robquant.deploy.export`):

    - a grid through zero (the per-channel offset a whole number of steps, as uniform symmetric
      grids): ``W = s c`` with ``c`` in ``-2^(b-1) .. 2^(b-1) - 1`` stored as a ``b``-bit two's-complement
      word (at 8 bits exactly the int8 the export writes; below, its low ``b`` bits);
    - otherwise (DoReFa's ``W = (2/L) k - 1``, asymmetric grids): the level ``k`` in ``0 .. 2^b - 1``
      as an unsigned word with the per-channel offset beside it (DoReFa: every word is one of the
      grid's ``2^b`` levels; the export writes ``2k - L`` as int8, which a flip of bit ``j`` of ``k``
      moves by ``2^(j+1)``).

    Every word of the field decodes onto the layer's grid. A channel whose weights are all equal
    keeps its value as its offset with code 0 and takes the coarsest step of the layer's other
    channels, so a flip moves it no further than a flip elsewhere in the layer.

    Raises:
        ConfigError: the terms hold more than one code per weight, or codes beyond ``bits`` bits.
    """
    def varies(n: torch.Tensor) -> bool:
        rows = n.flatten(1)
        return bool((rows != rows[:, :1]).any())

    varying = [(n, s) for n, s in terms if varies(n)]
    if len(varying) > 1:
        raise ConfigError(f"{what}: weights stored as {len(varying)} integer codes each have no one word to flip")
    codes, scale = varying[0] if varying else (torch.zeros_like(terms[0][0]), torch.ones_like(terms[0][1]))
    shape, scale = codes.shape, scale.double().clone()
    rows = codes.double().flatten(1).clone()
    offset = sum((n.flatten(1)[:, 0].double() * s.double() for n, s in terms if not varies(n)),
                 torch.zeros_like(scale))
    constant = (rows == rows[:, :1]).all(1)  # every weight of the channel equal: its value is the offset
    offset = offset + torch.where(constant, rows[:, 0] * scale, torch.zeros_like(scale))
    rows[constant] = 0
    # an offset of a whole number of steps moves into the codes: the grid runs through zero
    ratio = offset / scale
    whole = ((ratio - ratio.round()).abs() <= 1e-6 * ratio.abs().clamp_min(1.0)) & ~constant
    rows += torch.where(whole, ratio.round(), torch.zeros_like(ratio))[:, None]
    offset = torch.where(whole, torch.zeros_like(offset), offset)
    others = scale[~constant]
    if bool(constant.any()):
        values = offset[constant].abs().max()
        coarse = others.max() if len(others) else (values / (2 ** (bits - 1) - 1) if values > 0 else scale.new_ones(()))
        scale = torch.where(constant, coarse, scale)
    lo, hi = float(rows.min()), float(rows.max())
    signed = -(2 ** (bits - 1)) <= lo and hi < 2 ** (bits - 1) and not bool((~whole & ~constant).any())
    if signed:  # two's complement
        words = torch.where(rows < 0, rows + 2**bits, rows)
    else:  # unsigned levels: from zero where they fit, else above each channel's lowest code
        base = (torch.zeros(len(rows), dtype=torch.float64) if lo >= 0 and hi < 2**bits
                else rows.min(1).values)
        words = rows - base[:, None]
        if float(words.max()) >= 2**bits:
            raise ConfigError(f"{what}: weight codes span {lo:g}..{hi:g}, more than {bits} bits")
        offset = offset + base * scale
    words = words.long().view(shape)

    def decode(w: torch.Tensor) -> torch.Tensor:
        c = _twos(w, bits) if signed else w
        return c.double() * per_channel(scale, w) + per_channel(offset, w)
    return StoredWeights(words, bits, decode, signed)


def pwlq_storage(terms: Terms, bits: int) -> StoredWeights:
    """PWLQ's words (``bits + 1`` wide) from its four terms (:func:`~robquant.quant.pwlq.pwlq_terms`:
    centre codes, signed tail levels, tail sign, ones) with their per-channel scales."""
    (n_c, s_c), (n_t, s_t), (tail_sign, s_p), (_, s_shift) = [(n.double(), s.double()) for n, s in terms]
    tail = tail_sign != 0
    half = 2 ** (bits - 1)
    centre_words = torch.where(n_c < 0, n_c + 2**bits, n_c)
    tail_words = n_t.abs() + half * (tail_sign < 0)  # sign-magnitude: the sign above bits - 1 bits of level
    words = (torch.where(tail, tail_words + 2**bits, centre_words)).long()

    def decode(w: torch.Tensor) -> torch.Tensor:
        region, code = w // 2**bits, w % 2**bits
        centre = _twos(code, bits).double() * per_channel(s_c, w)
        sign = 1 - 2 * (code >= half).double()
        level = (code % half).double()
        tails = sign * (per_channel(s_p, w) + level * per_channel(s_t, w))
        return torch.where(region == 1, tails, centre) + per_channel(s_shift, w)
    return StoredWeights(words, bits + 1, decode, False)


__all__ = ["StoredWeights", "affine_storage", "pwlq_storage"]
