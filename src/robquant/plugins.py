"""Plug-ins: your own attacks, quantizers, objectives or models, registered by your own package.

A plug-in is a Python module that registers what it defines when imported (``@ATTACKS.register("name")``
on an :class:`~robquant.attacks.Attack` subclass, and likewise for the other registries). robquant imports
the plug-ins named

- in the environment variable ``ROBQUANT_PLUGINS`` (module names, comma-separated), and
- by installed packages under the entry-point group ``robquant.plugins`` (``[project.entry-points."robquant.plugins"]``
  in their ``pyproject.toml``: ``name = "package.module"``),

the first time a registry is asked for a name it does not hold, or for its names: a registered attack is then
choosable in a study (``{name: yours, params: {...}}``) and on the command line (``--attack yours
--attack-option key=value``) with no change to robquant. Importing a plug-in runs its code: name only your own.
"""

from __future__ import annotations

import functools
import importlib
import os
from importlib.metadata import entry_points

from robquant.errors import ConfigError

ENV = "ROBQUANT_PLUGINS"
GROUP = "robquant.plugins"
_loaded: set[str] = set()


@functools.lru_cache(maxsize=1)
def _entry_point_modules() -> tuple[str, ...]:
    """The installed packages' plug-in modules (read once per process: scanning every installed
    package's metadata takes milliseconds, and registries are asked often)."""
    return tuple(ep.value.split(":")[0] for ep in entry_points(group=GROUP))


def plugin_modules() -> list[str]:
    """The modules named by ``ROBQUANT_PLUGINS`` and by installed packages' entry points, in that order."""
    named = [m.strip() for m in os.environ.get(ENV, "").split(",") if m.strip()]
    return named + list(_entry_point_modules())


def load_plugins() -> list[str]:
    """Import every plug-in module not imported yet; returns the modules imported now.

    Raises:
        ConfigError: a plug-in that cannot be imported, naming it, where it was named and its error.
    """
    new = []
    for module in plugin_modules():
        if module in _loaded:
            continue
        _loaded.add(module)  # once, even when it fails: the error is raised here, not on every lookup
        try:
            importlib.import_module(module)
        except Exception as exc:  # a plug-in's own error, whatever it is
            raise ConfigError(f"plug-in {module!r} (named in {ENV} or the entry points {GROUP!r}) cannot be imported: "
                              f"{type(exc).__name__}: {exc}") from None
        new.append(module)
    return new


__all__ = ["ENV", "GROUP", "load_plugins", "plugin_modules"]
