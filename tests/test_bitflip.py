"""Bit flips in stored weights: words decode to the weights, a flip is one bit within the field, the
progressive bit search breaks a trained model with far fewer flips than random ones, and a flipped
model exports and runs on ONNX Runtime as it computes."""

import pytest
import torch

from robquant.attacks.bitflip import FlippableModel, PrefixRerun, bitflip_evaluation, flips_to_break, random_flips
from robquant.errors import ConfigError
from robquant.quant import QuantConfig, quantize

SHAPE = (1, 8, 8)


def _quantized(model, digits_test, method, quantizer, bits):
    calib = digits_test.images.float()[:64] / 255
    cfg = QuantConfig(method=method, precision=f"A8W{bits}", weight_quantizer=quantizer)
    return quantize(model, cfg, calib_images=calib if cfg.needs_calibration else None)


@pytest.mark.parametrize("method,quantizer", [("ptq", "pwlq"), ("ptq", "uniform"), ("qat", "dorefa"),
                                              ("qat", "uniform")])
def test_words_decode_to_the_weights_and_a_flip_is_one_bit_within_the_field(clean_model, digits_test, method,
                                                                           quantizer):
    for bits in (2, 4, 8):
        fm = FlippableModel(_quantized(clean_model, digits_test, method, quantizer, bits))
        for name, (layer, store) in fm.layers.items():
            w = layer.weight.detach().double()
            assert torch.allclose(store.weights(), w, rtol=0, atol=1e-5 * float(w.abs().max())), name
            assert int(store.words.min()) >= 0 and int(store.words.max()) <= store.top
            assert store.bits == bits + (1 if quantizer == "pwlq" and method == "ptq" else 0)
        for name, index, bit in random_flips(fm, 40, torch.Generator().manual_seed(bits)):
            before = fm.words(name)
            flip = fm.flip(name, index, bit)
            after = fm.words(name)
            changed = (before != after).nonzero()
            assert len(changed) == 1  # one word of one layer
            xor = int(before.view(-1)[index]) ^ int(after.view(-1)[index])
            assert xor == 1 << bit and bin(xor).count("1") == 1  # exactly one bit
            assert 0 <= flip.after <= fm.layers[name][1].top  # within the stored field
            layer, store = fm.layers[name]
            assert torch.allclose(layer.weight.detach().double(), store.weights(), rtol=0,
                                  atol=1e-5 * float(layer.weight.abs().max()))


@pytest.mark.parametrize("method,quantizer", [("ptq", "uniform"), ("qat", "dorefa"), ("qat", "uniform")])
def test_every_word_decodes_on_the_layers_grid(clean_model, digits_test, method, quantizer):
    """Any word of the field, not only the stored ones, is one of the grid's levels: a flip of any bit
    of any weight stays within the channel's grid (uniform: -2^(b-1)..2^(b-1)-1 steps; DoReFa: [-1, 1])."""
    for bits in (4, 8):
        fm = FlippableModel(_quantized(clean_model, digits_test, method, quantizer, bits))
        for name, (layer, store) in fm.layers.items():
            assert store.signed == (quantizer == "uniform"), name
            w = layer.weight.detach().double()
            for bit in range(store.bits):
                flipped = store.decode(store.words ^ (1 << bit))
                if quantizer == "dorefa":
                    levels = 2**bits - 1
                    k = (flipped + 1) * levels / 2
                    assert bool((k - k.round()).abs().max() < 1e-6) and k.min() >= 0 and k.max() <= levels, name
                else:  # W = s c: the step of each channel from its stored codes
                    codes = store.codes().double()
                    step = (w / codes.where(codes != 0, torch.ones_like(w))).flatten(1).abs().max(1).values
                    c = flipped.flatten(1) / step[:, None]
                    assert bool((c - c.round()).abs().max() < 1e-4), name
                    assert c.min() >= -(2 ** (bits - 1)) - 1e-4 and c.max() <= 2 ** (bits - 1) - 1 + 1e-4, name


