"""Quantization: precision specs, straight-through primitives, quantizers, and one verb, :func:`quantize`.

Example:
    >>> qmodel = quantize(model, QuantConfig(method="ptq", precision="A4W4"), calib_images=x)
    >>> qat = quantize(model, QuantConfig(method="qat", precision="A4W4"))  # then train with fit()
"""

from robquant.quant.convert import (ACT_PLACEMENTS, ACT_QUANTIZERS, METHODS, PACT_INITS, WEIGHT_QUANTIZERS,
                                    QuantConfig, calibrate, calibrators, model_size, prepare_structure, quantize)
from robquant.quant.fold import conv_bn_pairs, fold_batchnorm
from robquant.quant.modules import QuantConv2d, QuantInput, QuantLinear
from robquant.quant.pact import PACT, DoReFaWeightQuantizer
from robquant.quant.precision import ALLOWED_BITS, Precision, parse_precision
from robquant.quant.pwlq import (PWLQWeightQuantizer, breakpoint_exact, breakpoint_gauss, breakpoint_laplace,
                                 pwlq_grid)
from robquant.quant.ste import clamp_ste, exact_float32, fake_quant, round_ste
from robquant.quant.uniform import UniformActQuant, UniformWeightQuantizer, uniform_qparams

__all__ = [
    "ACT_PLACEMENTS", "ACT_QUANTIZERS", "ALLOWED_BITS", "PACT_INITS", "QuantInput", "calibrators", "DoReFaWeightQuantizer", "METHODS", "PACT", "PWLQWeightQuantizer",
    "Precision", "QuantConfig", "QuantConv2d", "QuantLinear", "UniformActQuant", "UniformWeightQuantizer",
    "WEIGHT_QUANTIZERS", "breakpoint_exact", "breakpoint_gauss", "breakpoint_laplace", "calibrate",
    "clamp_ste", "conv_bn_pairs", "exact_float32", "fake_quant", "fold_batchnorm", "model_size", "parse_precision",
    "prepare_structure", "pwlq_grid", "quantize", "round_ste", "uniform_qparams",
]
