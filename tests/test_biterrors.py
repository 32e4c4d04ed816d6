"""Random bit errors in stored weights: p = 0 changes nothing, the number of flipped bits is binomial in
p x the stored bits, the flips are exactly the words' changed bits, a high rate breaks a trained model,
and bad options are refused by name."""

import math

import numpy as np
import pytest
import torch

from robquant.attacks.biterrors import apply_bit_errors, bit_error_evaluation
from robquant.attacks.bitflip import FlippableModel
from robquant.errors import CheckpointError, ConfigError
from robquant.evaluation.addons import BitErrorRun
from robquant.evaluation.outcomes import load_grid, save_grid
from robquant.quant import QuantConfig, quantize


@pytest.fixture(scope="module")
def a4w4(clean_model, digits_test):
    calib = digits_test.images.float()[:64] / 255
    return quantize(clean_model, QuantConfig(method="ptq", precision="A4W4", weight_quantizer="pwlq"), calib_images=calib)


def test_no_errors_change_nothing(a4w4, digits_test):
    fm = FlippableModel(a4w4)
    before = {name: (m.weight.detach().clone(), s.words.clone()) for name, (m, s) in fm.layers.items()}
    assert apply_bit_errors(fm, 0.0, torch.Generator().manual_seed(0)) == 0
    for name, (m, s) in fm.layers.items():
        assert torch.equal(m.weight, before[name][0]) and torch.equal(s.words, before[name][1])
    result, correct = bit_error_evaluation(a4w4, digits_test, n=200, rates=[0.0], draws=2)
    assert correct.shape == (1, 2, 200)
    assert result["accuracy"] == [[result["clean_accuracy"]] * 2] and result["flipped"] == [[0, 0]]
    assert result["clean_accuracy"] > 0.9  # the model first classifies its examples


def test_flipped_bits_are_binomial_and_are_the_words_changed_bits(a4w4):
    fm = FlippableModel(a4w4)
    base = {name: s.words.clone() for name, (_, s) in fm.layers.items()}
    p, draws, gen = 1e-3, 30, torch.Generator().manual_seed(1)
    counts = []
    for _ in range(draws):
        flipped = apply_bit_errors(fm, p, gen)
        changed = sum(bin(int(v)).count("1") for name, (_, s) in fm.layers.items()
                      for v in (s.words ^ base[name]).view(-1) if v)
        assert changed == flipped  # every flip is one bit of a stored word, none lost, none twice
        for name, (m, s) in fm.layers.items():  # the weights are what the words decode to
            w = m.weight.detach().double()
            assert torch.allclose(s.weights(), w, rtol=0, atol=1e-5 * float(w.abs().max())), name
            assert int(s.words.max()) <= s.top
        counts.append(flipped)
    total = draws * fm.total_bits
    mean, sd = p * total, math.sqrt(total * p * (1 - p))
    assert abs(sum(counts) - mean) < 4 * sd, (sum(counts), mean, sd)  # 4 sigma: fails 1 in 16,000 by chance
    fm.reset()
    assert all(torch.equal(s.words, base[name]) for name, (_, s) in fm.layers.items())


def test_a_high_rate_breaks_the_model_and_draws_are_seeded(a4w4, digits_test, tmp_path):
    result, correct = bit_error_evaluation(a4w4, digits_test, n=200, rates=[1e-4, 0.2], draws=3, seed=5)
    low, high = (np.mean(a) for a in result["accuracy"])
    assert high < result["clean_accuracy"] - 0.4 and high < low
    again, correct_again = bit_error_evaluation(a4w4, digits_test, n=200, rates=[1e-4, 0.2], draws=3, seed=5)
    assert np.array_equal(correct, correct_again) and again["flipped"] == result["flipped"]
    saved = save_grid(tmp_path / "e.npz", correct, rates=[1e-4, 0.2], draws=[0, 1, 2])
    axes, loaded = load_grid(tmp_path / "e.npz")
    assert np.array_equal(loaded, correct) and list(axes["rates"]) == [1e-4, 0.2] and saved["shape"] == [2, 3, 200]
    (tmp_path / "bad.npz").write_bytes(b"not a file")
    with pytest.raises(CheckpointError, match="bad.npz"):
        load_grid(tmp_path / "bad.npz")


def test_bad_options_are_refused_by_name(clean_model, digits_test):
    with pytest.raises(ConfigError, match="bit_errors rates"):
        BitErrorRun.of(100, [1e-3, 1.5])
    with pytest.raises(ConfigError, match="bit_errors draws"):
        BitErrorRun.of(100, [1e-3], draws=0)
    with pytest.raises(ConfigError, match="quantized weights"):
        bit_error_evaluation(clean_model, digits_test, n=10, rates=[1e-3])
