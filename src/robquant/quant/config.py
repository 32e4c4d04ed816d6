"""How to quantize: one config per method, and the quantizers each method may use, registered by name.

:class:`PTQConfig` (post-training: fold BN, PWLQ or uniform weights, calibrated uniform activations)
and :class:`QATConfig` (quantization-aware training: DoReFa or uniform weights, PACT activations)
each hold only their own options and say how their method prepares a model. Quantizers are
factories registered by name in :data:`WEIGHT_QUANTIZERS` and :data:`ACT_QUANTIZERS`, each declaring
the methods it serves; the configs, the study schema and the CLI's choices all come from them, so
registering a quantizer makes it available everywhere::

    @WEIGHT_QUANTIZERS.register("mine", methods=("ptq",))
    def mine(layer, bits, config): return MyWeightQuantizer(layer.weight.shape[0], bits)

``QuantConfig(method=..., ...)`` builds the config of a method (and reads a record's flat form);
``to_dict()`` gives that flat form, every field of both methods, which stage keys and records hold.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Union

from torch import nn

from robquant.defaults import CALIB_BATCH_SIZE, CALIB_IMAGES, PACT_ALPHA, PACT_PERCENTILE
from robquant.errors import ConfigError, UnknownNameError, check_range
from robquant.quant.pact import PACT, DoReFaWeightQuantizer
from robquant.quant.precision import Precision, parse_precision
from robquant.quant.pwlq import BREAKPOINTS, PWLQWeightQuantizer
from robquant.quant.uniform import CALIBRATIONS, UniformActQuant, UniformWeightQuantizer
from robquant.registry import Registry

METHODS = ("ptq", "qat")
PACT_INITS = ("data", "fixed")


class QuantizerRegistry(Registry[tuple[Callable[..., nn.Module], tuple[str, ...]]]):
    """Quantizer factories by name, each with the methods it serves.

    A weight quantizer's factory is called as ``factory(layer, bits, config)`` (the conv or linear
    module it will quantize), an activation quantizer's as ``factory(bits, config)``.
    """

    def register(self, name: str, methods: tuple[str, ...] = METHODS) -> Callable[[Callable[..., nn.Module]],
                                                                                  Callable[..., nn.Module]]:
        add = super().register(name)

        def register_factory(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
            add((factory, tuple(methods)))
            return factory

        return register_factory

    def names(self, method: str | None = None) -> list[str]:
        """The registered names (serving ``method``), sorted."""
        return [n for n in super().names() if method is None or method in self._items[n][1]]

    def factory(self, name: str, method: str) -> Callable[..., nn.Module]:
        """The factory of ``name`` for ``method``.

        Raises:
            UnknownNameError: naming the quantizers ``method`` can use.
        """
        if name not in self or method not in self._items[name][1]:
            raise UnknownNameError(f"unknown {self.kind} {name!r} for {method}; known: {', '.join(self.names(method))}")
        return self._items[name][0]


WEIGHT_QUANTIZERS = QuantizerRegistry("weight quantizer")
ACT_QUANTIZERS = QuantizerRegistry("activation quantizer")


@WEIGHT_QUANTIZERS.register("pwlq", methods=("ptq",))
def _pwlq(layer: nn.Module, bits: int, config: "PTQConfig") -> nn.Module:
    return PWLQWeightQuantizer(layer.weight.shape[0], bits, config.breakpoint, config.bias_correction)


@WEIGHT_QUANTIZERS.register("dorefa", methods=("qat",))
def _dorefa(layer: nn.Module, bits: int, config: "QATConfig") -> nn.Module:
    return DoReFaWeightQuantizer(bits, config.straight_through)


@WEIGHT_QUANTIZERS.register("uniform")
def _uniform_weights(layer: nn.Module, bits: int, config: "PTQConfig | QATConfig") -> nn.Module:
    return UniformWeightQuantizer(bits, per_channel=config.per_channel, ste=config.straight_through)


@ACT_QUANTIZERS.register("uniform", methods=("ptq",))
def _uniform_acts(bits: int, config: "PTQConfig") -> nn.Module:
    return UniformActQuant(bits, config.calibration, ste=config.straight_through, relu=config.act_placement == "relu")


@ACT_QUANTIZERS.register("pact", methods=("qat",))
def _pact(bits: int, config: "QATConfig") -> nn.Module:
    return PACT(bits, config.pact_alpha, config.straight_through, config.pact_percentile)


def _choice(field: str, value: object, allowed: list[str] | tuple[str, ...], method: str | None = None) -> None:
    if value not in allowed:
        where = f" for {method}" if method else ""
        raise ConfigError(f"{field}{where} must be one of {', '.join(allowed)}, got {value!r}")


@dataclass(frozen=True)
class _Config:
    """What both methods share (validated on construction)."""

    method: ClassVar[str]
    ACT_PLACEMENTS: ClassVar[tuple[str, ...]]

    precision: str = "A32W32"
    weight_quantizer: str = ""  # each method sets its own default
    act_quantizer: str = ""
    act_placement: str = ""
    quantize_first_last: bool = False
    per_channel: bool = True
    calib_images: int = CALIB_IMAGES
    calib_batch_size: int = CALIB_BATCH_SIZE
    straight_through: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "precision", str(parse_precision(self.precision)))
        _choice("weight_quantizer", self.weight_quantizer, WEIGHT_QUANTIZERS.names(self.method), self.method)
        _choice("act_quantizer", self.act_quantizer, ACT_QUANTIZERS.names(self.method), self.method)
        _choice("act_placement", self.act_placement, self.ACT_PLACEMENTS, self.method)
        check_range("calib_images", self.calib_images, 1)
        check_range("calib_batch_size", self.calib_batch_size, 1)

    @property
    def bits(self) -> Precision:
        return parse_precision(self.precision)

    @property
    def needs_calibration(self) -> bool:
        """Whether :func:`~robquant.quant.quantize` needs calibration images for this config."""
        raise NotImplementedError

    def weight_quantizer_for(self, layer: nn.Module) -> nn.Module:
        """A new weight quantizer for ``layer`` at this config's weight bits."""
        return WEIGHT_QUANTIZERS.factory(self.weight_quantizer, self.method)(layer, self.bits.weight_bits, self)

    def act_quantizer_new(self) -> nn.Module:
        """A new activation quantizer at this config's activation bits."""
        return ACT_QUANTIZERS.factory(self.act_quantizer, self.method)(self.bits.act_bits, self)

    def to_dict(self) -> dict[str, Any]:
        """The flat form records and stage keys hold: the method and every field of both methods
        (the other method's at its defaults), as one config held them before configs were per method."""
        flat = {**_FLAT_DEFAULTS, **dataclasses.asdict(self), "method": self.method}
        return {k: flat[k] for k in _FLAT_ORDER}


