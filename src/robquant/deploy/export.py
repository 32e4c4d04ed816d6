"""Export a quantized model as an ONNX QDQ model (QuantizeLinear / DequantizeLinear), the integer
form a deployment runtime (ONNX Runtime, TensorRT, ...) reads.

How each part is written:

- **Activations**: every activation quantizer (PACT, the calibrated uniform quantizers) becomes
  ``Clip -> QuantizeLinear -> DequantizeLinear`` with its own scale and zero point, as uint8
  (unsigned grids) or int8 (signed grids). Bit-widths below 8 keep their low-bit grid in 8-bit
  storage: the Clip limits the codes to the grid's 2^b levels (the opset that torch's exporter
  writes, 17-20, has no 4-bit or 2-bit QDQ types).
- **Weights**: the quantizer's own integer form (:mod:`robquant.quant.grid`, a sum of integer
  tensors with per-channel scales) becomes int8 codes (uint8 where codes reach 128..255) read by a
  per-channel ``DequantizeLinear`` (axis 0). Terms are merged into one tensor where a common
  per-channel scale keeps the codes within 8 bits: uniform weights and DoReFa up to 7 bits become
  one tensor (DoReFa's grid ``2k/L - 1`` as codes ``2k - L`` with scale ``1/L``).
  What cannot merge is exported exactly as a sum of quantized branches, each a conv (or linear)
  over the same quantized input with its own integer weights: PWLQ's centre grid, tail grid,
  breakpoint and bias-correction shift (up to 4 branches), DoReFa at 8 bits (codes 0..255 and
  the offset -1). 16-bit grids have no 8-bit QDQ type and are refused.
- Everything else (BatchNorm of QAT models, residual additions, pooling, full-precision layers)
  is exported as float ops by ``torch.onnx`` and runs in float in the runtime.

The graph comes from ``torch.onnx.export`` (TorchScript exporter, opset 17 by default); the one
change made to it afterwards is folding each weight's QuantizeLinear of a constant into its integer
initializer (``onnx.numpy_helper``), so the file stores integer weights. ``onnx.checker`` checks
the result (with shape inference).
"""

from __future__ import annotations

import copy
import io
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robquant.defaults import OPSET, OPSETS
from robquant.errors import ConfigError, RobquantError
from robquant.models.surgery import replace_module
from robquant.quant.grid import ActGrid, Terms, reconstruct
from robquant.quant.integer import weight_terms
from robquant.quant.modules import QuantConv2d, QuantLinear
from robquant.quant.protocol import ActQuantizer

INT8, UINT8 = (-128, 127), (0, 255)
MAX_DENOMINATOR = 16  # merging terms tries per-channel scales s / d, d = 1..16
INPUT_NAME, OUTPUT_NAME = "images", "logits"


class ExportError(RobquantError):
    """A model (or one of its layers) that cannot be written as QDQ, with the reason."""


def needs_onnx() -> Any:
    """The ``onnx`` package, or a ConfigError naming the install command."""
    try:
        import onnx
    except ImportError:
        raise ConfigError("ONNX export needs the onnx package: pip install 'robquant[onnx]' "
                          "(onnx and onnxruntime)") from None
    return onnx


@dataclass
class Branch:
    """One integer weight tensor of a layer: ``codes`` (integer-valued, the weight's shape) times a
    positive per-output-channel ``scale``; stored as ``storage`` (int8 or uint8 range)."""

    codes: torch.Tensor
    scale: torch.Tensor
    storage: tuple[int, int] = INT8

    def value(self) -> torch.Tensor:
        return reconstruct([(self.codes, self.scale)])


def _normalised(terms: Terms) -> list[Branch]:
    """Terms with positive scales (a sign moves into the codes; a zero scale, whose codes then do
    not matter, becomes 1 with zero codes); all-zero terms dropped."""
    out = []
    for codes, scale in terms:
        codes, scale = codes.double().clone(), scale.double().clone()
        shape = (-1,) + (1,) * (codes.dim() - 1)
        sign = torch.sign(scale)
        codes = codes * sign.view(shape)
        zero = sign == 0
        scale = torch.where(zero, torch.ones_like(scale), scale.abs())
        if bool(codes.ne(0).any()):
            out.append(Branch(codes, scale))
    return out


