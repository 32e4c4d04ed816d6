"""The attack registry: each attack registers itself where it is defined (``@ATTACKS.register("pgd")``);
a plug-in's attacks (:mod:`robquant.plugins`) join it when a name is first asked for."""

from __future__ import annotations

from typing import Any

from torch import nn

from robquant.attacks.base import Attack
from robquant.errors import ConfigError
from robquant.registry import Registry

ATTACKS: Registry[type[Attack]] = Registry("attack")


def create_attack(name: str, model: nn.Module, eps: float, **kwargs: Any) -> Attack:
    """Build attack ``name`` against ``model`` with budget ``eps`` ([0, 1] units).

    Raises:
        UnknownNameError: for an unknown name (the message lists the known ones).
        ConfigError: for an invalid or unknown option.
    """
    cls = ATTACKS.get(name)
    try:
        return cls(model, eps, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"attack {name!r}: {exc}") from None


def list_attacks() -> list[str]:
    """Names accepted by :func:`create_attack`."""
    return ATTACKS.names()
