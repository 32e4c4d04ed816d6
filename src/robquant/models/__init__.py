"""Model registry: ``create_model(name, num_classes, in_channels, **kw)`` and ``list_models()``.

Every model takes inputs in [0, 1] (normalisation inside), returns logits, and exposes
``features(x)`` (penultimate, pooled) and ``head(f)`` so feature-matching objectives can reach
the representation.
"""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from robquant.errors import ConfigError
from robquant.models import external
from robquant.models.profile import count_macs, count_parameters
from robquant.models.resnet import CifarResNet, Normalize, PreActResNet18
from robquant.registry import Registry

MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def _cifar_resnet(n: int) -> Callable[..., nn.Module]:
    def make(num_classes: int, in_channels: int, **kw: Any) -> nn.Module:
        return CifarResNet(n, num_classes, in_channels, **kw)

    return make


MODELS.register("resnet8")(_cifar_resnet(1))  # the family's smallest (6n + 2 layers): tiny demos
MODELS.register("resnet20")(_cifar_resnet(3))
MODELS.register("resnet32")(_cifar_resnet(5))
MODELS.register("resnet56")(_cifar_resnet(9))
MODELS.register("preact_resnet18")(lambda num_classes, in_channels, **kw: PreActResNet18(num_classes, in_channels, **kw))


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """Build model ``name``.

    Args:
        name: One of :func:`list_models`, or ``package.module:factory`` (see
            :mod:`robquant.models.external`: called with ``kwargs``, and with ``num_classes`` and
            ``in_channels`` where it takes them and ``kwargs`` does not set them).
        num_classes: Output classes.
        in_channels: Input channels.
        **kwargs: Model options: ``width``, ``shortcut`` ("A" or "B", CIFAR ResNets), ``mean``, ``std``.

    Raises:
        UnknownNameError: for an unknown name (the message lists the known ones).
        ConfigError: for an invalid option.
    """
    if external.is_reference(name):  # the user's own: built by their factory with their options
        return external.build(name, kwargs, num_classes=num_classes, in_channels=in_channels)
    factory = MODELS.get(name)
    if num_classes < 2:
        raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
    if "shortcut" in kwargs and kwargs["shortcut"] not in ("A", "B"):
        raise ConfigError(f"shortcut must be 'A' or 'B', got {kwargs['shortcut']!r}")
    if "width" in kwargs and (not isinstance(kwargs["width"], int) or kwargs["width"] < 1):
        raise ConfigError(f"width must be a positive integer, got {kwargs['width']!r}")
    try:
        return factory(num_classes, in_channels, **kwargs)
    except TypeError as exc:
        raise ConfigError(f"model {name!r}: {exc}") from None


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return MODELS.names()


__all__ = ["CifarResNet", "Normalize", "PreActResNet18", "count_macs", "count_parameters",
           "create_model", "list_models"]