def _merged(a: Branch, b: Branch, lo: int, hi: int) -> Branch | None:
    """One branch equal to ``a + b`` with codes in [lo, hi], if a per-channel scale ``a.scale / d``
    (d = 1..16) makes both integer; else None."""
    rows_a, rows_b = a.codes.flatten(1), b.codes.flatten(1)
    codes, scales = [], []
    for c in range(len(rows_a)):
        for d in range(1, MAX_DENOMINATOR + 1):
            s = a.scale[c] / d
            r = b.scale[c] / s
            if bool(rows_b[c].ne(0).any()) and abs(float(r) - round(float(r))) > 1e-6 * max(1.0, abs(float(r))):
                continue
            row = rows_a[c] * d + rows_b[c] * round(float(r))
            if float(row.min()) >= lo and float(row.max()) <= hi:
                codes.append(row)
                scales.append(s)
                break
        else:
            return None
    return Branch(torch.stack(codes).view_as(a.codes), torch.stack(scales))


def branches(terms: Terms, what: str) -> list[Branch]:
    """A layer's integer weight terms as few 8-bit branches: each term is merged into an earlier
    branch where a common per-channel scale keeps the codes in int8, else it becomes a branch of
    its own (stored as int8, or uint8 when its codes reach 128-255). The branches' sum is checked
    against the terms' sum.

    Raises:
        ExportError: if a term's codes fit neither int8 nor uint8 (e.g. 16-bit weights).
    """
    out: list[Branch] = []
    for term in _normalised(terms):
        for i, branch in enumerate(out):
            merged = _merged(branch, term, *INT8)
            if merged is not None:
                out[i] = merged
                break
        else:
            out.append(term)
    for branch in out:
        lo, hi = float(branch.codes.min()), float(branch.codes.max())
        if lo >= INT8[0] and hi <= INT8[1]:
            branch.storage = INT8
        elif lo >= UINT8[0] and hi <= UINT8[1]:
            branch.storage = UINT8
        else:
            raise ExportError(f"{what}: weight codes span {lo:g}..{hi:g}, beyond 8 bits; the QDQ types torch's "
                              "exporter writes are int8 and uint8 (16-bit grids need opset 21's int16)")
    want = reconstruct(terms)
    got = sum(b.value() for b in out)
    if bool(((got - want).abs() > 1e-6 * want.abs().max().clamp_min(1e-12)).any()):
        raise ExportError(f"{what}: the exported branches do not add up to the quantized weights")
    return out


def _storage(grid: ActGrid, what: str) -> tuple[int, int]:
    """int8 or uint8 QDQ range holding ``grid``'s codes, or ExportError."""
    for lo, hi in (UINT8, INT8):
        if lo <= grid.qmin and grid.qmax <= hi and lo <= grid.zero_point <= hi:
            return lo, hi
    raise ExportError(f"{what}: an activation grid of {grid.qmax - grid.qmin + 1} levels has no 8-bit QDQ type "
                      "(16-bit activations need opset 21's int16)")


class QDQAct(nn.Module):
    """An activation quantizer as ``Clip -> QuantizeLinear -> DequantizeLinear`` (8-bit storage,
    the Clip keeps the codes on the low-bit grid)."""

    def __init__(self, grid: ActGrid, what: str) -> None:
        super().__init__()
        self.grid, self.range = grid, _storage(grid, what)
        self.lo, self.hi = grid.bounds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.grid.relu and self.lo < 0:
            x = torch.relu(x)
        x = torch.clamp(x, self.lo, self.hi)
        return torch.fake_quantize_per_tensor_affine(x, self.grid.scale, self.grid.zero_point, *self.range)


