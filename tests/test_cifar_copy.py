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
