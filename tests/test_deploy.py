"""Export to ONNX (QDQ) and robustness on ONNX Runtime: the exported model is the fake-quantized one."""

from __future__ import annotations

import json

import pytest
import torch

_EXTRA = "the optional extra robquant[onnx] is not installed (scripts/setup.sh installs it)"
onnx = pytest.importorskip("onnx", reason=_EXTRA)
pytest.importorskip("onnxruntime", reason=_EXTRA)

from robquant import load_model  # noqa: E402
from robquant.attacks import create_attack  # noqa: E402
from robquant.deploy import (RUNTIMES, ExportError, RuntimeModel, branches, deployed_evaluation,  # noqa: E402
                             export_graph, export_onnx, load_runtime, mismatch_check)
from robquant.deploy.stage import DeployedFileMetrics, ExportMetrics  # noqa: E402
import robquant.deploy.executorch as executorch_program  # noqa: E402

_QUANTIZED_OPS = executorch_program.quantized_ops
from robquant.pipeline import quantize_model  # noqa: E402
from robquant.quant import DoReFaWeightQuantizer, QuantConfig, QuantConv2d, quantize  # noqa: E402
from robquant.quant.integer import weight_terms  # noqa: E402
from robquant.train import TrainConfig  # noqa: E402
from test_study import cli, write  # noqa: E402

def _installed(name):
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def _skip_unless(runtime):
    """Skip where the runtime's optional extra is absent, naming it (scripts/setup.sh installs all but executorch)."""
    extra = {"onnxruntime": "onnx"}.get(runtime, runtime)
    where = "not installed by scripts/setup.sh" if runtime == "executorch" else "scripts/setup.sh installs it"
    return pytest.mark.skipif(not _installed(runtime), reason=f"{runtime} is not installed (robquant[{extra}]; {where})")


# each runtime robquant runs exported models on; a runtime whose optional extra is absent is skipped by name
EACH_RUNTIME = [pytest.param(r, marks=_skip_unless(r)) for r in RUNTIMES]


EPS = 32 / 255  # digits' coarse grey levels: small budgets barely move a prediction
SHAPE = (1, 8, 8)


@pytest.fixture(scope="module")
def deployed(demo_models, tmp_path_factory):
    """The digits ResNet-20 at PTQ A8W8 and at QAT A4W4 (fine-tuned 2 epochs): {name: folder}."""
    root = tmp_path_factory.mktemp("deploy")
    fp = demo_models["non_robust"][0]
    quantize_model(fp, quant=QuantConfig(method="ptq", precision="A8W8"), out=root / "ptq_a8w8")
    quantize_model(fp, quant=QuantConfig(method="qat", precision="A4W4"), out=root / "qat_a4w4",
                   train=TrainConfig(epochs=2, batch_size=64, lr=0.01, schedule="cosine"))
    return {"ptq_a8w8": root / "ptq_a8w8", "qat_a4w4": root / "qat_a4w4"}