class QDQLayer(nn.Module):
    """A quantized conv or linear layer: its input quantizer (if it has one), then the sum over its
    weight branches of the layer's op with per-channel QDQ weights, plus the bias once."""

    def __init__(self, layer: QuantConv2d | QuantLinear, parts: list[Branch] | None, input_quant: nn.Module | None
                 ) -> None:
        super().__init__()
        self.input_quant = input_quant
        self.conv = layer if isinstance(layer, QuantConv2d) else None
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().float().clone())
        self.ranges: list[tuple[int, int]] = []
        if parts is None:
            self.register_buffer("weight", layer.weight.detach().float().clone())
        for i, part in enumerate(parts or []):
            self.register_buffer(f"w{i}", part.value().float())
            self.register_buffer(f"s{i}", part.scale.float())
            self.register_buffer(f"z{i}", torch.zeros(len(part.scale), dtype=torch.int32))
            self.ranges.append(part.storage)

    def _op(self, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.conv is not None:
            return self.conv._conv_forward(x, w, bias)
        return F.linear(x, w, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_quant is not None:
            x = self.input_quant(x)
        if not self.ranges:
            return self._op(x, self.weight, self.bias)
        y = None
        for i, (lo, hi) in enumerate(self.ranges):
            w = torch.fake_quantize_per_channel_affine(getattr(self, f"w{i}"), getattr(self, f"s{i}"),
                                                       getattr(self, f"z{i}"), 0, lo, hi)
            part = self._op(x, w, self.bias if i == 0 else None)
            y = part if y is None else y + part
        return y


@dataclass
class ExportGraph:
    """The module ``torch.onnx`` traces, and what it holds."""

    net: nn.Module
    layers: dict[str, int] = field(default_factory=dict)  # layer name -> weight branches (0: float weights)
    activations: dict[str, str] = field(default_factory=dict)  # quantizer name -> "uint8 4-bit" etc.


def _act(quant: ActQuantizer, what: str) -> nn.Module | None:
    """The export form of an activation quantizer (None: it is the identity)."""
    if quant.bits >= 32:  # PACT at 32 bits is a ReLU; a uniform quantizer ReLUs if it replaced one
        return nn.ReLU() if quant.relu else None
    return QDQAct(quant.act_grid(), what)


def export_graph(model: nn.Module) -> ExportGraph:
    """A copy of ``model`` (a model from :func:`~robquant.quant.quantize`, or any model) on the CPU in
    float32 whose quantizers are written as QDQ ops (:class:`QDQAct`, :class:`QDQLayer`); in
    PyTorch it computes what the exported graph computes."""
    net = copy.deepcopy(model).cpu().float().eval()
    graph = ExportGraph(net)
    swaps: list[tuple[str, nn.Module]] = []
    owned = set()
    for name, module in net.named_modules():
        if isinstance(module, (QuantConv2d, QuantLinear)):
            terms = weight_terms(module)
            parts = None if terms is None else branches(terms, f"layer {name}")
            iq = module.input_quant
            qdq_in = None if iq is None else _act(iq, f"input of {name}")
            if iq is not None:
                owned.add(id(iq))
                graph.activations[f"{name}.input_quant"] = _describe(qdq_in, iq)
            swaps.append((name, QDQLayer(module, parts, qdq_in)))
            graph.layers[name] = 0 if parts is None else len(parts)
        elif isinstance(module, ActQuantizer) and id(module) not in owned:
            swaps.append((name, _act(module, name) or nn.Identity()))
            graph.activations[name] = _describe(swaps[-1][1], module)
    for name, wrapper in swaps:
        replace_module(net, name, wrapper)
    return graph


def _describe(qdq: nn.Module | None, quant: nn.Module) -> str:
    if not isinstance(qdq, QDQAct):
        return "float"
    kind = "uint8" if qdq.range == UINT8 else "int8"
    return f"{kind} {quant.bits}-bit"


@dataclass
class ExportInfo:
    """What :func:`export_onnx` wrote."""

    path: str
    opset: int
    seconds: float
    bytes: int
    layers: dict[str, int]
    activations: dict[str, str]
    checked: bool

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _constants(model: Any) -> dict[str, np.ndarray]:
    """Values known before the graph runs: initializers, Constant nodes, and Identity of either."""
    from onnx import numpy_helper

    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            attr = next((a for a in node.attribute if a.name == "value"), None)
            if attr is not None:
                values[node.output[0]] = numpy_helper.to_array(attr.t)
        elif node.op_type == "Identity" and node.input[0] in values:
            values[node.output[0]] = values[node.input[0]]
    return values


def _fold_weight_quantization(model: Any) -> int:
    """Replace every QuantizeLinear of a constant (a weight) by its integer initializer, and drop
    what only it used; returns how many were folded."""
    from onnx import numpy_helper

    values = _constants(model)
    folded, keep = 0, []
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or not all(n in values for n in node.input[:3]):
            keep.append(node)
            continue
        x, scale, zp = (values[n] for n in node.input[:3])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * x.ndim
        if scale.ndim:
            shape[axis] = -1
        info = np.iinfo(zp.dtype)
        codes = np.clip(np.rint(x / scale.reshape(shape)) + zp.reshape(shape).astype(np.int32), info.min, info.max)
        model.graph.initializer.append(numpy_helper.from_array(codes.astype(zp.dtype), node.output[0]))
        folded += 1
    del model.graph.node[:]
    model.graph.node.extend(keep)
    _drop_unused(model)
    return folded


def _drop_unused(model: Any) -> None:
    """Remove nodes and initializers whose outputs nothing reads (what the folding left behind)."""
    outputs = {o.name for o in model.graph.output}
    while True:
        used = outputs | {name for node in model.graph.node for name in node.input}
        dead = [n for n in model.graph.node if not any(o in used for o in n.output)]
        for node in dead:
            model.graph.node.remove(node)
        if not dead:
            break
    used = outputs | {name for node in model.graph.node for name in node.input}
    for init in [i for i in model.graph.initializer if i.name not in used]:
        model.graph.initializer.remove(init)


def _export(net: nn.Module, input_shape: tuple[int, ...], buffer: io.BytesIO, opset: int) -> None:
    torch.onnx.export(net, (torch.zeros(1, *input_shape),), buffer, opset_version=opset, dynamo=False,
                      input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], do_constant_folding=True,
                      dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})


