"""Users' own models: ``"package.module:factory"`` names a callable that builds an ``nn.Module``.

The factory is called with the study's (or CLI's) keyword arguments, and with the data set's
``num_classes`` and ``in_channels`` where it takes arguments of those names and the options do not
set them (as ``timm.create_model`` does); the model must take inputs in [0, 1] of the data set's
shape (normalising inside, as robquant's models do) and return logits. Every failure is one
:class:`~robquant.errors.ConfigError` that names the reference and what is wrong: not importable, no such attribute, not callable, not a module, wrong input shape.
The module's source file is hashed, so records (and stage keys) change when the code does.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from robquant.errors import ConfigError

_ALLOWED: set[str] = set()  # references the user named (a study file, --model): only these are imported


def allow(reference: str) -> None:
    """Let :func:`build` import ``reference``: the user named it. A model record naming a reference
    the user did not is refused, so that loading a model folder never runs code it names."""
    _ALLOWED.add(reference)


def is_reference(name: str) -> bool:
    """Whether a model name is an import reference (``package.module:factory``), not a registry name."""
    return ":" in name


def resolve(reference: str) -> Callable[..., Any]:
    """The callable ``package.module:factory`` names.

    Raises:
        ConfigError: not of that form, not importable, no such attribute, or not callable.
    """
    module_name, _, attr = reference.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"model {reference!r}: a model reference is 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the user's code may raise anything while importing
        raise ConfigError(f"model {reference!r}: module {module_name!r} cannot be imported "
                          f"({type(exc).__name__}: {exc})") from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"model {reference!r}: module {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"model {reference!r}: {attr!r} is a {type(target).__name__}, not callable")
    return target


def source_hash(reference: str) -> dict[str, str | None]:
    """The file that defines the reference's module and its sha256 (None for a module without a file)."""
    module = importlib.import_module(reference.partition(":")[0])
    try:
        path = inspect.getsourcefile(module)
    except TypeError:
        path = None
    if path is None:
        return {"file": None, "sha256": None}
    return {"file": str(Path(path).resolve()), "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}


def takes(factory: Callable[..., Any], name: str) -> bool:
    """Whether ``factory`` accepts a keyword argument ``name`` (by name, or through ``**kwargs``)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a builtin): pass only what the user gave
        return False
    return any(p.kind is p.VAR_KEYWORD or (p.name == name and p.kind is not p.POSITIONAL_ONLY) for p in params)


def build(reference: str, kwargs: dict[str, Any], **data: Any) -> nn.Module:
    """``factory(**kwargs)``, checked to be an ``nn.Module``. Each of ``data`` (the data set's
    ``num_classes``, ``in_channels``) is passed too where the factory takes it and ``kwargs`` does
    not set it: the user's own option wins.

    Raises:
        ConfigError: for a reference the user has not named (:func:`allow`), or one that fails.
    """
    if reference not in _ALLOWED:
        raise ConfigError(f"model {reference!r} is the user's own code, named by a record: name it yourself to "
                          f"load it (--model {reference}, or model.name in the study file)")
    factory = resolve(reference)
    kwargs = {**{k: v for k, v in data.items() if k not in kwargs and takes(factory, k)}, **kwargs}
    try:
        model = factory(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"model {reference!r}: calling it with {kwargs} failed: {exc}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {reference!r}: returned a {type(model).__name__}, not a torch.nn.Module")
    return model


def check_shape(model: nn.Module, reference: str, in_channels: int, image_size: tuple[int, int],
                num_classes: int) -> None:
    """One forward pass on two zero images of the data set's shape must give ``(2, num_classes)``
    logits (two, so that a model that squeezes the batch dimension is caught).

    Raises:
        ConfigError: naming the input shape, and what the model did with it.
    """
    shape = (2, in_channels, *image_size)
    was = model.training
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(shape, device=next(model.parameters(), torch.zeros(())).device))
    except Exception as exc:
        raise ConfigError(f"model {reference!r}: wrong input shape: it cannot take inputs of shape {shape} "
                          f"({type(exc).__name__}: {exc})") from None
    finally:
        model.train(was)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"model {reference!r}: inputs of shape {shape} gave {got}, not logits of shape "
                          f"(2, {num_classes})")
