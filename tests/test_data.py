import dataclasses
import io
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch

from robquant.data import (CIFAR10, Augment, DeviceLoader, create_dataset, list_datasets, load_cifar,
                           md5sum)
from robquant.data.safe_pickle import safe_loads
from robquant.errors import ConfigError, DataError, DataIntegrityError, UnknownNameError


# ---------------------------------------------------------------- registry and small data sets

def test_registry_lists_all_sets():
    assert {"cifar10", "cifar100", "digits", "synthetic", "imagefolder"} <= set(list_datasets())


def test_unknown_dataset_lists_known_names():
    with pytest.raises(UnknownNameError, match="cifar10.*digits"):
        create_dataset("mnist")


def test_digits_split_is_offline_scaled_and_disjoint():
    train, test = create_dataset("digits", split="train"), create_dataset("digits", split="test")
    assert len(train) + len(test) == 1797
    assert train.images.shape[1:] == (1, 8, 8) and train.images.dtype == torch.uint8
    assert train.images.max() == 255 and train.images.min() == 0
    rows = {bytes(r) for r in train.images.flatten(1).numpy()}
    # the split is by example; identical digit images may still occur twice in the data
    shared = sum(bytes(r) in rows for r in test.images.flatten(1).numpy())
    assert shared < 0.05 * len(test)
    assert set(test.labels.tolist()) == set(range(10))


def test_synthetic_is_deterministic_for_a_seed():
    a = create_dataset("synthetic", n_train=64, seed=3)
    b = create_dataset("synthetic", n_train=64, seed=3)
    c = create_dataset("synthetic", n_train=64, seed=4)
    assert torch.equal(a.images, b.images) and not torch.equal(a.images, c.images)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.25])
def test_subset_is_class_stratified_and_seed_fixed(fraction):
    ds = create_dataset("digits")
    sub = ds.subset(fraction, seed=1)
    assert torch.equal(sub.labels, ds.subset(fraction, seed=1).labels)
    assert not torch.equal(sub.images, ds.subset(fraction, seed=2).images)
    full = torch.bincount(ds.labels, minlength=10).float()
    part = torch.bincount(sub.labels, minlength=10).float()
    assert torch.all((part - fraction * full).abs() <= 1.0)
    assert sub.provenance["fraction"] == fraction


@pytest.mark.parametrize("fraction", [0, -0.5, 1.2, float("nan")])
def test_fraction_outside_unit_interval_is_refused(fraction):
    with pytest.raises(ConfigError, match=r"fraction must be in \(0, 1\]"):
        create_dataset("digits").subset(fraction)


# ---------------------------------------------------------------- device loader

def test_loader_is_deterministic_per_epoch_and_covers_the_split():
    ds = create_dataset("synthetic", n_train=100)
    loader = DeviceLoader(ds, 32, shuffle=True, augment=Augment(crop_pad=2, flip=True), seed=5)
    first = [x for x, _ in loader.epoch(3)]
    again = [x for x, _ in loader.epoch(3)]
    other = [x for x, _ in loader.epoch(4)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[0], other[0])
    labels = torch.cat([y for _, y in loader.epoch(0)])
    assert torch.equal(labels.sort().values, ds.labels.sort().values)
    assert len(loader) == 4 and sum(len(x) for x in first) == 100


def test_crop_is_a_shift_of_the_padded_image_and_flip_mirrors():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    ds = create_dataset("synthetic", n_train=2)
    ds.images = x.to(torch.uint8)
    loader = DeviceLoader(ds, 2, augment=Augment(crop_pad=1, flip=True), seed=0)
    for epoch in range(10):
        (out, _), = list(loader.epoch(epoch))
        for i in range(2):
            padded = torch.nn.functional.pad(x[i] / 255, (1, 1, 1, 1))
            candidates = [padded[:, r:r + 4, c:c + 4] for r in range(3) for c in range(3)]
            candidates += [c.flip(2) for c in candidates]
            assert any(torch.equal(out[i], c) for c in candidates)


def test_loader_without_augmentation_returns_pixels_in_unit_range():
    ds = create_dataset("digits", split="test")
    x, y = next(iter(DeviceLoader(ds, 64)))
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert torch.equal(x, ds.images[:64].float() / 255)


# ---------------------------------------------------------------- CIFAR verification

def _write_batch(path, n, seed, payload=None):
    rng = np.random.default_rng(seed)
    entry = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             "labels": [int(v) for v in rng.integers(0, 10, n)], "batch_label": "x"}
    data = pickle.dumps(entry, protocol=4) if payload is None else payload
    path.write_bytes(data)


def _fake_cifar(root, n=20):
    """A copy in the official layout whose checksums are not the official ones."""
    folder = root / CIFAR10.folder
    folder.mkdir(parents=True)
    for i, (name, _) in enumerate(CIFAR10.train + CIFAR10.test):
        _write_batch(folder / name, n, i)
    return folder


def _spec_for(folder):
    """CIFAR10's spec with the fake folder's checksums as the 'official' ones."""
    train = tuple((n, md5sum(folder / n)) for n, _ in CIFAR10.train)
    test = tuple((n, md5sum(folder / n)) for n, _ in CIFAR10.test)
    return dataclasses.replace(CIFAR10, train=train, test=test)


