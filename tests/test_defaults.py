"""Each evaluation run is built in one place, with its defaults written once: a study and the
command line (through the library) build the same run for the same options."""

import pytest

from robquant.defaults import (ATTACK_STEPS, BITFLIP_ATTACK_BATCH, BITFLIP_RANDOM_CAP, BITFLIP_REPEATS,
                               BITFLIP_SEARCH_CAP, CHECK_EXAMPLES, CHECK_SQUARE_QUERIES, CHECK_TOL, SQUARE_QUERIES)
from robquant.errors import ConfigError
from robquant.pipeline.api import _diagnose_run
from robquant.pipeline.plan import build_plan
from robquant.evaluation.addons import BitFlipRun, BitFlipSection
from robquant.pipeline.specs import Budget
from robquant.pipeline.study import AttackSection, parse_study

STUDY = {"name": "defaults", "dataset": {"name": "digits"}, "model": {"name": "resnet20", "width": 4},
         "evaluation": {"eps": [8, 32], "main_eps": 32, "n_test": 300, "bitflip": True},
         "axes": {"init": ["non_robust"], "method": ["ptq"], "precision": ["A4W4"]}}


def _evaluate_spec(study):
    plan = build_plan(parse_study(study), lambda: 1000)
    return next(st.spec for st in plan.stages.values() if st.kind == "evaluate")


def test_a_studys_trust_checks_are_the_command_lines_with_the_same_options():
    spec = _evaluate_spec(STUDY)
    budgets = (Budget.of(8), Budget.of(32))
    main, run = _diagnose_run({"eps": 32}, budgets)  # robquant attack --diagnose --eps 8,32, every default
    assert main == budgets[1] and run == spec.add_on("diagnose")
    assert (run.n, run.steps, run.square_queries, run.tol) == (CHECK_EXAMPLES, ATTACK_STEPS, CHECK_SQUARE_QUERIES,
                                                              CHECK_TOL)
    assert run.eps == 32 / 255 and run.label == 32
    with pytest.raises(ConfigError, match="diagnose takes no option 'quries'|diagnose takes no option quries"):
        _diagnose_run({"eps": 32, "quries": 5}, budgets)


def test_a_studys_bit_flips_are_built_by_the_same_constructor_with_the_same_defaults():
    flips = _evaluate_spec(STUDY).add_on("bitflip")
    assert flips == BitFlipRun.of(300, range(BITFLIP_REPEATS))
    assert (flips.attack_batch, flips.search_cap, flips.random_cap) == (BITFLIP_ATTACK_BATCH, BITFLIP_SEARCH_CAP,
                                                                        BITFLIP_RANDOM_CAP)
    spec = BitFlipSection(enabled=True)
    assert (spec.attack_batch, spec.search_cap, spec.random_cap, spec.repeats) == (
        BITFLIP_ATTACK_BATCH, BITFLIP_SEARCH_CAP, BITFLIP_RANDOM_CAP, BITFLIP_REPEATS)
    with pytest.raises(ConfigError, match="bitflip methods must be among search, random, got flip"):
        BitFlipRun.of(10, [0], ["flip"])
    with pytest.raises(ConfigError, match="bitflip search_cap"):
        BitFlipRun.of(10, [0], search_cap=0)


def _help(command):
    """A command's --help as one line of words (wide, the table's borders removed)."""
    from typer.testing import CliRunner

    from robquant.cli import app

    out = CliRunner(env={"COLUMNS": "400"}).invoke(app, [command, "--help"]).output
    return " ".join(out.replace("│", " ").split())


def test_the_schema_and_the_command_line_show_the_declared_defaults():
    assert AttackSection(name="square").n_queries == SQUARE_QUERIES
    help_text = _help("attack")
    assert f"default {SQUARE_QUERIES}" in help_text
    assert f"{BITFLIP_SEARCH_CAP},{BITFLIP_RANDOM_CAP}" in help_text


def test_each_qat_strategy_names_a_registered_objective_and_the_library_inverts_the_same_table():
    from robquant.pipeline.api import STRATEGY_OF_OBJECTIVE
    from robquant.pipeline.study import QAT_STRATEGIES, Axes
    from robquant.train.objectives import OBJECTIVES

    assert set(QAT_STRATEGIES.values()) <= set(OBJECTIVES.names())
    assert {STRATEGY_OF_OBJECTIVE[o] for o in QAT_STRATEGIES.values()} == set(QAT_STRATEGIES)
    with pytest.raises(ValueError, match="vanilla"):  # the schema's choices are the table's
        Axes(strategy=["pgd7"])


def test_the_command_lines_recipe_help_shows_the_recipes_own_defaults():
    from robquant.quant import PTQConfig, QATConfig
    from robquant.train import FP_TRAIN, PGD_AT, QAT_FINETUNE

    train, quantize = _help("train"), _help("quantize")
    assert f"training epochs (default {FP_TRAIN.epochs}," in train
    assert f"initial learning rate (default {FP_TRAIN.lr:g})" in train
    assert f"attack steps (default {PGD_AT.steps})" in train
    assert f"budget in /255 units (default {round(PGD_AT.eps * 255)})" in train
    assert f"fine-tuning epochs (default {QAT_FINETUNE.epochs}," in quantize
    assert f"initial learning rate (default {QAT_FINETUNE.lr:g}," in quantize
    assert f"default {PTQConfig(precision='A8W8').calib_images})" in quantize
    assert f"(default {QATConfig(precision='A8W8').pact_alpha:g}," in quantize


def test_the_study_files_attack_fields_are_the_attacks_declarations():
    from pydantic import ValidationError

    from robquant.attacks import ATTACKS
    from robquant.pipeline.study import AttackSection

    for name, attack in (("steps", "pgd"), ("restarts", "pgd"), ("n_queries", "square"), ("pixel_grid", "fgsm")):
        declared, field = ATTACKS.get(attack).DECLARED[name], AttackSection.model_fields[name]
        assert field.default == declared.default and declared.help in field.description
    with pytest.raises(ValidationError, match="restarts"):
        AttackSection(name="pgd", restarts=0)  # below the declared range


def test_the_library_picks_each_attacks_declared_options_from_one_set_and_refuses_an_undeclared_one():
    from robquant.pipeline import chosen_attacks

    chosen = dict(chosen_attacks(["pgd", "square"], {"steps": 5, "n_queries": 100, "attacks": None}))
    assert chosen["pgd"]["steps"] == 5 and "n_queries" not in chosen["pgd"]
    assert chosen["square"]["n_queries"] == 100 and "steps" not in chosen["square"]
    with pytest.raises(ConfigError, match="attack option scale: no attack of --attack 'pgd,fgsm' declares it"):
        chosen_attacks(["pgd", "fgsm"], {}, {"scale": 2})
    with pytest.raises(ConfigError, match="pgd option steps: 'many' is not allowed"):
        chosen_attacks(["pgd"], {"steps": "many"})
