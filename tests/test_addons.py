"""Evaluation add-ons (robquant.evaluation.addons): one interface, looped over by the handler and the cost."""

import dataclasses

from dataclasses import dataclass

import pytest

from robquant.evaluation.addons import ADD_ONS, AddOnStep, add_on_fields, contributed_checks, register_add_on, run_add_ons
from robquant.evaluation.stage import _flags
from robquant.pipeline.plan import build_plan, evaluation_cost
from robquant.pipeline.specs import spec_config, spec_json, spec_key
from robquant.pipeline.study import parse_study

STUDY = {"name": "addons", "dataset": {"name": "digits"}, "model": {"name": "resnet20", "width": 4},
         "evaluation": {"eps": [8], "main_eps": 8, "n_test": 300, "bitflip": True, "deployed": True, "bit_errors": True, "corruptions": {"names": ["fog"]},
                        "diagnostics": {"n": 50}},
         "axes": {"init": ["non_robust"], "method": ["ptq"], "precision": ["A4W4"]}}


def _evaluate_spec():
    plan = build_plan(parse_study(STUDY), lambda: 1000)
    return next(st.spec for st in plan.stages.values() if st.kind == "evaluate")


def test_every_add_on_is_registered_with_the_whole_interface_and_runs_in_order():
    spec = _evaluate_spec()
    assert add_on_fields() == ["diagnose", "deployed", "bitflip", "bit_errors", "corruptions"]
    assert [a.RECORD_KEY for a in spec.add_ons] == ["diagnostics", "deployed", "bitflip", "bit_errors", "corruptions"]
    for addon in spec.add_ons:
        assert all(callable(getattr(addon, m)) for m in ("passes", "work", "run", "checks", "metrics"))
        assert spec.add_on(type(addon).FIELD) is addon
    # given in any order, held in the order they run; one of each kind at most
    shuffled = dataclasses.replace(spec, add_ons=spec.add_ons[::-1])
    assert shuffled.add_ons == spec.add_ons and spec_key(shuffled) == spec_key(spec)
    with pytest.raises(ValueError, match="registered and distinct"):
        dataclasses.replace(spec, add_ons=spec.add_ons + spec.add_ons[:1])


def test_the_key_holds_each_add_on_under_its_field_and_the_trust_checks_always():
    spec = _evaluate_spec()
    keyed = spec_config(spec)
    assert "add_ons" not in keyed and all(f in keyed for f in add_on_fields())
    bare = dataclasses.replace(spec, add_ons=())
    keyed = spec_config(bare)
    assert keyed["diagnose"] is None  # keyed as null when absent (earlier keys stand)
    assert not {"deployed", "bitflip", "bit_errors", "corruptions"} & set(keyed)  # the others only when run
    assert set(add_on_fields()) <= set(spec_json(bare))  # the record's config names every one


def test_the_cost_is_the_attacks_plus_each_add_ons_passes():
    spec = _evaluate_spec()
    bare = dataclasses.replace(spec, add_ons=())
    total, base = evaluation_cost(spec), evaluation_cost(bare)
    passes = [a.passes(spec) for a in spec.add_ons]
    assert all(f > 0 for f, _ in passes)
    assert total["forward"] == base["forward"] + sum(f for f, _ in passes)
    assert total["backward"] == base["backward"] + sum(b for _, b in passes)


class _Fixed:
    """An add-on that returns a fixed result and contributes one check (the interface, no work)."""

    def __init__(self, key, result, checks):
        self.RECORD_KEY, self._result, self._checks = key, result, checks

    def passes(self, spec):
        return 0.0, 0.0

    def run(self, step):
        return self._result

    def checks(self, result):
        return self._checks


def test_checks_an_add_on_contributes_join_the_trust_checks_and_the_flags():
    class Spec:
        def __init__(self, addons):
            self.add_ons = addons

    diag = _Fixed("diagnostics", {"checks": {"masking": {"flag": False}}, "flags": []}, {})
    other = _Fixed("other", {"n": 3}, {"other_mismatch": {"flag": True}})
    record = {}
    run_add_ons(Spec([diag, other]), AddOnStep(None, None, None, [], None, "cpu", 1, 0), record)
    assert record["other"] == {"n": 3}
    assert record["diagnostics"]["checks"] == {"masking": {"flag": False}, "other_mismatch": {"flag": True}}
    assert record["diagnostics"]["flags"] == ["other_mismatch"]
    assert diag._result["checks"] == {"masking": {"flag": False}}  # no result patched in place
    # without the trust checks, the contributed check still flags the evaluation
    alone = {}
    run_add_ons(Spec([other]), AddOnStep(None, None, None, [], None, "cpu", 1, 0), alone)
    assert contributed_checks(Spec([other]), alone) == {"other_mismatch": {"flag": True}}
    assert _flags(alone, Spec([other])) == ["other_mismatch"]


@dataclass(frozen=True)
class ConfidentRun:
    """A plug-in's add-on (defined here, registered by the test): the share of the first ``n`` test examples
    the model classifies with softmax confidence above ``level``, flagged when below ``floor``."""

    n: int
    level: float
    floor: float = 0.0

    def passes(self, spec):
        return float(self.n), 0.0

    def work(self, spec):
        return 0.0, float(self.n)

    def run(self, step):
        import torch

        x = step.test_set.images[: self.n].float().div(255).to(step.device)
        with torch.no_grad():
            confidence = step.model(x).softmax(1).amax(1)
        return {"share": (confidence > self.level).double().mean().item(), "n": len(x)}

    def checks(self, result):
        return {"unconfident": {"flag": result["share"] < self.floor, "share": result["share"]}}

    def metrics(self, result):
        return {"share": result["share"]}


@pytest.fixture()
def confident():
    yield register_add_on("confident", 50)(ConfidentRun)  # no study section: a library caller passes it
    ADD_ONS.unregister("confident")


def test_a_plugin_add_on_runs_in_an_evaluation_keyed_recorded_and_flagged(confident, demo_models, tmp_path):
    from robquant.pipeline.api import attack_model

    fp = demo_models["non_robust"][0]
    args = dict(attacks=["fgsm"], eps=[8], n_test=60, store=tmp_path / "store")
    plain = attack_model(fp, **args)
    record = attack_model(fp, **args, add_ons=[confident(60, 0.5, floor=1.01)])
    assert record["stage"]["key"] != plain["stage"]["key"]  # its options are in the key
    assert record["config"]["confident"] == {"n": 60, "level": 0.5, "floor": 1.01}
    share = record["confident"]["share"]
    assert 0.5 < share <= 1.0 and record["confident"]["n"] == 60  # a trained model is mostly confident
    assert record["metrics"]["others"] == {"confident": {"share": share}}
    assert "unconfident" in record["metrics"]["flags"]  # its check joins the evaluation's flags
    assert "confident" not in plain and plain["metrics"]["others"] is None
