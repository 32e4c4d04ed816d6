"""Build ``src/robquant/data/frost.npz``: the frost photographs of CIFAR-10-C at the scale it crops them.

CIFAR-10-C's frost adds a 32x32 crop of one of five photographs of frost, each first shrunk to 0.2 of its
size by OpenCV's bilinear resize. At exactly 0.2 that resize reads whole pixels (output pixel ``i`` reads
input pixel ``5 i + 2``), so the shrunk photograph is ``photo[2::5, 2::5]`` cut to ``round(0.2 x side)``
rows and columns; OpenCV's colour read drops the PNGs' alpha channel, as ``convert("RGB")`` does here.

The photographs come from the ``imagecorruptions`` wheel (Apache-2.0, which ships the original's files);
only its image files are read (no code of it runs):

    pip download --no-deps imagecorruptions==1.1.2 -d /tmp/frost
    python scripts/frost_textures.py /tmp/frost/imagecorruptions-1.1.2-py3-none-any.whl
"""

from __future__ import annotations

import argparse
import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")  # the five the original draws from
SCALE = 5  # 1 / 0.2
OUT = Path(__file__).resolve().parents[1] / "src" / "robquant" / "data" / "frost.npz"


def shrunk(photo: np.ndarray) -> np.ndarray:
    """OpenCV's ``resize(photo, fx=0.2, fy=0.2)`` (bilinear), which at this scale picks pixels."""
    rows, cols = (int(round(side / SCALE)) for side in photo.shape[:2])
    return np.ascontiguousarray(photo[SCALE // 2::SCALE, SCALE // 2::SCALE][:rows, :cols])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="the imagecorruptions 1.1.2 wheel")
    args = parser.parse_args()
    textures = {}
    with zipfile.ZipFile(args.wheel) as wheel:
        for name in PHOTOS:
            data = wheel.read(f"imagecorruptions/frost/{name}")
            photo = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            textures[name.split(".")[0]] = shrunk(photo)
            print(f"{name}: {photo.shape[1]}x{photo.shape[0]} -> {textures[name.split('.')[0]].shape[1]}x"
                  f"{textures[name.split('.')[0]].shape[0]}, source sha256 {hashlib.sha256(data).hexdigest()[:16]}")
    np.savez_compressed(OUT, **textures)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes), sha256 {hashlib.sha256(OUT.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    main()