def test_a_constant_channel_flips_within_the_layers_range(clean_model, digits_test):
    model = _quantized(clean_model, digits_test, "ptq", "uniform", 8)
    name, layer = next((n, m) for n, m in model.named_modules() if getattr(m, "weight_quant", None) is not None
                       and m.weight_quant.bits == 8)
    layer.freeze()
    with torch.no_grad():
        layer.weight[0] = 0.0  # a dead channel: every weight equal
    fm = FlippableModel(model)
    store = fm.layers[name][1]
    reach = layer.weight.detach().abs().max().double()
    for bit in range(store.bits):
        flipped = store.decode(store.words ^ (1 << bit))[0]
        assert float(flipped.abs().max()) <= float(reach) * 1.01 + 1e-12, bit  # not a jump of 2^bit
    assert float(store.decode(store.words)[0].abs().max()) == 0.0


@pytest.mark.parametrize("quantizer", ["uniform", "dorefa"])
def test_flipped_models_export_int8_weights_that_differ_in_exactly_the_flipped_bits(clean_model, digits_test,
                                                                                   tmp_path, quantizer):
    onnx = pytest.importorskip("onnx", reason="onnx is not installed (the extra robquant[onnx])")
    from onnx import numpy_helper

    from robquant.deploy import export_onnx

    bits = 8 if quantizer == "uniform" else 6  # DoReFa up to 7 bits exports as one int8 tensor, 2k - L
    model = _quantized(clean_model, digits_test, "ptq" if quantizer == "uniform" else "qat", quantizer, bits)
    fm = FlippableModel(model)
    original = {n: store.codes() for n, (_, store) in fm.layers.items()}
    flips = {}
    for name, index, bit in random_flips(fm, 12, torch.Generator().manual_seed(3)):
        if (name, index) not in flips:
            flips[name, index] = fm.flip(name, index, bit)

    def int8(m, path):
        export_onnx(m, path, SHAPE)
        proto = onnx.load(str(path))
        return [numpy_helper.to_array(i) for i in proto.graph.initializer
                if i.data_type == onnx.TensorProto.INT8 and len(i.dims) >= 2]  # weights, not zero points

    before, after = int8(FlippableModel(model).model, tmp_path / "a.onnx"), int8(fm.model, tmp_path / "b.onnx")
    assert len(before) == len(after) == len(fm.layers)  # one int8 tensor per quantized layer
    xor = [(torch.from_numpy(a.astype("int16")) ^ torch.from_numpy(b.astype("int16"))) & 0xFF
           for a, b in zip(before, after)]
    changed = sorted(int(v) for x in xor for v in x[x != 0])
    if quantizer == "uniform":  # the int8 the export writes is the stored word: exactly the flipped bits
        assert changed == sorted(1 << f.bit for f in flips.values())
    else:  # the export writes 2k - L: a flip of bit j of k moves it by 2^(j+1), nothing else changes
        assert len(changed) == len(flips)
        levels = 2**bits - 1
        for a in before:
            assert any(torch.equal(torch.from_numpy(a.astype("int64")), 2 * c - levels) for c in original.values())
        moved = sorted(abs((b.astype("int64") - a.astype("int64"))).max() for a, b in zip(before, after)
                       if (a != b).any())
        assert all(m in {2 ** (f.bit + 1) for f in flips.values()} for m in moved)


def test_the_attack_batch_never_overlaps_the_judged_examples(clean_model, digits_test):
    model = _quantized(clean_model, digits_test, "ptq", "pwlq", 8)
    n = len(digits_test) - 50
    with pytest.raises(ConfigError, match=rf"bitflip: n \({n}\) \+ attack_batch \(128\) exceed the test split's "
                       rf"{len(digits_test)} examples.*attack_batch to at most 50"):
        bitflip_evaluation(model, digits_test, n=n, seeds=(0,), methods=("search",))


def _full_loss(model, x, y):
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(model(x), y))


