"""What the module swap of :func:`~robquant.quant.quantize` cannot see, found by running the model.

:func:`quantize` replaces modules: ``nn.Conv2d`` / ``nn.Linear`` (weights), ``nn.ReLU`` (QAT's PACT,
PTQ's ``relu`` placement) and pooling modules (PTQ's ``inputs`` placement). A model that computes a
layer with a function (``F.conv2d``, ``F.linear``, ``F.avg_pool2d``), an activation with a function
(``F.relu``, ``x.relu()``) where activations are quantized at ReLUs, an activation module other than
``nn.ReLU`` there, or a conv/linear module of another type (``nn.Conv1d``, a subclass of ``nn.Conv2d``)
would be quantized only in part, silently. :func:`unseen_layers` runs one forward pass under a
``TorchFunctionMode`` and lists each such call or module with where it happens; :func:`quantize`'s
callers refuse the model with one message naming them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

LAYER_FUNCTIONS = {"conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "linear",
                   "avg_pool2d", "max_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d"}
ACTIVATION_FUNCTIONS = {"relu", "relu_", "relu6", "gelu", "silu", "elu", "leaky_relu", "hardtanh", "hardswish",
                        "mish", "softplus", "sigmoid", "tanh"}
ACTIVATION_MODULES = (nn.ReLU6, nn.GELU, nn.SiLU, nn.ELU, nn.LeakyReLU, nn.Hardtanh, nn.Hardswish, nn.Mish,
                      nn.Softplus, nn.Sigmoid, nn.Tanh, nn.PReLU)
WEIGHT_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
                  nn.Linear)
POOLS = (nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


class _Calls(TorchFunctionMode):
    def __init__(self, stack: list[tuple[str, nn.Module]], watched: set[str]) -> None:
        super().__init__()
        self.stack, self.watched = stack, watched
        self.found: dict[str, str] = {}

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", "")
        # a call inside a module the swap replaces (or an activation module, reported as a module) is its own
        if name in self.watched and not any(_owns(m, name) for _, m in self.stack):
            where = next((f"{n or 'the model'} ({type(m).__name__})" for n, m in reversed(self.stack)), "the model")
            self.found.setdefault(f"{name}()", where)
        return func(*args, **(kwargs or {}))


def _owns(module: nn.Module, function: str) -> bool:
    """Whether ``function`` called inside ``module`` is the module's own work (the swap sees the module)."""
    if type(module) in (nn.Conv2d, nn.Linear) or isinstance(module, POOLS):
        return function in LAYER_FUNCTIONS
    return type(module) is nn.ReLU or isinstance(module, (*ACTIVATION_MODULES, *WEIGHT_MODULES))


def unseen_layers(model: nn.Module, x: torch.Tensor, activations_at_relu: bool) -> dict[str, str]:
    """``{what: where}`` for every layer or activation the module swap would not quantize.

    Args:
        model: The full-precision model.
        x: An input batch it takes (one forward pass runs, in eval mode, without gradients).
        activations_at_relu: Activations are quantized in place of ``nn.ReLU`` modules (QAT's PACT,
            PTQ's ``relu`` placement): functional activations and other activation modules count too.
    """
    found: dict[str, str] = {}
    for name, m in model.named_modules():
        if isinstance(m, WEIGHT_MODULES) and type(m) not in (nn.Conv2d, nn.Linear):
            found[f"{type(m).__name__} module"] = name
        elif activations_at_relu and isinstance(m, ACTIVATION_MODULES):
            found[f"{type(m).__name__} module"] = name
    watched = LAYER_FUNCTIONS | (ACTIVATION_FUNCTIONS if activations_at_relu else set())
    stack: list[tuple[str, nn.Module]] = []  # the modules whose forward is running, outermost first

    def enter(name: str) -> Any:
        def hook(module: nn.Module, inputs: Any) -> None:
            stack.append((name, module))
        return hook

    def leave(module: nn.Module, inputs: Any, output: Any) -> None:
        stack.pop()

    handles = []
    for name, m in model.named_modules():
        handles += [m.register_forward_pre_hook(enter(name)), m.register_forward_hook(leave)]
    calls = _Calls(stack, watched)
    was = model.training
    try:
        with torch.no_grad(), calls:
            model.eval()(x)
    finally:
        model.train(was)
        for h in handles:
            h.remove()
    for what, where in calls.found.items():
        found.setdefault(what, where)
    return found


def check_coverage(model: nn.Module, configs: Any, x: torch.Tensor) -> None:
    """Refuse a model the module swap would quantize only in part, under any of ``configs`` (one
    :class:`~robquant.quant.QuantConfig` or several; see :func:`unseen_layers`).

    Raises:
        ConfigError: naming each call or module it would miss and where.
    """
    from robquant.errors import ConfigError

    configs = list(configs) if isinstance(configs, (list, tuple)) else [configs]
    active = [c for c in configs if c.bits.quantizes_weights or c.bits.quantizes_acts]
    if not active:
        return
    missed = unseen_layers(model, x, any(c.bits.quantizes_acts and c.act_placement == "relu" for c in active))
    if missed:
        listed = "; ".join(f"{what} in {where}" for what, where in missed.items())
        raise ConfigError(f"{type(model).__name__} cannot be quantized by module swap: {listed}. robquant quantizes "
                          "nn.Conv2d and nn.Linear modules, and activations at nn.ReLU modules (QAT) or at the "
                          "inputs of those and of pooling modules (PTQ): write these as such modules")
