"""A user's own attack, registered by a plug-in module named in ROBQUANT_PLUGINS, is choosable in a study
and on the command line with no change to robquant; unknown names and options are refused by name."""

import json
import sys
import textwrap

import pytest

from robquant.errors import ConfigError

PLUGIN = textwrap.dedent('''
    from robquant.attacks import ATTACKS, Attack
    from robquant.options import Option

    @ATTACKS.register("scaled_fgsm")
    class ScaledFGSM(Attack):
        """FGSM with its step scaled: scale 1 is FGSM."""

        name = "scaled_fgsm"
        OPTIONS = (Option("scale", 1.0, "the step as a multiple of eps", float, low=0.0, high=4.0),)

        def __init__(self, model, eps, *, scale=1.0, **kwargs):
            super().__init__(model, eps, **kwargs)
            self.scale = float(scale)

        def forward(self, x, y):
            return (x + self.scale * self.eps * self.loss_grad(x, y).sign()).clamp(0.0, 1.0)
''')


@pytest.fixture()
def plugin(tmp_path, monkeypatch):
    from robquant.attacks import ATTACKS

    (tmp_path / "robquant_test_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("ROBQUANT_PLUGINS", "robquant_test_plugin")
    yield "scaled_fgsm"
    ATTACKS.unregister("scaled_fgsm")
    sys.modules.pop("robquant_test_plugin", None)
    from robquant import plugins

    plugins._loaded.discard("robquant_test_plugin")


def test_a_plugin_attack_is_choosable_in_a_study_with_its_own_options(plugin):
    from robquant.pipeline.plan import build_plan
    from robquant.pipeline.study import parse_study
    from test_study import _with

    study = parse_study(_with(evaluation__attacks=[{"name": plugin, "params": {"scale": 0.5}}],
                              evaluation__diagnostics__enabled=False))
    plan = build_plan(study, lambda: 1000)
    runs = [a for s in plan.stages.values() if s.kind == "evaluate" for a in s.spec.attacks]
    assert runs and all(a.name == plugin and dict(a.options)["scale"] == 0.5 for a in runs)
    with pytest.raises(ConfigError, match=r"scaled_fgsm takes no option 'strength'; it declares: scale"):
        parse_study(_with(evaluation__attacks=[{"name": plugin, "params": {"strength": 2}}]))
    with pytest.raises(ConfigError, match=r"unknown attack 'nope'; known: .*scaled_fgsm"):
        parse_study(_with(evaluation__attacks=[{"name": "nope"}]))


def test_a_plugin_attack_runs_from_the_command_line_and_scale_1_is_fgsm(plugin, demo_models, tmp_path):
    from typer.testing import CliRunner

    from robquant.cli import app

    def cli(*args):
        result = CliRunner().invoke(app, ["--quiet", *map(str, args)])
        return result.exit_code, " ".join(result.output.split())

    fp = demo_models["non_robust"][0]
    code, text = cli("attack", fp, "--attack", f"{plugin},fgsm", "--attack-option", "scale=1", "--eps", "16",
                     "--n-test", "100", "--out", tmp_path / "a")
    assert code == 0, text
    record = json.loads((tmp_path / "a" / "stage.json").read_text())
    robust = {r["attack"]: r["accuracy"] for r in record["result"]["robust"]}
    assert robust[plugin] == robust["fgsm"] < record["result"]["clean_accuracy"]  # the same attack, and it attacks
    code, text = cli("attack", fp, "--attack", "fgsm", "--attack-option", "scale=1", "--out", tmp_path / "b")
    assert code == 2 and "--attack-option scale: no attack of --attack 'fgsm' declares it" in text
    assert not (tmp_path / "b").exists()


def test_a_plugin_attacks_declared_option_is_checked_everywhere_and_listed(plugin, demo_models, tmp_path):
    from typer.testing import CliRunner

    from robquant.cli import app
    from robquant.pipeline.study import parse_study
    from test_study import _with

    allowed = "scaled_fgsm option scale: -1 is not allowed; allowed: a number >= 0 <= 4"
    with pytest.raises(ConfigError, match=allowed):
        parse_study(_with(evaluation__attacks=[{"name": plugin, "params": {"scale": -1}}]))
    with pytest.raises(ConfigError, match="scaled_fgsm option scale: 'big' is not allowed"):
        parse_study(_with(evaluation__attacks=[{"name": plugin, "params": {"scale": "big"}}]))
    result = CliRunner().invoke(app, ["--quiet", "attack", str(demo_models["non_robust"][0]), "--attack", plugin,
                                      "--attack-option", "scale=-1", "--out", str(tmp_path / "a")])
    assert result.exit_code == 2 and allowed in " ".join(result.output.split())
    assert not (tmp_path / "a").exists()
    listed = " ".join(CliRunner(env={"COLUMNS": "400"}).invoke(app, ["list"]).output.split())
    assert "scaled_fgsm: scale=1.0 (a number >= 0 <= 4): the step as a multiple of eps" in listed
    assert "pgd: steps=20 (a whole number >= 0)" in listed  # robquant's own, declared the same way


def test_the_built_in_attacks_check_their_declared_options():
    from robquant.attacks import ATTACKS

    with pytest.raises(ConfigError, match="pgd option norm: 'l3' is not allowed; allowed: one of linf, l2"):
        ATTACKS.get("pgd").select_options({"norm": "l3"})
    with pytest.raises(ConfigError, match="square option n_queries: 0.5 is not allowed"):
        ATTACKS.get("square").select_options({"n_queries": 0.5})
    assert ATTACKS.get("transfer").DECLARED == ATTACKS.get("pgd").DECLARED  # the white-box PGD's own
    assert ATTACKS.get("pgd").select_options({"steps": 7, "n_queries": 9, "restarts": None}) == {"steps": 7}


def test_the_options_reference_in_the_docs_is_generated_from_the_declarations():
    # docs/options.md is `robquant list --markdown`: the study schema's fields and every attack's declarations
    from pathlib import Path

    from robquant.display import options_reference

    text = options_reference()
    assert (Path(__file__).resolve().parents[1] / "docs" / "options.md").read_text() == text, \
        "docs/options.md is stale: robquant list --markdown > docs/options.md"
    assert "| `evaluation.bitflip.search_cap` | int | `100` |" in text
    assert "| pgd | `steps` | `20` | a whole number >= 0 |" in text