def export_onnx(model: nn.Module, out: str | Path, input_shape: tuple[int, ...], *, opset: int = OPSET,
                metadata: dict[str, str] | None = None) -> ExportInfo:
    """Write ``model`` (quantized or not) as an ONNX QDQ model taking ``(N, *input_shape)`` images in
    [0, 1] (``images``) and returning ``logits``; the batch size is free.

    Args:
        model: The model, e.g. from :func:`~robquant.quant.quantize` or ``load_model``.
        out: The ``.onnx`` file to write (written whole or not at all).
        input_shape: One image's shape, ``(C, H, W)``.
        opset: ONNX opset (13-20; default 17).
        metadata: Written into the model's metadata properties (where it came from).

    Raises:
        ExportError: a layer cannot be written as QDQ (the message says which and why).
        ConfigError: onnx is not installed, or a bad opset.
    """
    onnx = needs_onnx()
    if opset not in OPSETS:
        raise ConfigError(f"opset must be one of {', '.join(map(str, OPSETS))}, got {opset}")
    t0 = time.perf_counter()
    graph = export_graph(model)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        try:
            _export(graph.net, input_shape, buffer, opset)
        except (RuntimeError, TypeError, ValueError) as exc:  # torch.onnx's own message names the op
            raise ExportError(f"torch.onnx cannot export this model: {exc}") from None
    proto = onnx.load_from_string(buffer.getvalue())
    _fold_weight_quantization(proto)
    onnx.helper.set_model_props(proto, {str(k): str(v) for k, v in (metadata or {}).items()})
    onnx.checker.check_model(proto, full_check=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    onnx.save(proto, str(partial))
    partial.replace(out)
    return ExportInfo(str(out), opset, time.perf_counter() - t0, out.stat().st_size, graph.layers,
                      graph.activations, checked=True)
