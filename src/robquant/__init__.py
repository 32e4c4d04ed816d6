"""robquant: which quantization pipeline keeps a neural network robust, and at what cost."""

from __future__ import annotations

from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:
    from torch import nn


def load_model(path: str, device: str = "cpu") -> "nn.Module":
    """Load a saved robquant model, ready for inference (inputs in [0, 1], logits out).

    Weights are read with safetensors: no code is executed.

    Args:
        path: A model folder written by robquant, or its ``model.safetensors`` file, or a zoo model
            (``zoo:NAME``: see ``robquant zoo``; its files are checked against the zoo's sha256 first).
        device: Where to put the model.

    Returns:
        The model in eval mode.
    """
    from robquant.modelfolder import load_model as _load
    from robquant.zoo import resolve_path

    return _load(resolve_path(path), device=device)


__all__ = ["__version__", "load_model"]
