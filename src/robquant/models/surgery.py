"""Two operations on a module tree that several layers need: put a module at a dotted name, and
run code in one mode while every module keeps its own mode afterwards."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn


def replace_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at the dotted ``name`` of ``model`` (``layer1.0.bn1``)."""
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


@contextmanager
def modes_restored(model: nn.Module, training: bool | None = None) -> Iterator[nn.Module]:
    """Within the block ``model`` is in train (``training=True``) or eval mode (False; None leaves
    it); afterwards every module has its own mode back, module by module (a model may hold frozen
    eval-mode parts inside a training one), even on error."""
    modes = [(m, m.training) for m in model.modules()]
    if training is not None:
        model.train(training)
    try:
        yield model
    finally:
        for module, was in modes:
            module.training = was
