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
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import torch
from torch import nn

from robquant.errors import ConfigError, check_range
from robquant.models.surgery import modes_restored, replace_module
from robquant.quant.coverage import check_coverage
from robquant.quant.fold import fold_batchnorm
from robquant.quant.modules import QuantConv2d, QuantInput, QuantLinear
from robquant.quant.pact import PACT, DoReFaWeightQuantizer
from robquant.quant.precision import FP_BITS, Precision, parse_precision
from robquant.quant.pwlq import BREAKPOINTS, PWLQWeightQuantizer
from robquant.quant.uniform import CALIBRATIONS, UniformActQuant, UniformWeightQuantizer

METHODS = ("ptq", "qat")
WEIGHT_QUANTIZERS = {"ptq": ("pwlq", "uniform"), "qat": ("dorefa", "uniform")}
ACT_QUANTIZERS = {"ptq": ("uniform",), "qat": ("pact",)}
ACT_PLACEMENTS = {"ptq": ("inputs", "relu"), "qat": ("relu",)}
PACT_INITS = ("data", "fixed")
POOLS = (nn.AdaptiveAvgPool2d, nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveMaxPool2d)


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
        calib_images: Calibration images (PTQ activation ranges; QAT's PACT alpha with
            ``pact_init="data"``).
        calib_batch_size: Images per calibration batch; statistics are taken per batch and
            averaged over batches (4, as PWLQ's code: the batch size changes the ranges).
        act_placement: Where PTQ quantizes activations: ``inputs`` (PWLQ's code: the input of
            every conv, linear and pooling layer; the stem conv's input, the image, only with
            ``quantize_first_last``) or ``relu`` (in place of every ReLU). QAT: ``relu`` (PACT).
        pact_alpha: PACT's clipping level when it is not set from the data (10, PACT's
            from-scratch value).
        pact_init: ``data`` (alpha = the ``pact_percentile``-th percentile of the layer's ReLU
            outputs on the calibration images; for QAT from trained parameters) or ``fixed``
            (``pact_alpha``; for QAT from random parameters).
        pact_percentile: Percentile of ``pact_init="data"``.
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
    calib_batch_size: int = 4
    act_placement: str | None = None
    pact_alpha: float = 10.0
    pact_init: str = "data"
    pact_percentile: float = 99.9
    straight_through: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        object.__setattr__(self, "precision", str(parse_precision(self.precision)))
        if self.weight_quantizer is None:
            object.__setattr__(self, "weight_quantizer", WEIGHT_QUANTIZERS[self.method][0])
        if self.act_quantizer is None:
            object.__setattr__(self, "act_quantizer", ACT_QUANTIZERS[self.method][0])
        if self.act_placement is None:
            object.__setattr__(self, "act_placement", ACT_PLACEMENTS[self.method][0])
        _choice("weight_quantizer", self.weight_quantizer, WEIGHT_QUANTIZERS[self.method], self.method)
        _choice("act_quantizer", self.act_quantizer, ACT_QUANTIZERS[self.method], self.method)
        _choice("act_placement", self.act_placement, ACT_PLACEMENTS[self.method], self.method)
        _choice("pact_init", self.pact_init, PACT_INITS)
        _choice("breakpoint", self.breakpoint, BREAKPOINTS)
        _choice("calibration", self.calibration, CALIBRATIONS)
        check_range("calib_images", self.calib_images, 1)
        check_range("calib_batch_size", self.calib_batch_size, 1)
        check_range("pact_alpha", self.pact_alpha, 0.0, low_open=True)
        check_range("pact_percentile", self.pact_percentile, 0.0, 100.0, low_open=True)

    @property
    def bits(self) -> Precision:
        return parse_precision(self.precision)

    @property
    def needs_calibration(self) -> bool:
        """Whether :func:`quantize` needs calibration images for this config."""
        return self.bits.quantizes_acts and (self.method == "ptq" or self.pact_init == "data")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _choice(field: str, value: object, allowed: tuple[str, ...], method: str | None = None) -> None:
    if value not in allowed:
        where = f" for {method}" if method else ""
        raise ConfigError(f"{field}{where} must be one of {', '.join(allowed)}, got {value!r}")


def quantize(model: nn.Module, config: QuantConfig, calib_images: torch.Tensor | None = None) -> nn.Module:
    """Return a quantized copy of ``model`` (the original is left untouched).

    Args:
        model: A trained (or freshly initialised, for QAT from scratch) model.
        config: What to do.
        calib_images: ``(N, C, H, W)`` images in [0, 1] (the caller picks them from the
            configured data fraction): PTQ's activation ranges, QAT's PACT alpha with
            ``pact_init="data"``; needed when :attr:`QuantConfig.needs_calibration`.

    Returns:
        PTQ: the quantized model in eval mode. QAT: a trainable model in train mode.

    Raises:
        ConfigError: if calibration images are needed and none are given.
    """
    bits = config.bits
    if config.needs_calibration and calib_images is None:
        what = "activation ranges" if config.method == "ptq" else "PACT's alpha (pact_init='data')"
        raise ConfigError(f"{config.method.upper()} at {bits} calibrates {what} and needs calibration images"
                          + ("" if config.method == "ptq" else "; or set pact_init='fixed'"))
    if calib_images is not None and len(calib_images):
        check_coverage(model, config, calib_images[:2].to(next(model.parameters()).device))
    qmodel = copy.deepcopy(model)
    if config.method == "ptq":
        qmodel.eval()
        fold_batchnorm(qmodel)
    else:  # QAT trains every parameter, whatever the source model's flags
        qmodel.requires_grad_(True)
    _swap(qmodel, config)
    if config.method == "ptq":
        for layer in qmodel.modules():  # quantize the weights once
            if isinstance(layer, (QuantConv2d, QuantLinear)):
                layer.freeze()
    if config.needs_calibration:
        # QAT: alpha from the full-precision model's activations. DoReFa rescales the weights
        # (max |w_q| = 1), which BN's running statistics do not know about until training starts
        # (in training mode BN renormalises to the scale the FP model had), so calibrating through
        # the quantized weights in eval mode would measure activations no training step sees.
        with _weights_as_stored(qmodel):
            calibrate(qmodel, calib_images, config.calib_batch_size)
    return qmodel.train() if config.method == "qat" else qmodel.eval()


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


def _swap(model: nn.Module, config: QuantConfig) -> None:
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
        wq = None if (name in keep_fp or not bits.quantizes_weights) else _weight_quantizer(layer, config)
        # the stem conv's input is the image itself: quantized only with the first/last layers
        iq = _act_quantizer(config) if inputs and (name != first or config.quantize_first_last) else None
        cls = QuantConv2d if isinstance(layer, nn.Conv2d) else QuantLinear
        _set(model, name, cls(layer, wq, input_quant=iq))
    for name in pools:
        _set(model, name, QuantInput(model.get_submodule(name), _act_quantizer(config)))
    if bits.quantizes_acts and config.act_placement == "relu":
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
        return PACT(b, config.pact_alpha, config.straight_through, config.pact_percentile)
    return UniformActQuant(b, config.calibration, ste=config.straight_through, relu=config.act_placement == "relu")


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