@pytest.mark.parametrize("method,quantizer", [("ptq", "pwlq"), ("qat", "dorefa")])
def test_rerun_from_a_flipped_layer_gives_the_full_forwards_loss(clean_model, digits_test, method, quantizer):
    fm = FlippableModel(_quantized(clean_model, digits_test, method, quantizer, 4))
    x, y = digits_test.images.float()[:64] / 255, digits_test.labels[:64]
    layers = [m for m, _ in fm.layers.values()]
    prefix = PrefixRerun(fm.model, x, layers)
    def kept(p):
        return [m for m, (_, _, out, _) in p.calls.items() if out is not None]

    assert not any(m in kept(prefix) for layer in layers for m in layer.modules() if m is not layer)  # run inside
    assert len(kept(prefix)) < len(kept(PrefixRerun(fm.model, x)))  # only what a rerun from these layers uses
    for k, name in enumerate(fm.layers):
        flip = fm.flip(name, k * 7 % fm.layers[name][1].words.numel(), fm.layers[name][1].bits - 1)
        assert prefix.loss(fm.layers[name][0], y) == _full_loss(fm.model, x, y), name  # bit for bit
        fm.flip(flip.layer, flip.index, flip.bit)
    assert not any("forward" in m.__dict__ for m in fm.model.modules())  # every module as it was


