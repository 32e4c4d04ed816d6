"""Quantization: precision specs, straight-through primitives, quantizers registered by name, one config per
method, and one verb, :func:`quantize`.

Example:
    >>> qmodel = quantize(model, PTQConfig(precision="A4W4"), calib_images=x)
    >>> qat = quantize(model, QATConfig(precision="A4W4"), calib_images=x)  # then train with fit()
    >>> QuantConfig(method="qat", precision="A4W4")  # the same, by method name
"""

from robquant.quant.config import (ACT_QUANTIZERS, METHODS, PACT_INITS, WEIGHT_QUANTIZERS, AnyQuantConfig, PTQConfig,
                                   QATConfig, QuantConfig, quant_config_from_dict)
from robquant.quant.convert import calibrate, calibrators, model_size, prepare_structure, quantize
from robquant.quant.fold import conv_bn_pairs, fold_batchnorm
from robquant.quant.modules import QuantConv2d, QuantInput, QuantLinear
from robquant.quant.pact import PACT, DoReFaWeightQuantizer
from robquant.quant.precision import ALLOWED_BITS, Precision, parse_precision
from robquant.quant.pwlq import (PWLQWeightQuantizer, breakpoint_exact, breakpoint_gauss, breakpoint_laplace,
                                 pwlq_grid)
from robquant.quant.ste import clamp_ste, exact_float32, fake_quant, round_ste
from robquant.quant.uniform import UniformActQuant, UniformWeightQuantizer, uniform_qparams

__all__ = [
    "ACT_QUANTIZERS", "ALLOWED_BITS", "AnyQuantConfig", "DoReFaWeightQuantizer", "METHODS", "PACT", "PACT_INITS",
    "PTQConfig", "PWLQWeightQuantizer", "Precision", "QATConfig", "QuantConfig", "QuantConv2d", "QuantInput",
    "QuantLinear", "UniformActQuant", "UniformWeightQuantizer", "WEIGHT_QUANTIZERS", "breakpoint_exact",
    "breakpoint_gauss", "breakpoint_laplace", "calibrate", "calibrators", "clamp_ste", "conv_bn_pairs",
    "exact_float32", "fake_quant", "fold_batchnorm", "model_size", "parse_precision", "prepare_structure",
    "pwlq_grid", "quant_config_from_dict", "quantize", "round_ste", "uniform_qparams",
]
