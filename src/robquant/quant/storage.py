"""Quantized weights as the words a deployment stores: one ``bits``-wide integer word per weight,
and the rule that turns words back into weights. What a bit-flip attack flips
(:mod:`robquant.attacks.bitflip`): any word of the field decodes to a weight the layer can hold,
so a flipped model is still a valid integer model (it exports like the original).

- One integer code per weight (uniform, DoReFa: ``W = s N + o`` per output channel): the word is
  the code as a ``bits``-bit two's-complement field when the codes are signed, else the code above
  its channel's offset as an unsigned field.
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
    ``decode(words)`` the weights they stand for (float64, the weight's shape)."""

    words: torch.Tensor
    bits: int
    decode: Callable[[torch.Tensor], torch.Tensor]

    @property
    def top(self) -> int:
        """The largest word of the field."""
        return 2**self.bits - 1

    def weights(self) -> torch.Tensor:
        return self.decode(self.words)


def affine_storage(terms: Terms, bits: int, what: str) -> StoredWeights:
    """Words of a layer whose weights are one integer code per weight plus per-channel constants
    (``terms``: one varying tensor and constant ones, as uniform and DoReFa quantizers give them).

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
    codes, scale = codes.double(), scale.double()
    offset = sum((n.flatten(1)[:, 0].double() * s.double() for n, s in terms if not varies(n)),
                 torch.zeros_like(scale))
    lo, hi = float(codes.min()), float(codes.max())
    if -(2 ** (bits - 1)) <= lo and hi < 2 ** (bits - 1):  # signed: two's complement
        words = torch.where(codes < 0, codes + 2**bits, codes).long()

        def decode(w: torch.Tensor) -> torch.Tensor:
            return _twos(w, bits).double() * per_channel(scale, w) + per_channel(offset, w)
        return StoredWeights(words, bits, decode)
    base = codes.flatten(1).min(1).values  # unsigned above each channel's lowest code
    words = (codes - per_channel(base, codes)).long()
    if int(words.max()) >= 2**bits:
        raise ConfigError(f"{what}: weight codes span {lo:g}..{hi:g}, more than {bits} bits")
    offset = offset + base * scale

    def decode_unsigned(w: torch.Tensor) -> torch.Tensor:
        return w.double() * per_channel(scale, w) + per_channel(offset, w)
    return StoredWeights(words, bits, decode_unsigned)


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
    return StoredWeights(words, bits + 1, decode)


__all__ = ["StoredWeights", "affine_storage", "pwlq_storage"]