def test_rerun_with_a_shared_in_place_module():
    """A module called twice always runs; a later in-place op does not change a recorded output."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = (torch.nn.Conv2d(3, 3, 3, padding=1) for _ in range(3))
            self.act = torch.nn.ReLU(inplace=True)  # shared: called after a and after b
            self.head = torch.nn.Linear(3 * 8 * 8, 4)

        def forward(self, x):
            h = self.act(self.a(x))
            g = self.b(h)
            g += h  # in place on b's output after its call
            h = self.c(self.act(g))
            return self.head(h.flatten(1))

    torch.manual_seed(0)
    net, x, y = Net().eval(), torch.rand(5, 3, 8, 8), torch.tensor([0, 1, 2, 3, 0])
    for prefix in (PrefixRerun(net, x), PrefixRerun(net, x, [net.a, net.b, net.c, net.head])):
        _changed_layers_rerun(net, prefix, x, y)


def _changed_layers_rerun(net, prefix, x, y):
    for layer in (net.a, net.b, net.c, net.head):
        with torch.no_grad():
            layer.weight.mul_(-1.5)
        assert prefix.loss(layer, y) == _full_loss(net, x, y)
        assert prefix.loss(layer, y) == _full_loss(net, x, y)  # the recording is unchanged by the rerun
        with torch.no_grad():
            layer.weight.div_(-1.5)


def test_full_precision_models_have_nothing_to_flip(clean_model):
    with pytest.raises(ConfigError, match="bit flips need quantized weights"):
        FlippableModel(clean_model)


@pytest.fixture(scope="module")
def searched(clean_model, digits_test):
    """PTQ A8W8 (PWLQ) of the clean digits model, broken by the bit search and by random flips."""
    model = _quantized(clean_model, digits_test, "ptq", "pwlq", 8)
    result = bitflip_evaluation(model, digits_test, n=200, seeds=(0,), search_cap=60, random_cap=1000)
    return model, result


def test_bit_search_needs_5x_fewer_flips_than_random(searched, digits_test):
    model, result = searched
    search, random = result["summary"]["search"], result["summary"]["random"]
    (s,), (r,) = search["flips"], random["flips"]
    # broken within the search's cap; how many flips it takes depends on the trained model, which
    # differs from CPU to CPU with float rounding (30 on one, 34 on another): the claim is the ratio
    assert s is not None, search
    fewest_random = r if r is not None else random["cap"]  # not broken within the cap: at least the cap
    assert fewest_random >= 5 * s, (search, random)
    run = next(r for r in result["runs"] if r["method"] == "search")
    majority = torch.bincount(digits_test.labels[:200]).max().item() / 200  # chance: the best constant answer
    assert run["accuracy_before"] > 0.9 and run["accuracy_after"] <= result["target"] == pytest.approx(majority + 0.01)
    assert result["disjoint"]  # the attack batch came from outside the 200 judged examples


def test_a_flipped_model_exports_and_the_runtime_shows_the_same_drop(clean_model, digits_test, tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (the extra robquant[onnx])")
    from robquant.deploy import RuntimeModel, export_onnx

    model = _quantized(clean_model, digits_test, "ptq", "pwlq", 8)
    x, y = digits_test.images.float()[:200] / 255, digits_test.labels[:200]
    attack = (digits_test.images.float()[200:328] / 255, digits_test.labels[200:328])
    run = flips_to_break(model, attack, (x, y), target=0.5, cap=30)
    assert run["broken"]
    fm = FlippableModel(model)
    for b in run["bits"]:  # the same flips, replayed
        fm.flip(b["layer"], b["index"], b["bit"])
    export_onnx(fm.model, tmp_path / "flipped.onnx", SHAPE)
    with torch.no_grad():
        ours, theirs = fm.model(x).argmax(1), RuntimeModel(tmp_path / "flipped.onnx")(x).argmax(1)
    assert (ours == theirs).float().mean() >= 0.99
    acc = (theirs == y).float().mean().item()
    assert acc == pytest.approx(run["accuracy_after"], abs=0.01) and acc <= 0.5 < run["accuracy_before"]


def test_cli_attack_bitflip(demo_models, tmp_path):
    """`robquant attack DIR --attack bitflip` records the flips to break a quantized model in its
    evaluation stage; a full-precision model is refused by name, before any work."""
    from typer.testing import CliRunner

    from robquant.cli import app
    from robquant.pipeline import quantize_model

    def cli(*args):
        result = CliRunner().invoke(app, ["--quiet", *map(str, args)])
        return result.exit_code, " ".join(result.output.split())

    fp = demo_models["non_robust"][0]
    code, text = cli("attack", fp, "--attack", "bitflip", "--store", tmp_path / "store")
    assert code == 2 and "stores its weights in full precision (quantize it first)" in text
    assert not (tmp_path / "store").exists()  # refused before any work
    quantize_model(fp, quant=QuantConfig(method="ptq", precision="A8W4", calib_images=64), out=tmp_path / "q")
    code, text = cli("attack", tmp_path / "q", "--attack", "bitflip", "--bitflip-caps", "50", "--out", tmp_path / "x")
    assert code == 2 and "--bitflip-caps must be two whole numbers >= 1" in text and "'50'" in text
    assert not (tmp_path / "x").exists()
    code, text = cli("attack", tmp_path / "q", "--attack", "pgd,bitflip", "--eps", "8", "--n-test", "100",
                     "--steps", "5", "--bitflip-seeds", "1", "--bitflip-batch", "64", "--bitflip-caps", "60,300",
                     "--out", tmp_path / "q-attack")
    assert code == 0, text
    assert "bit flips to break it" in text and "search" in text and "random" in text
    import json

    record = json.loads((tmp_path / "q-attack" / "stage.json").read_text())
    assert record["config"]["bitflip"]["seeds"] == [0] and record["config"]["bitflip"]["n"] == 100
    assert (record["config"]["bitflip"]["attack_batch"], record["config"]["bitflip"]["search_cap"],
            record["config"]["bitflip"]["random_cap"]) == (64, 60, 300)
    (search,) = [r for r in record["bitflip"]["runs"] if r["method"] == "search"]
    assert search["broken"] and record["result"]["robust"][0]["attack"] == "pgd"  # within the cap of 60


def test_a_grid_is_found_from_values_a_rounding_apart():
    # a level written once by float32 fake quantization and once from its code in float64 (as a flip
    # writes it) may differ in the last bit: still one level of the same grid, not a grid of 1-ulp steps
    from robquant.quant.grid import uniform_terms

    s = torch.tensor(0.0123, dtype=torch.float32)
    w = (torch.tensor([[-128, -3, 0, 5, 127, 5]], dtype=torch.float32) * s)
    w[0, 5] = torch.nextafter(w[0, 5], torch.tensor(1.0))  # code 5, one float32 ulp above
    (codes, step), (_, offset) = uniform_terms(w)
    assert float(step[0]) == pytest.approx(float(s), rel=1e-6)
    assert (codes + torch.round(offset / step)[:, None]).tolist() == [[-128, -3, 0, 5, 127, 5]]
