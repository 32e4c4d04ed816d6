"""Declared options: what a plug-in (an attack, ...) takes beyond its fixed arguments, each declared once
with its default, its help and the values it allows, and checked wherever a user gives it (a study file's
``params``, ``robquant attack --attack-option``); ``robquant list`` shows the declarations.

    class ScaledFGSM(Attack):
        OPTIONS = (Option("scale", 1.0, "the step as a multiple of eps", kind=float, low=0.0),)

A plain name (``OPTIONS = ("scale",)``) declares an option without a default, a range or help.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from robquant.errors import ConfigError


@dataclass(frozen=True)
class Option:
    """One declared option.

    Attributes:
        name: Its name, as a study file and the command line write it.
        default: The value the owner uses when none is given (None: the owner decides, see ``help``).
        help: One line for ``robquant list`` and the docs.
        kind: ``int``, ``float``, ``bool`` or ``str`` (None: any); an int is a float too, a bool is not a number.
        low, high: The smallest and largest value allowed (inclusive), for numbers.
        choices: The values allowed, when they are few.
    """

    name: str
    default: Any = None
    help: str = ""
    kind: type | None = None
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None

    def allowed(self) -> str:
        """What it allows, in words."""
        parts = []
        if self.kind is not None and self.choices is None:
            parts.append({int: "a whole number", float: "a number", bool: "true or false", str: "a string"}
                         .get(self.kind, self.kind.__name__))
        if self.low is not None:
            parts.append(f">= {self.low:g}")
        if self.high is not None:
            parts.append(f"<= {self.high:g}")
        if self.choices is not None:
            parts.append("one of " + ", ".join(map(str, self.choices)))
        return " ".join(parts) or "any value"

    def check(self, value: Any, owner: str) -> Any:
        """``value`` if this option allows it.

        Raises:
            ConfigError: naming the owner, the option, the value and what is allowed.
        """
        ok = True
        if self.kind is bool:
            ok = isinstance(value, bool)
        elif self.kind in (int, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
                self.kind is float or float(value).is_integer())
        elif self.kind is not None:
            ok = isinstance(value, self.kind)
        if ok and self.low is not None:
            ok = value >= self.low
        if ok and self.high is not None:
            ok = value <= self.high
        if ok and self.choices is not None:
            ok = value in self.choices
        if not ok:
            raise ConfigError(f"{owner} option {self.name}: {value!r} is not allowed; allowed: {self.allowed()}")
        return value

    def describe(self) -> str:
        """``name=default (allowed): help``, for ``robquant list``."""
        default = "" if self.default is None else f"={self.default}"
        allowed = self.allowed()
        return f"{self.name}{default}" + (f" ({allowed})" if allowed != "any value" else "") + (
            f": {self.help}" if self.help else "")


def declared(options: Sequence[Option | str]) -> dict[str, Option]:
    """The declarations of ``options`` by name (a plain name declares an unchecked option)."""
    return {o.name: o for o in (opt if isinstance(opt, Option) else Option(opt) for opt in options)}
