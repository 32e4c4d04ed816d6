"""Fidelity to the paper's protocol and the original methods' code: PACT's alpha from the data,
A32 = ReLU, PWLQ's calibration batches and activation placement."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robquant.data import create_dataset
from robquant.errors import ConfigError
from robquant.quant import PACT, QuantConfig, QuantConv2d, QuantInput, QuantLinear, UniformActQuant, quantize
from robquant.quant.convert import calibrate
from robquant.quant.integer import integer_agreement


@pytest.fixture(scope="module")
def calib():
    return create_dataset("digits", split="train").images[:256].float() / 255


def _relu_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The output of every ReLU module of ``model`` on ``x``, by module name."""
    out, hooks = {}, []
    for name, m in model.named_modules():
        if isinstance(m, nn.ReLU):
            hooks.append(m.register_forward_hook(lambda mod, i, o, name=name: out.setdefault(name, []).append(o)))
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return {k: torch.cat([t.flatten() for t in v]) for k, v in out.items()}


def test_pact_alpha_starts_at_a_high_percentile_of_each_layers_activations(clean_model, calib):
    q = quantize(clean_model, QuantConfig(method="qat", precision="A4W4", pact_percentile=99.0), calib_images=calib)
    acts = _relu_outputs(clean_model, calib)
    pacts = {n: m for n, m in q.named_modules() if isinstance(m, PACT)}
    assert set(pacts) == set(acts) and len(pacts) == 19  # every ReLU site, the residual ones included
    for name, pact in pacts.items():
        a, alpha = acts[name], float(pact.alpha.detach())
        assert 0 < alpha <= float(a.max())  # inside the layer's activation range
        # about 1 % of the layer's activations lie above it (per-batch percentiles, averaged)
        assert 0.002 < float((a > alpha).float().mean()) < 0.03, name
    assert q.training  # ready for QAT
    fixed = quantize(clean_model, QuantConfig(method="qat", precision="A4W4", pact_init="fixed"))
    assert all(float(m.alpha.detach()) == 10.0 for m in fixed.modules() if isinstance(m, PACT))
    with pytest.raises(ConfigError, match="calibration images"):
        quantize(clean_model, QuantConfig(method="qat", precision="A4W4"))


def test_pact_alpha_from_data_moves_during_qat(clean_model, calib):
    """With alpha from the data, a share of activations reach it, so its gradient is not zero."""
    q = quantize(clean_model, QuantConfig(method="qat", precision="A2W2"), calib_images=calib)
    y = create_dataset("digits", split="train").labels[:256]
    loss = nn.functional.cross_entropy(q(calib), y)
    loss.backward()
    grads = [m.alpha.grad for m in q.modules() if isinstance(m, PACT)]
    assert sum(float(g.abs()) > 0 for g in grads) >= 15


@pytest.mark.parametrize("precision", ["A32W32", "A32W4"])
def test_qat_at_32_activation_bits_keeps_plain_relus(clean_model, calib, precision):
    q = quantize(clean_model, QuantConfig(method="qat", precision=precision), calib_images=calib)
    assert not any(isinstance(m, PACT) for m in q.modules())
    assert sum(type(m) is nn.ReLU for m in q.modules()) == 19
    if precision == "A32W32":  # the FP model's function at step 0
        q.eval()
        with torch.no_grad():
            assert torch.equal(q(calib), clean_model.eval()(calib))
    assert PACT(32)(torch.tensor([-1.0, 3.0, 50.0])).tolist() == [0.0, 3.0, 50.0]  # never clipped


def test_calibration_follows_pwlq_code_on_a_fixed_tensor():
    """Per batch of 4 images: the lower median of the 10 smallest and of the 10 largest values
    (torch.median of the sorted top-10, as PWLQ's act_clip_bounds), averaged over batches."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        x = torch.distributions.Laplace(0.0, 1.0).sample((32, 3, 5, 5))  # signed, heavy tails
    q = UniformActQuant(4, relu=False)
    holder = nn.Sequential(nn.Identity(), q, nn.Conv2d(3, 1, 1))
    calibrate(holder, x, batch_size=4)
    lows, highs = [], []
    for i in range(0, 32, 4):
        v = x[i:i + 4].flatten().sort().values
        lows.append(v[4])  # the 10 smallest are v[0..9]: lower median v[4]
        highs.append(v[-6])  # the 10 largest are v[-10..-1]: lower median v[-6]
    assert float(q.range_lo) == pytest.approx(float(torch.stack(lows).mean()), abs=1e-6)
    assert float(q.range_hi) == pytest.approx(float(torch.stack(highs).mean()), abs=1e-6)
    assert int(q.batches) == 8
    # the grid: signed symmetric on +-max(|r_l|, r_u), steps of 2 m / 15, levels -8..7
    m = max(-float(q.range_lo), float(q.range_hi))
    steps = q(x) / (2 * m / 15)
    assert torch.allclose(steps, steps.round(), atol=1e-4)
    assert steps.round().min() == -8 and steps.round().max() == 7
    # larger batches reach further into the tail: a wider range
    wide = UniformActQuant(4, relu=False)
    calibrate(nn.Sequential(wide, nn.Conv2d(3, 1, 1)), x, batch_size=32)
    assert float(wide.range_hi) > float(q.range_hi) and float(wide.range_lo) < float(q.range_lo)


def test_ptq_quantizes_the_inputs_of_every_conv_linear_and_pooling_layer(clean_model, calib, digits_test):
    q = quantize(clean_model, QuantConfig(method="ptq", precision="A4W4"), calib_images=calib)
    layers = [m for m in q.modules() if isinstance(m, (QuantConv2d, QuantLinear))]
    assert layers[0].input_quant is None  # the stem conv reads the image (full-precision first layer)
    assert all(isinstance(m.input_quant, UniformActQuant) and not m.input_quant.relu for m in layers[1:])
    assert isinstance(q.pool, QuantInput) and sum(type(m) is nn.ReLU for m in q.modules()) == 19
    assert QuantConfig(method="ptq").act_placement == "inputs"
    # the pooled features that feed the last (full-precision) linear layer lie on its grid
    seen = {}
    hook = q.fc.register_forward_pre_hook(lambda mod, args: seen.setdefault("x", args[0]))
    with torch.no_grad():
        q(calib[:16])
    hook.remove()
    fq = q.fc.input_quant
    coded = fq(seen["x"]) / (fq.range_hi / 15)
    assert torch.allclose(coded, coded.round(), atol=1e-4)
    # the old placement is an option: every ReLU replaced, the pooled features left alone
    old = quantize(clean_model, QuantConfig(method="ptq", precision="A4W4", act_placement="relu"), calib_images=calib)
    assert sum(isinstance(m, UniformActQuant) and m.relu for m in old.modules()) == 19
    assert old.fc.input_quant is None
    with pytest.raises(ConfigError, match="act_placement for qat must be one of relu"):
        QuantConfig(method="qat", act_placement="inputs")
    # integer execution covers the new placement
    x = digits_test.images[:200].float() / 255
    result = integer_agreement(q, x)
    assert result["clean_agreement"] >= 0.99 and result["layers"]["integer"] == 18  # all but the FP stem and fc
