"""Evaluation add-ons (robquant.evaluation.addons): one interface, looped over by the handler and the cost."""

import dataclasses

from robquant.evaluation.addons import ADD_ONS, AddOnStep, contributed_checks, run_add_ons
from robquant.evaluation.stage import _flags
from robquant.pipeline.plan import build_plan, evaluation_cost
from robquant.pipeline.specs import Evaluate
from robquant.pipeline.study import parse_study

STUDY = {"name": "addons", "dataset": {"name": "digits"}, "model": {"name": "resnet20", "width": 4},
         "evaluation": {"eps": [8], "main_eps": 8, "n_test": 300, "bitflip": True, "deployed": True, "bit_errors": True, "corruptions": {"names": ["fog"]},
                        "diagnostics": {"n": 50}},
         "axes": {"init": ["non_robust"], "method": ["ptq"], "precision": ["A4W4"]}}


def _evaluate_spec():
    plan = build_plan(parse_study(STUDY), lambda: 1000)
    return next(st.spec for st in plan.stages.values() if st.kind == "evaluate")


def test_every_add_on_is_a_field_of_evaluate_with_the_whole_interface():
    names = {f.name for f in dataclasses.fields(Evaluate)}
    spec = _evaluate_spec()
    assert set(ADD_ONS) <= names
    assert [a.RECORD_KEY for a in spec.add_ons()] == ["diagnostics", "deployed", "bitflip", "bit_errors", "corruptions"]
    for addon in spec.add_ons():
        assert all(callable(getattr(addon, m)) for m in ("passes", "run", "checks"))


def test_the_cost_is_the_attacks_plus_each_add_ons_passes():
    spec = _evaluate_spec()
    bare = dataclasses.replace(spec, diagnose=None, deployed=None, bitflip=None, bit_errors=None, corruptions=None)
    total, base = evaluation_cost(spec), evaluation_cost(bare)
    passes = [a.passes(spec) for a in spec.add_ons()]
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
            self._addons = addons

        def add_ons(self):
            return self._addons

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