def _top1(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


@pytest.mark.parametrize("name", ["ptq_a8w8", "qat_a4w4"])
def test_exported_model_agrees_with_fake_quant_on_clean_and_adversarial_images(deployed, digits_test, tmp_path,
                                                                               name):
    model = load_model(deployed[name])
    path = tmp_path / f"{name}.onnx"
    info = export_onnx(model, path, SHAPE)
    onnx.checker.check_model(str(path), full_check=True)
    x, y = digits_test.images.float() / 255, digits_test.labels
    fake = _top1(model, x)
    assert (fake == y).float().mean() > 0.85  # a working classifier: agreeing with it says something
    runtime = RuntimeModel(path)
    assert (_top1(runtime, x) == fake).float().mean() >= 0.99
    # seeded: unseeded random starts took the global RNG state the earlier tests left (4 of 359 disagreed under
    # ATEN_CPU_CAPABILITY=default after other test files, none alone)
    x_adv = create_attack("pgd", model, EPS, steps=5, generator=torch.Generator().manual_seed(0))(x, y)
    assert (_top1(model, x_adv) == y).float().mean() < 0.5  # the attack moved the model
    assert (_top1(runtime, x_adv) == _top1(model, x_adv)).float().mean() >= 0.99
    # integer weights and QDQ activations in the file, no float copy of a quantized weight
    proto = onnx.load(str(path))
    ops = [n.op_type for n in proto.graph.node]
    inits = {i.name: i for i in proto.graph.initializer}
    integer = [i for i in inits.values() if i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
               and len(i.dims) in (2, 4)]
    assert len(integer) == sum(info.layers.values()) > 0
    assert ops.count("QuantizeLinear") == len(info.activations) > 0
    assert ops.count("DequantizeLinear") == len(info.activations) + len(integer)
    quantized = [m for m in model.modules() if isinstance(m, QuantConv2d) and m.weight_quant is not None]
    float_weights = [i for i in inits.values() if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 4
                     and i.dims[0] > 1]  # conv weights (not the 1x1x1x1 normalisation constants)
    assert len(float_weights) == sum(1 for m in model.modules() if isinstance(m, QuantConv2d)) - len(quantized)
    assert {p.key: p.value for p in proto.metadata_props} == {}
    assert info.seconds < 30


def test_export_graph_in_pytorch_is_the_fake_quantized_model(deployed, digits_test):
    model = load_model(deployed["qat_a4w4"])
    x = digits_test.images.float()[:200] / 255
    with torch.no_grad():
        ours, theirs = export_graph(model).net(x), model(x)
    # the same numbers up to float rounding (codes x 1/L vs DoReFa's 2 k / L - 1), which can move
    # an activation that sits on a rounding tie by one step in a few images
    close = ((ours - theirs).abs().amax(1) < 1e-4).float().mean()
    assert close >= 0.95 and (ours.argmax(1) == theirs.argmax(1)).float().mean() >= 0.99


def test_the_batch_size_is_free(deployed, tmp_path, digits_test):
    path = tmp_path / "m.onnx"
    export_onnx(load_model(deployed["ptq_a8w8"]), path, SHAPE)
    runtime = RuntimeModel(path)
    x = digits_test.images.float()[:7] / 255
    whole = runtime(x)
    one = torch.cat([runtime(x[i:i + 1]) for i in range(7)])
    assert whole.shape == (7, 10) and torch.allclose(whole, one, atol=1e-5)


def _layer(bits):
    torch.manual_seed(0)
    layer = QuantConv2d(torch.nn.Conv2d(4, 6, 3), DoReFaWeightQuantizer(bits))
    return layer, weight_terms(layer)


def test_dorefa_merges_into_one_int8_tensor_up_to_7_bits():
    layer, terms = _layer(4)
    (branch,) = branches(terms, "conv")
    levels = 2**4 - 1
    assert torch.allclose(branch.scale, torch.full((6,), 1 / levels, dtype=torch.float64))
    codes = branch.codes
    assert torch.equal(codes, codes.round()) and codes.abs().max() <= levels
    assert bool(((codes + levels) % 2 == 0).all())  # 2k - L: the grid 2k/L - 1
    assert torch.allclose(branch.value().float(), layer.quantized_weight().detach(), atol=1e-6)


def test_dorefa_at_8_bits_is_two_exact_branches():
    layer, terms = _layer(8)
    parts = branches(terms, "conv")
    assert [p.storage for p in parts] == [(0, 255), (-128, 127)]  # codes 0..255, then the offset -1
    assert torch.allclose(sum(p.value() for p in parts).float(), layer.quantized_weight().detach(), atol=1e-6)


def test_pwlq_exports_exactly_as_branches(clean_model, digits_test):
    calib = digits_test.images.float()[:64] / 255
    q = quantize(clean_model, QuantConfig(method="ptq", precision="A4W4"), calib_images=calib)
    layer = next(m for m in q.modules() if isinstance(m, QuantConv2d) and m.weight_quant is not None)
    parts = branches(weight_terms(layer), "conv")
    assert 2 <= len(parts) <= 4  # centre, tail, breakpoint, bias-correction shift
    assert torch.allclose(sum(p.value() for p in parts).float(), layer.weight.detach(), atol=1e-6)


@pytest.mark.parametrize("method,quantizer", [("ptq", "uniform"), ("ptq", "pwlq"), ("qat", "uniform"),
                                              ("qat", "dorefa")])
def test_every_weight_quantizer_exports_at_2_4_and_8_bits(clean_model, digits_test, tmp_path, method, quantizer):
    """Each quantized layer's integer terms rebuild its weights exactly, and the export (which
    writes them) runs and agrees with the fake-quantized model on clean digits images."""
    calib = digits_test.images.float()[:64] / 255
    x = digits_test.images.float()[:100] / 255
    for bits in (2, 4, 8):
        config = QuantConfig(method=method, precision=f"A8W{bits}", weight_quantizer=quantizer)
        q = quantize(clean_model, config, calib_images=calib).eval()
        for layer in (m for m in q.modules() if isinstance(m, QuantConv2d) and m.weight_quant is not None):
            parts = branches(weight_terms(layer), "conv")
            assert torch.allclose(sum(p.value() for p in parts).float(), layer.quantized_weight().detach(),
                                  atol=1e-6, rtol=1e-5), (bits, quantizer)
        info = export_onnx(q, tmp_path / f"{method}-{quantizer}-{bits}.onnx", SHAPE)
        with torch.no_grad():
            agree = (RuntimeModel(info.path, fusion=False)(x).argmax(1) == q(x).argmax(1)).double().mean()
        assert agree >= 0.98, (bits, quantizer, float(agree))


def test_16_bit_grids_are_refused_with_the_reason(clean_model, digits_test, tmp_path):
    calib = digits_test.images.float()[:64] / 255
    q = quantize(clean_model, QuantConfig(method="ptq", precision="A16W8"), calib_images=calib)
    with pytest.raises(ExportError, match="16-bit activations need opset 21"):
        export_onnx(q, tmp_path / "m.onnx", SHAPE)
    assert not (tmp_path / "m.onnx").exists()


def test_deployed_evaluation_matches_and_square_attacks_the_runtime(deployed, digits_test, tmp_path):
    model = load_model(deployed["ptq_a8w8"])
    export_onnx(model, tmp_path / "m.onnx", SHAPE)
    runtime = RuntimeModel(tmp_path / "m.onnx")
    r = deployed_evaluation(runtime, model, digits_test, 64 / 255, n=60, steps=5, square_queries=50)
    assert r["clean_agreement"] == 1.0 and r["adversarial_agreement"] >= 0.98
    assert r["accuracy"]["square"] == r["accuracy"]["reference_square"]  # same seed, same classifier
    assert r["accuracy"]["square"] < r["clean_accuracy"] - 0.2  # Square found examples on the runtime
    assert r["flag"] is False and mismatch_check(r)["flag"] is False


def test_the_reference_work_shared_between_runtimes_gives_each_the_same_result(deployed, digits_test, tmp_path):
    model = load_model(deployed["qat_a4w4"])
    export_onnx(model, tmp_path / "m.onnx", SHAPE)
    names = ([r for r in RUNTIMES if _installed(r)] * 2)[:2]  # two runtimes, or the one installed twice
    alone = [deployed_evaluation(load_runtime(name, tmp_path / "m.onnx", model=model), model, digits_test, EPS, n=60,
                                 steps=5, square_queries=20) for name in names]
    shared: dict = {}
    together = [deployed_evaluation(load_runtime(name, tmp_path / "m.onnx", model=model), model, digits_test, EPS, n=60,
                                    steps=5, square_queries=20, shared=shared) for name in names]
    for a, b in zip(alone, together):
        assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    (kept,) = shared.values()  # one reference, one set of options: its clean logits, PGD and Square once
    assert {"clean", "transferred"} <= set(kept) and sum(k[0] == "square" for k in kept if isinstance(k, tuple)) >= 1
    assert alone[0]["accuracy"]["reference_pgd"] < alone[0]["reference_clean_accuracy"] - 0.2  # PGD found examples


def test_deployed_mismatch_fires_when_the_runtime_is_another_model(deployed, demo_models, digits_test, tmp_path):
    export_onnx(load_model(demo_models["robust"][0]), tmp_path / "other.onnx", SHAPE)
    r = deployed_evaluation(RuntimeModel(tmp_path / "other.onnx"), load_model(deployed["ptq_a8w8"]), digits_test,
                            EPS, n=60, steps=5, square_queries=20)
    check = mismatch_check(r, record_accuracy=0.5)
    assert check["flag"] is True and check["value"] > 0.01
    assert check["robustness_gap"] == pytest.approx(0.5 - r["robustness"])


def test_cli_export_then_attack_the_onnx_model(deployed, tmp_path):
    path = tmp_path / "m.onnx"
    code, text = cli("export", deployed["ptq_a8w8"], "--format", "onnx", "--out", path)
    assert code == 0, text
    assert "checked by onnx.checker" in text and "agrees with the model on 100.0 % of 256" in text
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["robquant.source"] == str(deployed["ptq_a8w8"].resolve()) and meta["robquant.precision"] == "A8W8"
    assert path.is_symlink() and path.resolve().parent.parent.name == "stages"  # the export stage's file
    export = json.loads((path.resolve().parent / "stage.json").read_text())
    assert export["kind"] == "export" and export["stage"]["parents"] == {"model": deployed["ptq_a8w8"].resolve().name}
    assert export["check"]["agreement"] == 1.0 and export["config"]["opset"] == 17
    metrics = ExportMetrics.read(export["metrics"])  # the record's numbers, typed
    assert (metrics.agreement, metrics.n, metrics.opset, metrics.bytes) == (1.0, 256, 17, path.stat().st_size)
    code, again = cli("export", deployed["ptq_a8w8"], "--out", tmp_path / "again.onnx")  # found, not redone
    assert code == 0 and (tmp_path / "again.onnx").resolve() == path.resolve()
    args = ("attack", path, "--runtime", "onnxruntime", "--eps", "32", "--n-test", "40", "--square-queries", "20",
            "--steps", "5", "--out", tmp_path / "deployed")
    code, text = cli(*args)
    assert code == 0, text
    record = json.loads((tmp_path / "deployed/stage.json").read_text())
    (result,) = record["results"]
    assert result["n"] == 40 and result["clean_agreement"] == 1.0 and result["eps_255"] == 32
    assert record["kind"] == "evaluate_deployed" and record["reference"] == str(deployed["ptq_a8w8"].resolve())
    typed = DeployedFileMetrics.read(record["metrics"])
    assert typed.results[0].clean_agreement == 1.0 and typed.results[0].n == 40
    assert typed.flags == tuple(r.eps_255 for r in typed.results if r.flag) and typed.to_dict() == record["metrics"]
    assert (tmp_path / "deployed/model.onnx").read_bytes() == path.read_bytes()  # the record keeps what it measured
    copy = tmp_path / "copy.onnx"  # a copy elsewhere is the same file: the same stage, found
    copy.write_bytes(path.read_bytes())
    code, text = cli(*args[:1], copy, *args[2:-2], "--out", tmp_path / "deployed-copy")
    assert code == 0 and (tmp_path / "deployed-copy").resolve() == (tmp_path / "deployed").resolve()


def test_cli_bad_input_one_message(deployed, tmp_path):
    code, text = cli("export", deployed["ptq_a8w8"], "--format", "tflite", "--out", tmp_path / "m.tflite")
    assert code == 2 and "--format must be one of onnx, got 'tflite'" in text
    code, text = cli("export", deployed["ptq_a8w8"], "--opset", "21", "--out", tmp_path / "m.onnx")
    assert code == 2 and "opset must be one of 13, 14" in text
    code, text = cli("attack", deployed["ptq_a8w8"], "--runtime", "onnxruntime")
    assert code == 2 and "--runtime evaluates an exported .onnx file" in text
    code, text = cli("attack", tmp_path / "missing.onnx")
    assert code == 2 and "no such ONNX model" in text
    export_onnx(load_model(deployed["ptq_a8w8"]), tmp_path / "bare.onnx", SHAPE)  # no metadata: no reference
    code, text = cli("attack", tmp_path / "bare.onnx", "--runtime", "tensorrt")
    assert code == 2 and "--runtime must be one of onnxruntime, openvino, executorch, got 'tensorrt'" in text
    code, text = cli("attack", tmp_path / "bare.onnx")
    assert code == 2 and "records no source model folder: pass --reference" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare.onnx"]  # nothing half-written


DEPLOYED_STUDY = {
    "name": "deployed", "dataset": {"name": "digits"}, "model": {"name": "resnet20", "width": 4}, "seeds": [0],
    "evaluation": {"attacks": [{"name": "pgd", "steps": 3}], "eps": [32], "main_eps": 32, "n_test": 60,
                   "diagnostics": {"n": 30, "square_queries": 20, "autoattack": None, "collapse_eps": 96},
                   "deployed": True},
    "fp": {"non_robust": {"epochs": 2, "lr": 0.05, "batch_size": 64, "schedule": "cosine"}},
    "quant": {"calib_images": 64},
    "axes": {"init": ["non_robust"], "method": ["ptq"], "precision": ["A4W4", "A32W32"], "fraction": [1.0]},
}


def test_study_with_deployment_bit_flips_pixel_valid_inputs_and_the_transfer_matrix(tmp_path):
    from robquant.pipeline import build_plan, load_study
    from robquant.pipeline.specs import spec_config
    from robquant.pipeline.store import Store

    study = json.loads(json.dumps(DEPLOYED_STUDY))
    study["evaluation"]["deployed"] = {"n": 40, "square_queries": 30}  # options given: on
    study["evaluation"]["bitflip"] = {"n": 40, "repeats": 2, "search_cap": 30, "random_cap": 64}
    study["evaluation"]["attacks"].append({"name": "pgd", "steps": 3, "pixel_grid": True, "label": "pgd-grid"})
    study["evaluation"]["transfer_matrix"] = True
    study["evaluation"]["bit_errors"] = {"n": 40, "rates": [0, 1e-3, 0.2], "draws": 2}
    study["evaluation"]["corruptions"] = {"n": 40, "names": ["gaussian_noise", "contrast"], "severities": [1, 5]}
    study["axes"]["precision"] = ["A4W4", "A8W8", "A32W32"]
    path = write(tmp_path, study)
    code, text = cli("run", path, "--device", "cpu")
    assert code == 0, text
    plan = build_plan(load_study(path))
    store = Store(tmp_path / "runs" / "store")
    evaluations = {cell.precision: key for cell, _, key in plan.cells}
    a4w4 = store.get(evaluations["A4W4"])["record"]
    dep = a4w4["deployed"]
    assert dep["n"] == 40 and dep["clean_agreement"] == 1.0 and dep["export"]["checked"]
    assert (store.artifact_dir(evaluations["A4W4"]) / "model.onnx").is_file()
    assert a4w4["diagnostics"]["checks"]["deployed_mismatch"]["flag"] is False
    assert a4w4["metrics"]["deployed"]["robustness"] == dep["robustness"]
    flips = a4w4["bitflip"]  # the stored 4-bit weights, attacked: 2 attack batches x (search, random)
    assert [(r["method"], r["seed"]) for r in flips["runs"]] == [("search", 0), ("search", 1), ("random", 0),
                                                                 ("random", 1)]
    assert flips["n"] == 40 and flips["disjoint"] and a4w4["metrics"]["bitflip"]["search"] == flips["summary"]["search"]
    for r in flips["runs"]:
        assert r["broken"] == (r["accuracy_after"] <= flips["target"]) and (r["flips"] is None) != r["broken"]
    fp = store.get(evaluations["A32W32"])["record"]
    assert "deployed" not in fp and fp["diagnostics"]["checks"]["deployed_mismatch"]["flag"] is None
    assert "bitflip" not in fp and "bit_errors" not in fp  # full-precision weights: nothing stored to flip
    errors = a4w4["bit_errors"]  # 2 draws per rate, the per-example evidence in a file of its own
    from robquant.evaluation.outcomes import load_grid

    axes, correct = load_grid(store.artifact_dir(evaluations["A4W4"]) / errors["file"])
    assert list(axes["rates"]) == [0, 1e-3, 0.2] and correct.shape == (3, 2, 40)
    assert errors["accuracy"] == correct.mean(2).tolist() and errors["flipped"][0] == [0, 0]
    assert a4w4["metrics"]["bit_errors"]["accuracy"][0] == errors["clean_accuracy"]
    for precision, record in (("A4W4", a4w4), ("A32W32", fp)):  # every model, the FP reference among them
        corr = record["corruptions"]
        axes, correct = load_grid(store.artifact_dir(evaluations[precision]) / corr["file"])
        assert axes["names"] == ["gaussian_noise", "contrast"] and axes["severities"] == [1, 5] and correct.shape == (2, 2, 40)
        assert corr["accuracy"]["contrast"] == correct[1].mean(1).tolist() and len(corr["sha256"]["contrast"]) == 2
        assert record["metrics"]["corruptions"]["mean"] == pytest.approx(correct.mean())
    code, text = cli("report", path)
    assert code == 0, text
    report = (tmp_path / "runs" / "report" / "report.md").read_text()
    assert "Deployed models on onnxruntime" in report and "Bit flips to break" in report
    assert "Random bit errors" in report and (tmp_path / "runs" / "report" / "bit_errors.png").is_file()
    assert "Natural corruptions: accuracy (%) on corrupted test images" in report
    assert "Pixel-valid inputs: robustness (%) under pgd and under pgd-grid" in report
    # the precision transfer matrix: each model attacked from its FP parent and from the other precision
    a4w4_stage = store.get(evaluations["A4W4"])
    quantized = {cell.precision: plan.stages[key].parents[0] for cell, _, key in plan.cells}
    assert a4w4_stage["parents"] == [quantized["A4W4"], plan.stages[quantized["A4W4"]].parents[0], quantized["A8W8"]]
    labels = {r["attack"] for r in a4w4["result"]["robust"]}
    # PTQ at A32W32 is the FP parent itself: not a second source
    assert {"transfer:FP", "transfer:A8W8"} <= labels and not {"transfer:A4W4", "transfer:A32W32"} & labels
    assert a4w4["config"]["cascade"] is False  # each source's own outcome, not one cumulative with earlier attacks
    assert "Precision transfer matrix" in report and (tmp_path / "runs" / "report" / "transfer_matrix_0.png").is_file()
    from robquant.report import collect
    from robquant.report.figures import transfer_matrices

    rows = collect(plan, store)
    (matrix,) = transfer_matrices(rows).values()
    own = next(r for r in rows if r.precision == "A4W4")
    diagonal = matrix["cells"][("A4W4", "A4W4")]  # the target's white-box record on the same examples
    assert diagonal.mean == pytest.approx(own.reference) and diagonal.examples == own.reference_n
    assert set(matrix["sources"]) == {"FP", "A4W4", "A8W8", "A32W32"}  # the diagonal: each target's own
    assert str(store.artifact_dir(evaluations["A4W4"]) / "model.onnx") in report
    # without deployed (not given, or false), the keys are what they were before the option existed
    for name, value in (("off.yaml", False), ("absent.yaml", None)):
        evaluation = {k: v for k, v in DEPLOYED_STUDY["evaluation"].items() if k != "deployed"}
        if value is not None:
            evaluation["deployed"] = value
        off = build_plan(load_study(write(tmp_path, DEPLOYED_STUDY | {"evaluation": evaluation}, name)))
        assert not off.study.evaluation.deployed.enabled
        assert all("deployed" not in spec_config(s.spec) and "bitflip" not in spec_config(s.spec)
                   and "transfer:" not in json.dumps(spec_config(s.spec)) for s in off.stages.values())


@pytest.mark.parametrize("further", [pytest.param(r, marks=_skip_unless(r)) for r in RUNTIMES if r != "onnxruntime"])
def test_study_attacks_the_same_export_on_more_runtimes_and_the_report_sets_them_side_by_side(tmp_path, further):
    from robquant.pipeline import build_plan, load_study
    from robquant.pipeline.specs import spec_config
    from robquant.pipeline.store import Store

    study = json.loads(json.dumps(DEPLOYED_STUDY))
    study["evaluation"]["deployed"] = {"n": 40, "square_queries": 20, "also_on": [further]}
    study["evaluation"]["diagnostics"] = {"enabled": False}
    path = write(tmp_path, study)
    code, text = cli("run", path, "--device", "cpu")
    assert code == 0, text
    plan = build_plan(load_study(path))
    key = next(key for cell, _, key in plan.cells if cell.precision == "A4W4")
    assert spec_config(plan.stages[key].spec)["deployed"]["also_on"] == [further]
    record = Store(tmp_path / "runs" / "store").get(key)["record"]
    dep, other = record["deployed"], record["deployed"]["also"][further]
    assert dep["runtime"].startswith("onnxruntime") and other["runtime"].startswith(further)
    assert other["n"] == 40 and other["clean_agreement"] >= 0.95 and len(other["robust_mask"]) == 40
    if further == "openvino":
        assert other["settings"]["inference_precision"] in ("f32", "bf16", "f16")
    else:  # the program built from the same model, kept beside the exported file
        assert other["settings"]["xnnpack"] is True and other["settings"]["weights"] == "float values"
        assert not any("convolution" in op for op in other["settings"]["left"])  # XNNPACK runs every convolution
        assert (Store(tmp_path / "runs" / "store").artifact_dir(key) / "model.pte").is_file()
    # the same transferred examples: the agreements are each runtime's, the fake-quantized model's are one
    assert other["accuracy"]["reference_pgd"] == dep["accuracy"]["reference_pgd"]
    check = plan.stages[key].spec.add_on("deployed").checks(dep)["deployed_mismatch"]  # the trust check, on every runtime
    assert set(check["by_runtime"]) == {"onnxruntime", further}
    assert check["value"] == max(c["value"] for c in check["by_runtime"].values())
    assert record["metrics"]["deployed"]["also"][further]["robustness"] == other["robustness"]
    code, text = cli("report", path)
    assert code == 0, text
    report = (tmp_path / "runs" / "report" / "report.md").read_text()
    assert "Deployed models on onnxruntime" in report and f"and {further}" in report
    assert f"transfer + Square on {further}" in report and "minus onnxruntime (paired)" in report


def test_study_deployed_bad_input(tmp_path):
    study = json.loads(json.dumps(DEPLOYED_STUDY))
    study["evaluation"]["deployed"] = {"enabled": True, "runtime": "tflite"}
    code, text = cli("run", write(tmp_path, study), "--device", "cpu")
    assert code == 2 and "evaluation.deployed.runtime" in text and "onnxruntime" in text


def test_evaluations_run_without_tf32(clean_model, digits_test):
    """TF32 convolutions move low-bit activations across rounding ties (on a GPU), so the
    evaluations switch it off while they run, and restore the user's setting afterwards."""
    from robquant.evaluation import evaluate

    seen = []

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = clean_model

        def forward(self, x):
            seen.append(torch.backends.cudnn.allow_tf32)
            return self.net(x)

    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = True
    try:
        evaluate(Spy(), digits_test, [("pgd", {"steps": 2})], [EPS], n=8)
        assert seen and not any(seen)
        assert torch.backends.cudnn.allow_tf32 is True
    finally:
        torch.backends.cudnn.allow_tf32 = before


def test_runtime_qdq_fusion_quantizes_float_weights_beside_quantized_activations(clean_model, digits_test, tmp_path):
    """Activation-only (A4W32): the graph holds float weights, and ONNX Runtime's QDQ fusion quantizes
    them to int8 to run integer kernels; with fusion off the graph runs as written."""
    calib = digits_test.images.float()[:64] / 255
    q = quantize(clean_model, QuantConfig(method="ptq", precision="A4W32"), calib_images=calib)
    export_onnx(q, tmp_path / "a4w32.onnx", SHAPE)
    x = digits_test.images.float()[:200] / 255
    with torch.no_grad():
        fake = q(x)
        plain, fused = RuntimeModel(tmp_path / "a4w32.onnx", fusion=False)(x), RuntimeModel(tmp_path / "a4w32.onnx")(x)
    # as written: equal up to float rounding, which may move an activation across a 4-bit grid step
    # on an example or two; fused: int8 weights change most examples' logits
    off_plain = ((plain - fake).abs().amax(1) > 1e-3).double().mean().item()
    off_fused = ((fused - fake).abs().amax(1) > 1e-3).double().mean().item()
    assert off_plain <= 0.02 < 0.5 < off_fused



def _misscaled(path, out, factor=1.5):
    """A copy of the exported file with the first weight DequantizeLinear's scale multiplied by ``factor``: the
    integers are the model's, one layer's scale is not."""
    proto = onnx.load(str(path))
    inits = {i.name: i for i in proto.graph.initializer}
    weights = {i.name for i in inits.values() if i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
               and len(i.dims) == 4}
    node = next(n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in weights)
    scale = inits[node.input[1]]
    values = onnx.numpy_helper.to_array(scale) * factor
    scale.CopyFrom(onnx.numpy_helper.from_array(values.astype(onnx.numpy_helper.to_array(scale).dtype), scale.name))
    onnx.save(proto, str(out))
    return out


def _misscaled_program(net, codes=True):
    """ExecuTorch's form of the export graph with the first quantized layer's weight scale multiplied by 1.5 (its
    codes' float values with it)."""
    from robquant.deploy.executorch import _Layer

    out = _QUANTIZED_OPS(net, codes)
    layer = next(m for m in out.modules() if isinstance(m, _Layer) and m.kinds)
    layer.s0.mul_(1.5)
    layer.layer.w0.mul_(1.5)
    return out


@pytest.mark.parametrize("runtime", EACH_RUNTIME)
@pytest.mark.parametrize("name", ["ptq_a8w8", "qat_a4w4"])
def test_each_runtime_runs_the_exported_integer_model_and_catches_a_misscaled_one(deployed, digits_test, tmp_path,
                                                                                   runtime, name, monkeypatch):
    model = load_model(deployed[name])
    path = tmp_path / "m.onnx"
    export_onnx(model, path, SHAPE)
    x, y = digits_test.images.float() / 255, digits_test.labels
    fake = _top1(model, x)
    assert (fake == y).float().mean() > 0.85
    # the graph as written (float32 around the integer layers): the same classifier on every CPU
    plain = load_runtime(runtime, path, fusion=False, model=model)
    assert plain.name == runtime and (_top1(plain, x) == fake).float().mean() >= 0.99
    x_adv = create_attack("pgd", model, EPS, steps=5, generator=torch.Generator().manual_seed(0))(x, y)
    assert (_top1(model, x_adv) == y).float().mean() < 0.5
    # adversarial inputs sit near the decision boundaries, where a runtime's own kernels can tip a prediction:
    # on PTQ A8W8 (PWLQ: 3-4 integer branches per layer, summed) OpenVINO agreed on 96.4-98.1 % over 6 PGD
    # seeds where ONNX Runtime agreed on all (docs/deployment.md); elsewhere both on >= 99 %
    floor = 0.93 if (runtime, name) == ("openvino", "ptq_a8w8") else 0.99
    assert (_top1(plain, x_adv) == _top1(model, x_adv)).float().mean() >= floor
    # as it ships: the runtime's own rewriting; in float32 (no bf16 units, or ONNX Runtime's QDQ fusion on
    # quantized weights) it is the same classifier too
    shipped = load_runtime(runtime, path, model=model)
    if shipped.settings.get("inference_precision", "f32") == "f32":
        assert (_top1(shipped, x) == fake).float().mean() >= 0.99
    # one layer's scale off by half: the deployed evaluation says it is another model
    if runtime == "executorch":  # its program is built from the model: the scale is mis-set as it is written
        monkeypatch.setattr(executorch_program, "quantized_ops", _misscaled_program)
    wrong = load_runtime(runtime, _misscaled(path, tmp_path / "wrong.onnx"), fusion=False, model=model)
    assert (_top1(wrong, x) == fake).float().mean() < 0.99
    r = deployed_evaluation(wrong, model, digits_test, EPS, n=100, steps=3, square_queries=10)
    assert r["flag"] is True and mismatch_check(r)["flag"] is True and r["runtime"].startswith(runtime)


def test_a_mismatch_at_the_threshold_is_not_flagged():
    from robquant.deploy.runtime import exceeds

    one_in_100 = torch.tensor(0.25).item() - torch.tensor(0.24).item()  # float32 accuracies: 0.010000005
    assert one_in_100 > 0.01 and not exceeds(one_in_100, 0.01)
    assert exceeds(0.02, 0.01) and not exceeds(0.0, 0.01)


@_skip_unless("executorch")
def test_cli_attacks_an_export_on_executorch_with_the_program_built_from_its_model(deployed, tmp_path):
    path = tmp_path / "m.onnx"
    code, text = cli("export", deployed["qat_a4w4"], "--out", path)
    assert code == 0, text
    code, text = cli("attack", path, "--runtime", "executorch", "--eps", "32", "--n-test", "40", "--square-queries",
                     "10", "--steps", "3", "--out", tmp_path / "et")
    assert code == 0, text
    record = json.loads((tmp_path / "et" / "stage.json").read_text())
    (result,) = record["results"]
    assert result["runtime"].startswith("executorch") and result["n"] == 40
    assert result["clean_agreement"] >= 0.99 and result["settings"]["xnnpack"] is True
    assert (tmp_path / "et" / "model.pte").is_file()  # the program it ran, beside the file it was built for


def test_a_study_naming_a_runtime_not_installed_stops_before_any_work(tmp_path, monkeypatch):
    import robquant.deploy.runtime as runtime
    from robquant.errors import ConfigError

    def absent():
        raise ConfigError("running a model on ExecuTorch needs executorch: pip install 'robquant[executorch]'")

    monkeypatch.setattr(runtime.ExecuTorchModel, "package", classmethod(lambda cls: absent()))
    study = json.loads(json.dumps(DEPLOYED_STUDY))
    study["evaluation"]["deployed"] = {"n": 40, "also_on": ["executorch"]}
    path = write(tmp_path, study)
    code, text = cli("run", path, "--device", "cpu")
    assert code == 2 and "pip install 'robquant[executorch]'" in text
    assert not (tmp_path / "runs").exists()  # no store, nothing trained
    code, text = cli("run", path, "--dry-run")  # the plan is still shown
    assert code == 0, text
