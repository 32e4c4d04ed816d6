"""Errors that robquant raises for bad input.

Every error a user can cause derives from :class:`RobquantError`; the CLI turns it into one
clear message and exit code 2. Messages name the field, the value and what is allowed.
"""

from __future__ import annotations


class RobquantError(Exception):
    """Base class for user-facing errors (bad input, missing or untrusted data)."""


class ConfigError(RobquantError, ValueError):
    """A configuration value is out of range or of the wrong kind."""


class UnknownNameError(ConfigError, KeyError):
    """A registry was asked for a name it does not know."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0])


class DataError(RobquantError):
    """A data set is missing or cannot be read."""


class DataIntegrityError(DataError):
    """A data file fails its checksum or holds content we refuse to load."""


class CheckpointError(RobquantError):
    """A checkpoint is missing, malformed or does not match its record."""


def check_range(field: str, value: float, low: float | None = None, high: float | None = None,
                *, low_open: bool = False, high_open: bool = False) -> float:
    """Check that ``value`` lies in a range, else raise :class:`ConfigError` naming ``field``.

    Args:
        field: Name shown to the user (e.g. ``"--fraction"``).
        value: The value to check.
        low: Lower bound, or None for unbounded.
        high: Upper bound, or None for unbounded.
        low_open: Exclude ``low`` itself.
        high_open: Exclude ``high`` itself.

    Returns:
        ``value`` unchanged.

    Raises:
        ConfigError: if ``value`` is outside the range or not a finite number.
    """
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    allowed = f"{left}{lo}, {hi}{right}"
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{field} must be a number in {allowed}, got {value!r}") from None
    bad = v != v  # NaN
    if low is not None:
        bad |= v <= low if low_open else v < low
    if high is not None:
        bad |= v >= high if high_open else v > high
    if bad:
        raise ConfigError(f"{field} must be in {allowed}, got {value!r}")
    return value