@dataclass(frozen=True)
class PTQConfig(_Config):
    """Post-training quantization: fold BN, quantize the weights once, calibrate the activations.

    Attributes:
        precision: ``AxWy``, activation bits first (A32W32 = full precision).
        weight_quantizer: A registered one serving PTQ: ``pwlq`` (default) or ``uniform``.
        act_quantizer: ``uniform`` (calibrated per layer).
        quantize_first_last: Also quantize the first conv and the last linear layer.
        breakpoint: PWLQ breakpoint rule: ``gauss``, ``laplace``, ``exact`` or ``search``.
        bias_correction: PWLQ per-channel mean/std correction.
        per_channel: Uniform weights per output channel (else per tensor).
        calibration: Activation range rule: ``topk_median`` (PWLQ's) or ``minmax``.
        calib_images: Calibration images.
        calib_batch_size: Images per calibration batch; statistics are averaged over batches (4,
            as PWLQ's code: the batch size changes the ranges).
        act_placement: ``inputs`` (PWLQ's code: the input of every conv, linear and pooling layer;
            the stem conv's input, the image, only with ``quantize_first_last``) or ``relu``.
        straight_through: Straight-through gradients for every rounding; False builds a
            gradient-masked model (for testing the trust checks only).
    """

    method: ClassVar[str] = "ptq"
    ACT_PLACEMENTS: ClassVar[tuple[str, ...]] = ("inputs", "relu")

    weight_quantizer: str = "pwlq"
    act_quantizer: str = "uniform"
    act_placement: str = "inputs"
    breakpoint: str = "gauss"
    bias_correction: bool = True
    calibration: str = "topk_median"

    def __post_init__(self) -> None:
        super().__post_init__()
        _choice("breakpoint", self.breakpoint, BREAKPOINTS)
        _choice("calibration", self.calibration, CALIBRATIONS)

    @property
    def needs_calibration(self) -> bool:
        return self.bits.quantizes_acts


