"""Precision specs ``AxWy``: activation bits first, as in the paper; 32 means full precision."""

from __future__ import annotations

import re
from dataclasses import dataclass

from robquant.errors import ConfigError

ALLOWED_BITS = (2, 3, 4, 5, 6, 7, 8, 16, 32)
FP_BITS = 32
_PATTERN = re.compile(r"^A(\d+)W(\d+)$", re.IGNORECASE)
ALLOWED_TEXT = ("AxWy with x (activation bits) and y (weight bits) each in 2..8, 16 or 32 "
                "(32 = full precision), e.g. A4W4, A32W4 (weight-only), A4W32 (activation-only)")


@dataclass(frozen=True)
class Precision:
    """Bit-widths of activations and weights.

    Attributes:
        act_bits: Activation bits (32 = not quantized).
        weight_bits: Weight bits (32 = not quantized).
    """

    act_bits: int
    weight_bits: int

    def __post_init__(self) -> None:
        for name, bits in (("activation bits", self.act_bits), ("weight bits", self.weight_bits)):
            if bits not in ALLOWED_BITS or isinstance(bits, bool):
                raise ConfigError(f"precision: {name} must be one of 2..8, 16 or 32, got {bits!r}")

    @property
    def quantizes_acts(self) -> bool:
        return self.act_bits < FP_BITS

    @property
    def quantizes_weights(self) -> bool:
        return self.weight_bits < FP_BITS

    @property
    def is_fp(self) -> bool:
        return not (self.quantizes_acts or self.quantizes_weights)

    def __str__(self) -> str:
        return f"A{self.act_bits}W{self.weight_bits}"


def parse_precision(text: str | Precision, field: str = "precision") -> Precision:
    """Parse ``"A4W4"`` (case-insensitive) into a :class:`Precision`.

    Raises:
        ConfigError: naming ``field``, the value and what is allowed.
    """
    if isinstance(text, Precision):
        return text
    match = _PATTERN.match(str(text).strip())
    if not match:
        raise ConfigError(f"{field} must be {ALLOWED_TEXT}; got {text!r}")
    act, weight = int(match.group(1)), int(match.group(2))
    if act not in ALLOWED_BITS or weight not in ALLOWED_BITS:
        raise ConfigError(f"{field} must be {ALLOWED_TEXT}; got {text!r}")
    return Precision(act, weight)
