"""Typed attack runs and budgets: what an evaluation runs, as studies, the CLI and the library write it.

A :class:`Budget` is an attack budget in [0, 1] units with the label the user wrote beside it (/255), so
results are named by what the user wrote, never by a float converted back. An :class:`AttackRun` is one
attack of an evaluation: its registry name, the label its results are reported under, its options, how
many examples it covers and at which budgets it runs. :func:`robquant.evaluation.evaluate` takes both as
they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from robquant.attacks.registry import ATTACKS


@dataclass(frozen=True)
class Budget:
    """One attack budget: ``eps`` in [0, 1] units and the study's own label for it (/255)."""

    eps: float
    label: float

    @classmethod
    def of(cls, value_255: float) -> "Budget":
        """The budget a user wrote in /255 units (the one place /255 becomes [0, 1])."""
        return cls(value_255 / 255, value_255)

    @classmethod
    def unlabelled(cls, eps: float) -> "Budget":
        """A budget given in [0, 1] units only (a library call): labelled ``eps`` x 255, rounded."""
        return cls(float(eps), round(float(eps) * 255, 6))


@dataclass(frozen=True)
class AttackRun:
    """One attack of an evaluation: registry name, the label results are reported under, its
    options ([0, 1] units), how many examples it covers and which of the budgets it runs at."""

    name: str
    label: str
    options: dict[str, Any] = field(default_factory=dict)
    n: int | None = None
    budgets: tuple[Budget, ...] | None = None  # None: all of the evaluation's

    def runs_at(self, budget: Budget) -> bool:
        return self.budgets is None or budget in self.budgets

    def cost(self):
        """What one attacked example costs at one budget, as the attack class declares."""
        return ATTACKS.get(self.name).cost(**self.options)

    @property
    def needs_surrogate(self) -> bool:
        """Whether it crafts its examples on another model, as the attack class declares."""
        return ATTACKS.get(self.name).NEEDS_SURROGATE
