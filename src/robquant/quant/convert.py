"""One verb, :func:`quantize`: convert a trained model for PTQ or prepare it for QAT, by module swap.

- PTQ: fold BN, quantize weights once (PWLQ by default, or uniform), replace every ReLU by a
  calibrated uniform activation quantizer; returns an eval-ready model.
- QAT: weights quantized on every forward (DoReFa by default), every ReLU replaced by PACT;
  returns a trainable model for the ordinary training loop with any objective.

Every rounding has a straight-through gradient, so attacks see real gradients (ALGORITHMS sec. 8).
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from robquant.errors import ConfigError, check_range
from robquant.quant.fold import fold_batchnorm
from robquant.quant.modules import QuantConv2d, QuantLinear
from robquant.quant.pact import PACT, DoReFaWeightQuantizer
from robquant.quant.precision import FP_BITS, Precision, parse_precision
from robquant.quant.pwlq import BREAKPOINTS, PWLQWeightQuantizer
from robquant.quant.uniform import CALIBRATIONS, UniformActQuant, UniformWeightQuantizer

METHODS = ("ptq", "qat")
WEIGHT_QUANTIZERS = {"ptq": ("pwlq", "uniform"), "qat": ("dorefa", "uniform")}
ACT_QUANTIZERS = {"ptq": ("uniform",), "qat": ("pact",)}


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize a model (validated on construction; serialisable with :meth:`to_dict`).

    Attributes:
        method: ``ptq`` (post-training) or ``qat`` (quantization-aware training).
        precision: ``AxWy`` string, activation bits first (A32W32 = full precision).
        weight_quantizer: ``pwlq`` (PTQ default) or ``uniform``; ``dorefa`` (QAT default) or ``uniform``.
        act_quantizer: ``uniform`` (PTQ) or ``pact`` (QAT); default by method.
        quantize_first_last: Also quantize the first conv and the last linear layer (default
            false for both methods, so that they are comparable).
        breakpoint: PWLQ breakpoint rule: ``gauss``, ``laplace``, ``exact`` or ``search``.
        bias_correction: PWLQ per-channel mean/std correction.
        per_channel: Uniform weight quantizer per output channel (else per tensor).
        calibration: PTQ activation range rule: ``topk_median`` (PWLQ's) or ``minmax``.
        calib_images: PTQ calibration images.
        pact_alpha: Initial PACT clipping level.
        straight_through: Straight-through gradients for every rounding; False builds a
            gradient-masked model (for testing the diagnostics only).
    """

    method: str = "ptq"
    precision: str = "A32W32"
    weight_quantizer: str | None = None
    act_quantizer: str | None = None
    quantize_first_last: bool = False
    breakpoint: str = "gauss"
    bias_correction: bool = True
    per_channel: bool = True
    calibration: str = "topk_median"
    calib_images: int = 512
    pact_alpha: float = 10.0
    straight_through: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        object.__setattr__(self, "precision", str(parse_precision(self.precision)))
        if self.weight_quantizer is None:
            object.__setattr__(self, "weight_quantizer", WEIGHT_QUANTIZERS[self.method][0])
        if self.act_quantizer is None:
            object.__setattr__(self, "act_quantizer", ACT_QUANTIZERS[self.method][0])
        _choice("weight_quantizer", self.weight_quantizer, WEIGHT_QUANTIZERS[self.method], self.method)
        _choice("act_quantizer", self.act_quantizer, ACT_QUANTIZERS[self.method], self.method)
        _choice("breakpoint", self.breakpoint, BREAKPOINTS)
        _choice("calibration", self.calibration, CALIBRATIONS)
        check_range("calib_images", self.calib_images, 1)
        check_range("pact_alpha", self.pact_alpha, 0.0, low_open=True)

    @property
    def bits(self) -> Precision:
        return parse_precision(self.precision)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _choice(field: str, value: object, allowed: tuple[str, ...], method: str | None = None) -> None:
    if value not in allowed:
        where = f" for {method}" if method else ""
        raise ConfigError(f"{field}{where} must be one of {', '.join(allowed)}, got {value!r}")


