"""CIFAR-10 and CIFAR-100: download, verify by md5 before unpickling, extract safely.

Checksums are those of the official release (cs.toronto.edu/~kriz/cifar.html). A copy whose
checksums differ (a re-encoded mirror, say) is refused unless the caller passes
``allow_unverified=True``; the data set's provenance then records ``verified: False``. Batch
files are always read with a restricted unpickler, verified or not.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from robquant.data.base import Augment, ImageDataset
from robquant.data.safe_pickle import safe_loads
from robquant.errors import DataError, DataIntegrityError

log = logging.getLogger(__name__)
_WARNED: set[tuple[str, tuple[str, ...]]] = set()  # unverified copies already reported


@dataclass(frozen=True)
class CifarSpec:
    """Files and checksums of one CIFAR release."""

    name: str
    folder: str
    url: str
    archive_md5: str
    train: tuple[tuple[str, str], ...]
    test: tuple[tuple[str, str], ...]
    label_key: str
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def archive(self) -> str:
        return self.url.rsplit("/", 1)[-1]


CIFAR10 = CifarSpec(
    name="cifar10", folder="cifar-10-batches-py",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    archive_md5="c58f30108f718f92721af3b95e74349a",
    train=(("data_batch_1", "c99cafc152244af753f735de768cd75f"),
           ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
           ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
           ("data_batch_4", "634d18415352ddfa80567beed471001a"),
           ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb")),
    test=(("test_batch", "40351d587109b95175f43aff81a1287e"),),
    label_key="labels", num_classes=10,
    mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
)

CIFAR100 = CifarSpec(
    name="cifar100", folder="cifar-100-python",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    archive_md5="eb9058c3a382ffc7106e4002c42a8d85",
    train=(("train", "16019d7e3df5f24257cddd939b257f8d"),),
    test=(("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),),
    label_key="fine_labels", num_classes=100,
    mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
)

UNVERIFIED_HINT = ("pass --allow-unverified-data (allow_unverified=True) to use this copy anyway; "
                   "results will record that the data was not verified")


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    """The md5 hex digest of a file."""
    h = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def load_cifar(spec: CifarSpec, root: str | os.PathLike | None, split: str, *,
               download: bool = False, allow_unverified: bool = False) -> ImageDataset:
    """Load one split of a CIFAR release from ``root``.

    ``root`` may hold the extracted folder (e.g. ``cifar-10-batches-py``), the archive, or be
    the extracted folder itself. With ``download=True`` a missing archive is fetched.

    Raises:
        DataError: if the data root or a batch file is missing.
        DataIntegrityError: if a checksum differs and ``allow_unverified`` is False, or a batch
            file holds anything but arrays.
    """
    folder = _find_or_extract(spec, root, download, allow_unverified)
    files = spec.train if split == "train" else spec.test
    mismatched = _verify(folder, files, allow_unverified)
    images, labels = [], []
    for fname, _ in files:
        entry = safe_loads((folder / fname).read_bytes())
        if not isinstance(entry, dict) or "data" not in entry or spec.label_key not in entry:
            raise DataIntegrityError(f"{folder / fname} is not a CIFAR batch (no 'data'/'{spec.label_key}')")
        images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        labels.append(np.asarray(entry[spec.label_key], dtype=np.int64))
    return ImageDataset(
        name=spec.name, split=split,
        images=torch.from_numpy(np.concatenate(images)), labels=torch.from_numpy(np.concatenate(labels)),
        num_classes=spec.num_classes, mean=spec.mean, std=spec.std,
        augment=Augment(crop_pad=4, flip=True),
        provenance={"source": str(folder), "verified": not mismatched, "unverified_files": mismatched},
    )


def _find_or_extract(spec: CifarSpec, root: str | os.PathLike | None, download: bool,
                     allow_unverified: bool) -> Path:
    if root is None:
        raise DataError(f"{spec.name} needs a data root: pass --data-root DIR (holding {spec.folder}/ "
                        f"or {spec.archive}), and --download to fetch it")
    root = Path(root).expanduser()
    if root.name == spec.folder and root.is_dir():
        return root
    if not root.is_dir() and not download:
        raise DataError(f"data root {str(root)!r} does not exist (pass --download to fetch {spec.name})")
    folder = root / spec.folder
    if folder.is_dir():
        return folder
    archive = root / spec.archive
    if not archive.is_file():
        if not download:
            raise DataError(f"no {spec.folder}/ or {spec.archive} under data root {str(root)!r}; "
                            f"pass --download to fetch it")
        _download(spec.url, archive)
    digest = md5sum(archive)
    if digest != spec.archive_md5:
        if not allow_unverified:
            raise DataIntegrityError(f"{archive} has md5 {digest}, expected {spec.archive_md5}: "
                                     f"corrupted or not the official archive; {UNVERIFIED_HINT}")
        log.warning("using %s although its md5 %s is not the official one", archive, digest)
    _extract(archive, root)
    if not folder.is_dir():
        raise DataIntegrityError(f"{archive} does not contain {spec.folder}/")
    return folder


def _verify(folder: Path, files: tuple[tuple[str, str], ...], allow_unverified: bool) -> list[str]:
    """Check every file's md5 before anything is unpickled; return the names that differ."""
    mismatched = []
    for fname, expected in files:
        path = folder / fname
        if not path.is_file():
            raise DataError(f"missing batch file {path}")
        if md5sum(path) != expected:
            mismatched.append(fname)
    if mismatched and not allow_unverified:
        raise DataIntegrityError(f"checksum mismatch in {folder} for {', '.join(mismatched)}: "
                                 f"corrupted, tampered or not the official copy; {UNVERIFIED_HINT}")
    if mismatched and (str(folder), tuple(mismatched)) not in _WARNED:  # once per process: a study loads it often
        _WARNED.add((str(folder), tuple(mismatched)))
        log.warning("using unverified batch files %s from %s", mismatched, folder)
    return mismatched


def _extract(archive: Path, root: Path) -> None:
    """Extract into a temporary folder beside the target, then move into place."""
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=root))
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DataIntegrityError(f"cannot extract {archive}: {exc}") from None
        for child in tmp.iterdir():
            target = root / child.name
            if not target.exists():
                os.replace(child, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _download(url: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    log.info("downloading %s", url)
    try:
        urllib.request.urlretrieve(url, tmp)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"download of {url} failed: {exc}") from None
    os.replace(tmp, dest)