@dataclass(frozen=True)
class QATConfig(_Config):
    """Quantization-aware training: weights quantized on every forward, PACT activations in place of
    the ReLUs (at 32 activation bits the ReLUs stay), then the ordinary training loop.

    Attributes:
        precision: ``AxWy``, activation bits first.
        weight_quantizer: A registered one serving QAT: ``dorefa`` (default) or ``uniform``.
        act_quantizer: ``pact``.
        act_placement: ``relu`` (PACT replaces each ReLU).
        pact_alpha: PACT's clipping level when not set from the data (10, PACT's from-scratch value).
        pact_init: ``data`` (alpha = the ``pact_percentile``-th percentile of each layer's ReLU
            outputs on the calibration images; for QAT from trained parameters) or ``fixed``
            (``pact_alpha``; for QAT from random parameters).
        pact_percentile: The percentile of ``pact_init="data"``.
        calib_images, calib_batch_size: The images PACT's alpha is set from (``pact_init="data"``).
        quantize_first_last, per_channel, straight_through: As for :class:`PTQConfig`.
    """

    method: ClassVar[str] = "qat"
    ACT_PLACEMENTS: ClassVar[tuple[str, ...]] = ("relu",)

    weight_quantizer: str = "dorefa"
    act_quantizer: str = "pact"
    act_placement: str = "relu"
    pact_alpha: float = PACT_ALPHA
    pact_init: str = "data"
    pact_percentile: float = PACT_PERCENTILE

    def __post_init__(self) -> None:
        super().__post_init__()
        _choice("pact_init", self.pact_init, PACT_INITS)
        check_range("pact_alpha", self.pact_alpha, 0.0, low_open=True)
        check_range("pact_percentile", self.pact_percentile, 0.0, 100.0, low_open=True)

    @property
    def needs_calibration(self) -> bool:
        return self.bits.quantizes_acts and self.pact_init == "data"


AnyQuantConfig = Union[PTQConfig, QATConfig]
CONFIGS: dict[str, type] = {"ptq": PTQConfig, "qat": QATConfig}
_FLAT_ORDER = ("method", "precision", "weight_quantizer", "act_quantizer", "quantize_first_last", "breakpoint",
               "bias_correction", "per_channel", "calibration", "calib_images", "calib_batch_size", "act_placement",
               "pact_alpha", "pact_init", "pact_percentile", "straight_through")
_FLAT_DEFAULTS = {**{f.name: f.default for f in dataclasses.fields(PTQConfig)},
                  **{f.name: f.default for f in dataclasses.fields(QATConfig) if f.name.startswith("pact_")}}


def QuantConfig(method: str = "ptq", **options: Any) -> AnyQuantConfig:  # noqa: N802 (a config's constructor)
    """The config of ``method`` (``ptq`` or ``qat``) with ``options``; ``None`` leaves an option at
    its default. Also reads a record's flat form (:meth:`to_dict`): the options the method does not
    have must then be at their defaults.

    Raises:
        ConfigError: an unknown method or option, or a value out of its choices or range.
    """
    if method not in CONFIGS:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    cls = CONFIGS[method]
    own = {f.name for f in dataclasses.fields(cls)}
    given = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(k for k in given if k not in own and k not in _FLAT_DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown quantization option(s) {', '.join(unknown)}; "
                          f"{method} takes {', '.join(sorted(own))}")
    foreign = sorted(k for k in given if k not in own and given[k] != _FLAT_DEFAULTS[k])
    if foreign:
        raise ConfigError(f"{', '.join(foreign)}: not an option of {method} (it takes {', '.join(sorted(own))})")
    return cls(**{k: v for k, v in given.items() if k in own})


def quant_config_from_dict(flat: dict[str, Any]) -> AnyQuantConfig:
    """The config a record's flat form (:meth:`to_dict`) describes; the other method's fields are ignored."""
    cls = CONFIGS.get(flat.get("method", "ptq"))
    if cls is None:
        raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {flat.get('method')!r}")
    own = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in flat.items() if k in own})


def is_quant_config(obj: Any) -> bool:
    """Whether ``obj`` is a method's config (its keyed form is :meth:`to_dict`)."""
    return isinstance(obj, _Config)