def quantize(model: nn.Module, config: QuantConfig, calib_images: torch.Tensor | None = None,
             batch_size: int = 128) -> nn.Module:
    """Return a quantized copy of ``model`` (the original is left untouched).

    Args:
        model: A trained (or freshly initialised, for QAT from scratch) model.
        config: What to do.
        calib_images: PTQ only: ``(N, C, H, W)`` images in [0, 1] for activation calibration
            (the caller picks them from the configured data fraction); needed when activations
            are quantized.
        batch_size: Calibration batch size.

    Returns:
        PTQ: the quantized model in eval mode. QAT: a trainable model in train mode.

    Raises:
        ConfigError: if PTQ needs calibration images and none are given.
    """
    bits = config.bits
    if config.method == "ptq" and bits.quantizes_acts and calib_images is None:
        raise ConfigError(f"PTQ at {bits} quantizes activations and needs calibration images")
    qmodel = copy.deepcopy(model)
    if config.method == "ptq":
        qmodel.eval()
        fold_batchnorm(qmodel)
    _swap(qmodel, config)
    if config.method == "qat":
        return qmodel.train()
    for layer in qmodel.modules():  # PTQ: quantize the weights once
        if isinstance(layer, (QuantConv2d, QuantLinear)) and layer.weight_quant is not None:
            with torch.no_grad():
                layer.weight.copy_(layer.weight_quant(layer.weight))
            layer.frozen = True
    if bits.quantizes_acts:
        calibrate(qmodel, calib_images, batch_size)
    return qmodel.eval()


def prepare_structure(model: nn.Module, config: QuantConfig) -> nn.Module:
    """Give ``model`` (in place) the module structure of its quantized form, without any numerics,
    so that a saved quantized state dict can be loaded into it."""
    if config.method == "ptq":
        fold_batchnorm(model.eval())
    _swap(model, config)
    for layer in model.modules():
        if isinstance(layer, (QuantConv2d, QuantLinear)) and config.method == "ptq":
            layer.frozen = True
    return model


@torch.no_grad()
def calibrate(model: nn.Module, images: torch.Tensor, batch_size: int = 128) -> None:
    """Observe activation ranges on ``images`` and freeze every :class:`UniformActQuant`."""
    quants = [m for m in model.modules() if isinstance(m, UniformActQuant)]
    model.eval()
    device = next(model.parameters()).device
    for q in quants:
        q.calibrating = True
        q.batches.zero_()
    try:
        for i in range(0, len(images), batch_size):
            model(images[i:i + batch_size].to(device))
    finally:
        for q in quants:
            q.finish_calibration()


def _swap(model: nn.Module, config: QuantConfig) -> None:
    """Replace conv/linear layers and ReLUs by their quantized versions, in place."""
    bits = config.bits
    layers = [(n, m) for n, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]
    convs = [n for n, m in layers if isinstance(m, nn.Conv2d)]
    linears = [n for n, m in layers if isinstance(m, nn.Linear)]
    keep_fp = set() if config.quantize_first_last else {convs[0] if convs else None, linears[-1] if linears else None}
    for name, layer in layers:
        wq = None if (name in keep_fp or not bits.quantizes_weights) else _weight_quantizer(layer, config)
        wrapper = QuantConv2d(layer, wq) if isinstance(layer, nn.Conv2d) else QuantLinear(layer, wq)
        _set(model, name, wrapper)
    if bits.quantizes_acts or config.method == "qat":
        for name, module in list(model.named_modules()):
            if type(module) is nn.ReLU:
                _set(model, name, _act_quantizer(config))


def _weight_quantizer(layer: nn.Module, config: QuantConfig) -> nn.Module:
    b, ste = config.bits.weight_bits, config.straight_through
    if config.weight_quantizer == "pwlq":
        return PWLQWeightQuantizer(layer.weight.shape[0], b, config.breakpoint, config.bias_correction)
    if config.weight_quantizer == "dorefa":
        return DoReFaWeightQuantizer(b, ste)
    return UniformWeightQuantizer(b, per_channel=config.per_channel, ste=ste)


def _act_quantizer(config: QuantConfig) -> nn.Module:
    b = config.bits.act_bits
    if config.act_quantizer == "pact":
        return PACT(b, config.pact_alpha, config.straight_through)
    return UniformActQuant(b, config.calibration, ste=config.straight_through)


def _set(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` at ``name``, on the device of the model's parameters."""
    device = next(model.parameters()).device
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module.to(device))


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
            b = getattr(layer.weight_quant, "bits", FP_BITS)
            if b < FP_BITS:
                quantized[id(layer.weight)] = layer.weight_quant.storage_bits
    bits = fp = 0
    for t in [*model.parameters(), *model.buffers()]:
        if not t.is_floating_point():
            continue
        fp += 32 * t.numel()
        bits += quantized.get(id(t), 32) * t.numel()
    return {"bits": bits, "bytes": -(-bits // 8), "fp32_bytes": fp // 8}
