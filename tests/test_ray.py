"""The Ray executor on a local CPU Ray instance: the same stages and records as the local executor."""

import json

import pytest

from test_study import TINY, _metrics, cli, write

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -e '.[ray]')")


def test_ray_executor_runs_the_study_like_the_local_one(reference_run, tmp_path):
    study = json.loads(json.dumps(TINY))
    path = write(tmp_path, study)
    code, text = cli("run", path, "--executor", "ray", "--device", "cpu")
    assert code == 0, text
    assert "ran 14 stages" in text
    ours, local = _metrics(tmp_path / "runs" / "store"), _metrics(reference_run[1])
    assert set(ours) == set(local)  # the same content-addressed stages
    for key, (kind, status, m) in ours.items():
        assert status in ("done", "NC") and kind == local[key][0]
        assert set(m) == set(local[key][2])
        assert 0 <= m["clean_accuracy"] <= 1
    # values may differ in the last bits: a task computes with one torch thread, not two
    code, again = cli("run", path, "--executor", "ray", "--device", "cpu")
    assert code == 0 and "nothing to do" in again