class _Exploit:
    """Pickles into a call of os.system; unpickling it must never run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_unverified_copy_is_refused_with_a_hint(tmp_path):
    _fake_cifar(tmp_path)
    with pytest.raises(DataIntegrityError, match="checksum mismatch.*--allow-unverified-data"):
        create_dataset("cifar10", tmp_path, "train")


def test_unverified_copy_is_accepted_explicitly_and_recorded(tmp_path):
    _fake_cifar(tmp_path)
    ds = create_dataset("cifar10", tmp_path, "test", allow_unverified=True)
    assert ds.images.shape == (20, 3, 32, 32) and ds.provenance["verified"] is False
    assert ds.provenance["unverified_files"] == ["test_batch"]


def test_matching_checksums_verify(tmp_path):
    folder = _fake_cifar(tmp_path)
    ds = load_cifar(_spec_for(folder), tmp_path, "train")
    assert len(ds) == 100 and ds.provenance["verified"] is True
    entry = pickle.loads((folder / "data_batch_1").read_bytes())
    assert torch.equal(ds.images[:20].flatten(1), torch.from_numpy(entry["data"]))


def test_tampered_batch_is_refused_before_unpickling(tmp_path):
    folder = _fake_cifar(tmp_path)
    spec = _spec_for(folder)
    marker = tmp_path / "pwned"
    _write_batch(folder / "test_batch", 0, 0, payload=pickle.dumps(_Exploit(marker)))
    with pytest.raises(DataIntegrityError, match="checksum mismatch.*test_batch"):
        load_cifar(spec, tmp_path, "test")
    assert not marker.exists()
    # even when the user accepts an unverified copy, the restricted unpickler refuses the payload
    with pytest.raises(DataIntegrityError, match="refusing to unpickle global"):
        load_cifar(spec, tmp_path, "test", allow_unverified=True)
    assert not marker.exists()


def test_restricted_unpickler_admits_arrays_only():
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    out = safe_loads(pickle.dumps({"data": arr, "labels": [1, 2]}))
    assert np.array_equal(out["data"], arr)
    with pytest.raises(DataIntegrityError, match="collections.OrderedDict"):
        safe_loads(pickle.dumps(__import__("collections").OrderedDict(a=1)))
    with pytest.raises(DataIntegrityError, match="malformed"):
        safe_loads(b"\x80\x04not a pickle")


def _archive(root, folder_src):
    path = root / CIFAR10.archive
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder_src, arcname=CIFAR10.folder)
    return path


def test_archive_with_wrong_md5_is_refused_then_extracted_when_allowed(tmp_path):
    src = _fake_cifar(tmp_path / "src")
    root = tmp_path / "root"
    root.mkdir()
    _archive(root, src)
    with pytest.raises(DataIntegrityError, match="md5.*corrupted or not the official archive"):
        create_dataset("cifar10", root, "test")
    assert not (root / CIFAR10.folder).exists()
    ds = create_dataset("cifar10", root, "test", allow_unverified=True)
    assert len(ds) == 20 and (root / CIFAR10.folder / "test_batch").is_file()


def test_corrupted_archive_is_refused(tmp_path):
    (tmp_path / CIFAR10.archive).write_bytes(b"\x1f\x8b" + b"garbage" * 100)
    with pytest.raises(DataIntegrityError, match="md5"):
        create_dataset("cifar10", tmp_path, "train")
    with pytest.raises(DataIntegrityError, match="cannot extract"):
        create_dataset("cifar10", tmp_path, "train", allow_unverified=True)


def test_archive_members_escaping_the_root_are_refused(tmp_path):
    path = tmp_path / CIFAR10.archive
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(DataIntegrityError, match="cannot extract"):
        create_dataset("cifar10", tmp_path, "train", allow_unverified=True)
    assert not (tmp_path.parent / "escape.txt").exists()


def test_missing_data_root_and_files_are_clear(tmp_path):
    with pytest.raises(DataError, match="needs a data root"):
        create_dataset("cifar10", None)
    with pytest.raises(DataError, match="does not exist"):
        create_dataset("cifar10", tmp_path / "nope")
    with pytest.raises(DataError, match="pass --download"):
        create_dataset("cifar10", tmp_path)
    with pytest.raises(ConfigError, match="split"):
        create_dataset("digits", split="val")


# ---------------------------------------------------------------- image folders

def test_imagefolder_reads_class_folders(tmp_path):
    from PIL import Image

    for split, n in (("train", 3), ("test", 2)):
        for c, cls in enumerate(["cat", "dog"]):
            d = tmp_path / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((6, 6, 3), 40 * c + i, dtype=np.uint8)).save(d / f"{i}.png")
    ds = create_dataset("imagefolder", tmp_path, "train")
    assert ds.images.shape == (6, 3, 6, 6) and ds.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert ds.provenance["classes"] == ["cat", "dog"] and int(ds.images[3, 0, 0, 0]) == 40
    with pytest.raises(DataError, match="no folder"):
        create_dataset("imagefolder", tmp_path / "missing", "train")
