"""The local JPEG copy of CIFAR-10 (../shared/data, unpacked by benchmarks/prepare_cifar.sh).

Slow and data-dependent: run with `pytest -m slow`; skipped when the copy is not unpacked.
"""

from pathlib import Path

import pytest

from robquant.data import create_dataset
from robquant.errors import DataIntegrityError

ROOT = Path(__file__).resolve().parents[1] / ".data"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (ROOT / "cifar-10-batches-py").is_dir(),
                       reason="no .data/cifar-10-batches-py (run benchmarks/prepare_cifar.sh)"),
]


def test_jpeg_copy_is_refused_unless_accepted_and_then_recorded():
    with pytest.raises(DataIntegrityError, match="checksum mismatch"):
        create_dataset("cifar10", ROOT, "test")
    test = create_dataset("cifar10", ROOT, "test", allow_unverified=True)
    train = create_dataset("cifar10", ROOT, "train", allow_unverified=True)
    assert len(train) == 50_000 and len(test) == 10_000
    assert train.images.shape[1:] == (3, 32, 32) and test.provenance["verified"] is False
    assert train.labels.bincount().tolist() == [5000] * 10


def test_imagefolder_reads_the_jpeg_tree():
    if not (ROOT / "cifar10-jpeg").is_dir():
        pytest.skip("no .data/cifar10-jpeg")
    test = create_dataset("imagefolder", ROOT / "cifar10-jpeg", "test")
    assert len(test) == 10_000 and test.num_classes == 10 and test.provenance["classes"][0] == "airplane"


def test_cifar10_cpu_preset_plans_within_its_budget_on_this_machine(tmp_path):
    """The preset's own estimate (measured speeds here) stays within its 45-minute budget."""
    import torch

    from robquant.pipeline.estimate import cached_speeds, estimate_plan
    from robquant.pipeline.plan import build_plan
    from robquant.pipeline.study import load_study

    study = load_study(Path(__file__).resolve().parents[1] / "configs" / "cifar10-cpu.yaml")
    study = study.model_copy(update={"dataset": study.dataset.model_copy(update={"root": str(ROOT)})})
    plan = build_plan(study, lambda: 50_000)
    assert len(plan.stages) == 62 and len(study.seeds) == 3
    assert sum(s.kind == "train_fp" for s in plan.stages.values()) == 2  # shared by every seed
    speeds = cached_speeds(study, torch.device("cpu"), tmp_path)
    total = sum(estimate_plan(plan, speeds, 50_000).values())
    assert total < 45 * 60, f"estimated {total / 60:.1f} min"
