"""One verb, :func:`quantize`: convert a trained model for PTQ or prepare it for QAT, by module swap.

- PTQ: fold BN, quantize weights once (PWLQ by default, or uniform), and quantize activations
  with calibrated uniform per-layer quantizers: by default where PWLQ's code puts them, on the
  input of every conv, linear and pooling layer (``act_placement="inputs"``: the pooled features
  that feed the last linear layer are quantized too; the residual stream between blocks stays in
  full precision); or in place of every ReLU (``"relu"``). Returns an eval-ready model.
- QAT: weights quantized on every forward (DoReFa by default), every ReLU replaced by PACT (at
  32 activation bits the ReLUs stay ReLUs); alpha set from calibration images when the QAT starts
  from trained parameters (``pact_init="data"``). Returns a trainable model for the ordinary
  training loop with any objective.

Every rounding has a straight-through gradient, so attacks see real gradients (ALGORITHMS sec. 8).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from robquant.errors import ConfigError
from robquant.models.surgery import modes_restored, replace_module
from robquant.quant.config import AnyQuantConfig, PTQConfig, QATConfig
from robquant.quant.coverage import check_coverage
from robquant.quant.fold import fold_batchnorm
from robquant.quant.modules import QuantConv2d, QuantInput, QuantLinear
from robquant.quant.precision import FP_BITS

POOLS = (nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveMaxPool2d)


@dataclass(frozen=True)
class MethodSteps:
    """What one quantization method does around the layer swap that both share: one handler per method
    config type (:data:`METHOD_STEPS`), so :func:`quantize` branches on no type.

    Attributes:
        before: On the copy, before the swap (PTQ: eval mode, BN folded; QAT: every parameter trainable).
        structure: Before the swap on a model being loaded (the module structure, no numerics).
        frozen: The weights are quantized once, after the swap, and stored quantized (PTQ); else on every
            forward (QAT).
        training: The mode of the model returned.
        calibrates: What calibration images are for (the message when they are missing), and a way out.
    """

    before: Callable[[nn.Module], None]
    structure: Callable[[nn.Module], None]
    frozen: bool
    training: bool
    calibrates: tuple[str, str]


def _quant_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, (QuantConv2d, QuantLinear))]


def _fold(model: nn.Module) -> None:
    fold_batchnorm(model.eval())


def _freeze(model: nn.Module) -> None:  # quantize the weights once
    for layer in _quant_layers(model):
        layer.freeze()


def _mark_frozen(model: nn.Module) -> None:  # a loaded PTQ model's weights are stored already quantized
    for layer in _quant_layers(model):
        layer.frozen = True


def _nothing(model: nn.Module) -> None:
    pass


METHOD_STEPS: dict[type, MethodSteps] = {
    PTQConfig: MethodSteps(before=_fold, structure=_fold, frozen=True, training=False,
                           calibrates=("activation ranges", "")),
    # QAT trains every parameter, whatever the source model's flags
    QATConfig: MethodSteps(before=lambda m: m.requires_grad_(True), structure=_nothing, frozen=False,
                           training=True, calibrates=("PACT's alpha (pact_init='data')", "; or set pact_init='fixed'")),
}


def method_steps(config: AnyQuantConfig) -> MethodSteps:
    """The handler of ``config``'s method.

    Raises:
        ConfigError: a config type no method handles.
    """
    steps = METHOD_STEPS.get(type(config))
    if steps is None:
        raise ConfigError(f"no quantization method handles {type(config).__name__}; known: "
                          f"{', '.join(t.__name__ for t in METHOD_STEPS)}")
    return steps


def quantize(model: nn.Module, config: AnyQuantConfig, calib_images: torch.Tensor | None = None) -> nn.Module:
    """Return a quantized copy of ``model`` (the original is left untouched).

    Args:
        model: A trained (or freshly initialised, for QAT from scratch) model.
        config: What to do: a :class:`~robquant.quant.PTQConfig` or :class:`~robquant.quant.QATConfig`
            (its method's steps: :data:`METHOD_STEPS`).
        calib_images: ``(N, C, H, W)`` images in [0, 1] (the caller picks them from the
            configured data fraction): PTQ's activation ranges, QAT's PACT alpha with
            ``pact_init="data"``; needed when the config's ``needs_calibration``.

    Returns:
        PTQ: the quantized model in eval mode. QAT: a trainable model in train mode.

    Raises:
        ConfigError: if calibration images are needed and none are given.
    """
    steps = method_steps(config)
    if config.needs_calibration and calib_images is None:
        what, way_out = steps.calibrates
        raise ConfigError(f"{config.method.upper()} at {config.bits} calibrates {what} and needs calibration images"
                          + way_out)
    if calib_images is not None and len(calib_images):
        check_coverage(model, config, calib_images[:2].to(next(model.parameters()).device))
    qmodel = copy.deepcopy(model)
    steps.before(qmodel)
    _swap(qmodel, config)
    if steps.frozen:
        _freeze(qmodel)
    if config.needs_calibration:
        # QAT: alpha from the full-precision model's activations. DoReFa rescales the weights
        # (max |w_q| = 1), which BN's running statistics do not know about until training starts
        # (in training mode BN renormalises to the scale the FP model had), so calibrating through
        # the quantized weights in eval mode would measure activations no training step sees.
        with _weights_as_stored(qmodel):
            calibrate(qmodel, calib_images, config.calib_batch_size)
    return qmodel.train(steps.training)


@contextmanager
def _weights_as_stored(model: nn.Module) -> Iterator[None]:
    """Every quantized layer computes with its stored weights (as PTQ's frozen layers always do)."""
    layers = [m for m in model.modules() if isinstance(m, (QuantConv2d, QuantLinear))]
    frozen = [m.frozen for m in layers]
    for m in layers:
        m.frozen = True
    try:
        yield
    finally:
        for m, f in zip(layers, frozen):
            m.frozen = f


def prepare_structure(model: nn.Module, config: AnyQuantConfig) -> nn.Module:
    """Give ``model`` (in place) the module structure of its quantized form, without any numerics,
    so that a saved quantized state dict can be loaded into it."""
    steps = method_steps(config)
    steps.structure(model)
    _swap(model, config)
    if steps.frozen:
        _mark_frozen(model)
    return model


def calibrators(model: nn.Module) -> list[nn.Module]:
    """The modules of ``model`` that take statistics from calibration images."""
    return [m for m in model.modules() if hasattr(m, "start_calibration") and getattr(m, "bits", 32) < 32]


@torch.no_grad()
def calibrate(model: nn.Module, images: torch.Tensor, batch_size: int = 4) -> None:
    """Take every calibrated quantizer's statistics on ``images`` (in eval mode, batches of
    ``batch_size``, averaged over batches) and freeze them; every module's mode is restored."""
    quants = calibrators(model)
    device = next(model.parameters()).device
    for q in quants:
        q.start_calibration()
    with modes_restored(model, training=False):
        try:
            for i in range(0, len(images), batch_size):
                model(images[i:i + batch_size].to(device))
        finally:
            for q in quants:
                q.finish_calibration()


def _swap(model: nn.Module, config: AnyQuantConfig) -> None:
    """Replace conv/linear layers, and ReLUs or pooling layers, by their quantized versions, in place."""
    bits = config.bits
    layers = [(n, m) for n, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]
    convs = [n for n, m in layers if isinstance(m, nn.Conv2d)]
    linears = [n for n, m in layers if isinstance(m, nn.Linear)]
    first = convs[0] if convs else None
    keep_fp = set() if config.quantize_first_last else {first, linears[-1] if linears else None}
    inputs = bits.quantizes_acts and config.act_placement == "inputs"
    pools = [n for n, m in model.named_modules() if isinstance(m, POOLS)] if inputs else []
    for name, layer in layers:
        wq = None if (name in keep_fp or not bits.quantizes_weights) else config.weight_quantizer_for(layer)
        # the stem conv's input is the image itself: quantized only with the first/last layers
        iq = config.act_quantizer_new() if inputs and (name != first or config.quantize_first_last) else None
        cls = QuantConv2d if isinstance(layer, nn.Conv2d) else QuantLinear
        _set(model, name, cls(layer, wq, input_quant=iq))
    for name in pools:
        _set(model, name, QuantInput(model.get_submodule(name), config.act_quantizer_new()))
    if bits.quantizes_acts and config.act_placement == "relu":
        for name, module in list(model.named_modules()):
            if type(module) is nn.ReLU:
                _set(model, name, config.act_quantizer_new())


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at ``name``, on the device of the model's parameters."""
    replace_module(model, name, module.to(next(model.parameters()).device))


def model_size(model: nn.Module) -> dict[str, int]:
    """Bytes to store the model at its precision.

    Quantized weights count at their storage bits (PWLQ: b + 1 with the region bit); every other
    parameter and buffer (biases, BN statistics, PACT alphas, per-channel quantizer parameters,
    full-precision layers) at 32 bits. Non-persistent and integer bookkeeping buffers are left out.

    Returns:
        ``{"bits": total bits, "bytes": total bytes (rounded up), "fp32_bytes": the same model at 32 bits}``.
    """
    quantized = {}
    for layer in model.modules():
        if isinstance(layer, (QuantConv2d, QuantLinear)) and layer.weight_quant is not None:
            if layer.weight_quant.bits < FP_BITS:  # each quantizer states its bits and storage bits
                quantized[id(layer.weight)] = layer.weight_quant.storage_bits
    bits = fp = 0
    for t in [*model.parameters(), *model.buffers()]:
        if not t.is_floating_point():
            continue
        fp += 32 * t.numel()
        bits += quantized.get(id(t), 32) * t.numel()
    return {"bits": bits, "bytes": -(-bits // 8), "fp32_bytes": fp // 8}
