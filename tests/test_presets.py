"""Every shipped preset is a valid study, and the demo is sized as documented."""

from pathlib import Path

import pytest

from robquant.pipeline.plan import build_plan
from robquant.pipeline.study import load_study

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "robquant" / "configs"
PRESETS = sorted(CONFIGS.rglob("*.yaml"))


def test_presets_exist():
    names = {p.relative_to(CONFIGS).as_posix() for p in PRESETS}
    assert {"demo.yaml", "cifar10-mini.yaml", "paper/table2.yaml", "paper/table3.yaml",
            "paper/appendix_b.yaml", "paper/figure2.yaml"} <= names


@pytest.mark.parametrize("path", PRESETS, ids=[p.name for p in PRESETS])
def test_preset_is_a_valid_study_with_a_plan(path):
    study = load_study(path)
    plan = build_plan(study, lambda: 50_000)
    assert plan.cells and all(s.cost["forward"] >= 0 for s in plan.stages.values())


def test_demo_full_covers_the_whole_grid():
    study = load_study(CONFIGS / "demo-full.yaml")
    cells, _ = study.expand()
    assert {c.init for c in cells} == {"random", "non_robust", "robust"}
    assert {c.strategy for c in cells if c.method == "qat"} == {"vanilla", "adversarial", "transfer", "fast_adversarial"}
    assert {"A2W2", "A4W4", "A8W8", "A32W32", "A32W4", "A4W32"} <= {c.precision for c in cells}
    assert len({c.fraction for c in cells}) == 2 and len(study.seeds) == 3


def test_demo_holds_every_cell_its_findings_need_over_three_seeds_and_every_test_example():
    study = load_study(CONFIGS / "demo.yaml")
    cells, _ = study.expand()
    have = {(c.method, c.strategy, c.init, c.precision) for c in cells}
    equal_bits = {"A2W2", "A4W4", "A8W8", "A32W32"}
    for pipe in (("ptq", None, "robust"), ("qat", "vanilla", "robust"), ("qat", "adversarial", "robust")):
        assert {(*pipe, p) for p in equal_bits} <= have, pipe  # findings (i)-(iii) and their trends: 4 bit-widths
    sweep = {p for m, s, i, p in have if (m, s, i) == ("qat", "vanilla", "non_robust")}
    assert {"A2W32", "A4W32", "A8W32", "A32W32"} <= sweep  # finding (iv) and Figure 2
    assert len(study.seeds) >= 3 and len({c.fraction for c in cells}) == 1
    ev = study.evaluation
    assert ev.n_test is None  # all 359 digits test images: the PTQ findings are decided at the margin
    assert ev.weak() == ev.main_eps / 4  # the weak attack scaled with the main one, as 2/255 is to 8/255
    assert [a.name for a in ev.attacks] == ["pgd", "apgd"]  # the robustness of record (ALGORITHMS 8)


def test_figure2_is_one_study_of_activation_and_weight_only_sweeps_with_pgd_and_autoattack():
    study = load_study(CONFIGS / "paper" / "figure2.yaml")
    cells, _ = study.expand()
    precisions = {c.precision for c in cells}
    act_only = {p for p in precisions if p.endswith("W32") and p != "A32W32"}
    weight_only = {p for p in precisions if p.startswith("A32") and p != "A32W32"}
    assert act_only == {"A2W32", "A4W32", "A6W32", "A8W32"} and weight_only == {"A32W2", "A32W4", "A32W6", "A32W8"}
    assert study.evaluation.eps == [1, 2, 4, 8]
    assert {a.name for a in study.evaluation.attacks} == {"pgd", "autoattack"}
    plan = build_plan(study, lambda: 50_000)
    evaluations = [s for s in plan.stages.values() if s.kind == "evaluate"]
    assert len(evaluations) == len(cells) * len(study.seeds)
    # random init: no full-precision parent to transfer from, so an evaluation depends on its model only
    assert all(len(s.parents) == 1 for s in evaluations)


def test_the_threats_companion_adds_only_evaluations_to_cifar10_cpu():
    """cifar10-cpu-threats.yaml evaluates cifar10-cpu's own models (the same stages, so run into its store
    it trains nothing) with the transfer matrix, bit flips, the deployed models, corruptions and bit errors."""
    base = build_plan(load_study(CONFIGS / "cifar10-cpu.yaml"), lambda: 50_000)
    threats = build_plan(load_study(CONFIGS / "cifar10-cpu-threats.yaml"), lambda: 50_000)
    models = {k for k, s in threats.stages.items() if s.kind != "evaluate"}
    assert models and models <= set(base.stages)
    evaluations = [s.spec for s in threats.stages.values() if s.kind == "evaluate"]
    quantized = [e for e in evaluations if e.add_on("bitflip") is not None]
    assert len(evaluations) == 6 and len(quantized) == 5  # the FP reference (PTQ A32W32) has no stored integers
    assert all(e.add_on("deployed").also_on == ("openvino",) and e.add_on("bit_errors") is not None for e in quantized)
    assert all(e.add_on("corruptions") is not None for e in evaluations)
    assert all({"transfer:FP"} <= {a.label for a in e.attacks} for e in evaluations)
    assert not any("transfer:A32W32" in {a.label for a in e.attacks} for e in evaluations)  # that is FP again
    assert all(a.n == 500 for e in evaluations for a in e.attacks)  # sources on the paper's attack's examples
    assert not any(e.cascade for e in evaluations)  # each source's own outcomes


def test_every_presets_stage_keys_are_the_kept_ones():
    # a changed key makes every stored stage of that preset stale: a refactor must keep them all;
    # a change meant to re-key writes them again (python tests/preset_keys.py) in the same commit
    import json

    from preset_keys import KEPT, preset_keys

    kept, now = json.loads(KEPT.read_text()), preset_keys()
    assert sorted(now) == sorted(kept), "presets added or removed: python tests/preset_keys.py"
    for preset, keys in now.items():
        gone, new = sorted(set(kept[preset]) - set(keys)), sorted(set(keys) - set(kept[preset]))
        assert not gone and not new, f"{preset}: {len(gone)} stage keys gone, {len(new)} new (e.g. {(gone + new)[:3]})"
