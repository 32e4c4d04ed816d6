"""Natural corruptions of test images at five severities, after the CIFAR-10-C definitions.

Hendrycks & Dietterich (ICLR 2019) define 15 corruptions of 32x32 images, each at severities 1-5,
with per-severity constants. The ones here follow those definitions and constants, written on numpy
and scipy (no ImageMagick, OpenCV or scikit-image), seeded, on ``(N, C, H, W)`` uint8 images:

- noise: ``gaussian_noise`` (additive, sd c), ``shot_noise`` (Poisson with c photons at full scale),
  ``impulse_noise`` (salt and pepper on a share c of the values);
- blur: ``defocus_blur`` (an anti-aliased disk of radius c), ``zoom_blur`` (the mean of the image and its
  centre zooms by each factor of c);
- weather: ``fog`` (a diamond-square plasma fractal added with strength c), ``brightness`` (c added to the
  HSV value);
- digital: ``contrast`` (distance from the per-image mean scaled by c), ``pixelate`` (box down-sampling to
  c of the side and back), ``jpeg_compression`` (JPEG at quality c, Pillow);
- ``glass_blur`` (blur, each pixel swapped with a neighbour, blur), ``motion_blur`` (ImageMagick's one-sided
  Gaussian motion blur of radius and sigma c at a random angle in -45..45 degrees), ``snow`` (motion-blurred
  flakes over a brightened image), ``elastic_transform`` (a random affine and a smooth random displacement
  field, c in shares of the image side).

- ``frost`` (the image scaled by c[0] plus c[1] times a random crop of one of the original's five frost
  photographs, shrunk to 0.2 as it does; ``frost.npz``, built by ``scripts/frost_textures.py``, equals OpenCV's
  shrinking pixel for pixel).

Differences from the original, by construction: the
random draws are numpy's seeded generator, not the original's global state; the disk kernel's
anti-aliasing is a Gaussian filter (scipy) where the original uses OpenCV's 3x3 Gaussian; pixelate's
box up-sampling is a box-weighted (area) resampling; the motion blur is ImageMagick's kernel (2 ceil(radius)
+ 1 taps, Gaussian weights in the tap index, offsets rounded to whole pixels, edges extended) written here,
not ImageMagick; the blurs of glass blur are scipy's Gaussian with edges extended; images of other sizes
than 32x32 use the same constants (fog's fractal is drawn at the next power of two; elastic's shares are of
the shorter side; frost's photographs are mirrored to cover images larger than them, and seen through
the luminance weights by one-channel images). Severity 0 is the image itself. The published constants of glass blur and the elastic
transform do not rise in pixel distance with the severity (``tests/test_corruptions.py`` says by how much).
"""

from __future__ import annotations

import io
from importlib import resources
from typing import Any, Callable

import numpy as np
from scipy import ndimage

from robquant.errors import ConfigError

SEVERITIES = (1, 2, 3, 4, 5)

# per corruption, its constant at severities 1..5 (the CIFAR-10-C definitions)
CONSTANTS: dict[str, tuple] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    "zoom_blur": (1.06, 1.11, 1.16, 1.21, 1.26),  # zoom factors 1, 1.01, ... below this
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "jpeg_compression": (80, 65, 58, 50, 40),
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),  # sigma, max shift, passes
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),  # radius, sigma (ImageMagick's)
    "snow": ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
             (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)),
    "frost": ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),  # image's, frost's weight
    "elastic_transform": ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05),
                          (0.1, 0.03, 0.03)),  # alpha, sigma, affine shift: shares of the image side
}


def _gaussian_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    return x + rng.normal(scale=c, size=x.shape)


def _shot_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    return rng.poisson(x * c) / c


def _impulse_noise(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    hit = rng.random(x.shape) < c  # each value hit with probability c, half to 0 and half to 1
    return np.where(hit, (rng.random(x.shape) < 0.5).astype(x.dtype), x)


def _disk(radius: float, alias_blur: float) -> np.ndarray:
    span = np.arange(-8, 9) if radius <= 8 else np.arange(-int(radius), int(radius) + 1)
    xx, yy = np.meshgrid(span, span)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float64)
    disk /= disk.sum()
    return ndimage.gaussian_filter(disk, alias_blur, truncate=1.0 / max(alias_blur, 1e-6))


def _defocus_blur(x: np.ndarray, c: tuple, rng: np.random.Generator) -> np.ndarray:
    kernel = _disk(*c)
    return ndimage.convolve(x, kernel[None, None], mode="reflect")


def _clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """The centre of ``x`` (N, C, H, W) zoomed by ``factor`` back to H x W (bilinear)."""
    h, w = x.shape[-2:]
    ch, cw = int(np.ceil(h / factor)), int(np.ceil(w / factor))
    top, left = (h - ch) // 2, (w - cw) // 2
    zoomed = ndimage.zoom(x[..., top:top + ch, left:left + cw], (1, 1, factor, factor), order=1)
    th, tw = (zoomed.shape[-2] - h) // 2, (zoomed.shape[-1] - w) // 2
    return zoomed[..., th:th + h, tw:tw + w]


def _zoom_blur(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    factors = np.arange(1, c, 0.01)
    return (x + sum(_clipped_zoom(x, f) for f in factors)) / (len(factors) + 1)


def _plasma(size: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """A diamond-square height map, ``size`` x ``size`` (a power of two), scaled to [0, 1]."""
    grid = np.zeros((size, size))
    step, wibble = size, 100.0
    while step >= 2:
        half = step // 2
        corners = grid[0::step, 0::step]
        square = corners + np.roll(corners, -1, axis=0)
        square = square + np.roll(square, -1, axis=1)
        grid[half::step, half::step] = square / 4 + wibble * rng.uniform(-wibble, wibble, square.shape)
        centres, corners = grid[half::step, half::step], grid[0::step, 0::step]
        left = centres + np.roll(centres, 1, axis=0) + corners + np.roll(corners, -1, axis=1)
        grid[0::step, half::step] = left / 4 + wibble * rng.uniform(-wibble, wibble, left.shape)
        top = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=0)
        grid[half::step, 0::step] = top / 4 + wibble * rng.uniform(-wibble, wibble, top.shape)
        step //= 2
        wibble /= decay
    grid -= grid.min()
    return grid / grid.max()


def _fog(x: np.ndarray, c: tuple, rng: np.random.Generator) -> np.ndarray:
    h, w = x.shape[-2:]
    size = 1 << int(np.ceil(np.log2(max(h, w, 2))))
    top = x.max(axis=(1, 2, 3), keepdims=True)
    layer = np.stack([_plasma(size, c[1], rng)[:h, :w] for _ in range(len(x))])[:, None]
    return (x + c[0] * layer) * top / (top + c[0])


def _brightness(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    """``c`` added to the HSV value (the largest channel), hue and saturation kept: those are ratios of
    the channels, so every channel is scaled by new value / value (a black pixel, hue and saturation 0,
    becomes grey)."""
    value = x.max(axis=1, keepdims=True)
    new = np.clip(value + c, 0, 1)
    return np.where(value > 0, x * new / np.where(value > 0, value, 1), new)


def _contrast(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    means = x.mean(axis=(2, 3), keepdims=True)
    return (x - means) * c + means


def _pixelate(x: np.ndarray, c: float, rng: np.random.Generator) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    h, w = x.shape[-2:]
    t = torch.from_numpy(x)
    small = F.interpolate(t, size=(int(h * c), int(w * c)), mode="area")
    return F.interpolate(small, size=(h, w), mode="area").numpy()


def _jpeg(x: np.ndarray, c: int, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    out = np.empty_like(x)
    pixels = np.round(x * 255).astype(np.uint8)
    for i, image in enumerate(pixels):
        mode = "L" if image.shape[0] == 1 else "RGB"
        buf = io.BytesIO()
        Image.fromarray(image[0] if mode == "L" else image.transpose(1, 2, 0), mode).save(buf, "JPEG", quality=int(c))
        decoded = np.asarray(Image.open(buf).convert(mode), dtype=np.float64) / 255
        out[i] = decoded[None] if mode == "L" else decoded.transpose(2, 0, 1)
    return out


def _gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Each channel blurred by a Gaussian of ``sigma`` pixels (edges reflected, 4 sigma wide)."""
    return ndimage.gaussian_filter(x, (0, 0, sigma, sigma), mode="nearest")


def _glass_blur(x: np.ndarray, c: tuple, rng: np.random.Generator) -> np.ndarray:
    """Blurred, quantized to 8 bits, each pixel swapped with a neighbour up to ``c[1]`` away (``c[2]``
    passes over the image, bottom-right to top-left, as the original), blurred again."""
    sigma, delta, passes = c
    x = np.floor(_gaussian_blur(x, sigma) * 255) / 255  # the original's np.uint8(... * 255)
    n, _, h, w = x.shape
    batch = np.arange(n)
    for _ in range(passes):
        for i in range(h - delta, delta, -1):
            for j in range(w - delta, delta, -1):
                dy, dx = rng.integers(-delta, delta, size=(2, n))  # per image, as the original's randint
                here, there = x[batch, :, i, j].copy(), x[batch, :, i + dy, j + dx].copy()
                x[batch, :, i, j], x[batch, :, i + dy, j + dx] = there, here
    return _gaussian_blur(x, sigma)


def _motion_kernel(radius: float, sigma: float, angle: float) -> list[tuple[int, int, float]]:
    """ImageMagick's motion blur: ``2 ceil(radius) + 1`` taps along ``angle`` (degrees) from the pixel, one
    side only, weighted by a Gaussian of ``sigma`` in the tap index, as ``(dy, dx, weight)``."""
    taps = np.arange(2 * int(np.ceil(radius)) + 1)
    weights = np.exp(-taps**2 / (2 * sigma**2))
    weights /= weights.sum()
    theta = np.deg2rad(angle)
    return [(int(np.ceil(i * np.sin(theta) - 0.5)), int(np.ceil(i * np.cos(theta) - 0.5)), float(wt))
            for i, wt in zip(taps, weights)]


def _motion(image: np.ndarray, kernel: list[tuple[int, int, float]]) -> np.ndarray:
    """``image`` (C, H, W) blurred by ``kernel`` (:func:`_motion_kernel`), edges extended."""
    h, w = image.shape[-2:]
    rows, cols = np.arange(h), np.arange(w)
    out = np.zeros_like(image)
    for dy, dx, weight in kernel:
        out += weight * image[:, np.clip(rows + dy, 0, h - 1)][:, :, np.clip(cols + dx, 0, w - 1)]
    return out


def _motion_blur(x: np.ndarray, c: tuple, rng: np.random.Generator) -> np.ndarray:
    angles = rng.uniform(-45, 45, size=len(x))
    return np.stack([_motion(image, _motion_kernel(*c, angle)) for image, angle in zip(x, angles)])


def _snow(x: np.ndarray, c: tuple, rng: np.random.Generator) -> np.ndarray:
    """Flakes (a zoomed Gaussian layer above a threshold, motion-blurred at -135..-45 degrees, added twice,
    the second turned by 180 degrees) over the image brightened towards 1.5 x its grey + 0.5."""
    loc, scale, zoom, threshold, radius, sigma, keep = c
    n, channels, h, w = x.shape
    out = np.empty_like(x)
    for k in range(n):
        layer = _clipped_zoom(rng.normal(loc, scale, size=(1, 1, h, w)), zoom)[0]
        layer[layer < threshold] = 0
        layer = np.floor(np.clip(layer, 0, 1) * 255) / 255  # the original's 8-bit grey image
        layer = _motion(layer, _motion_kernel(radius, sigma, rng.uniform(-135, -45)))
        grey = (np.tensordot([0.299, 0.587, 0.114], x[k], axes=1)[None] if channels == 3 else x[k])
        image = keep * x[k] + (1 - keep) * np.maximum(x[k], grey * 1.5 + 0.5)
        out[k] = image + layer + np.rot90(layer, 2, axes=(1, 2))
    return out


def _affine(points: np.ndarray, moved: np.ndarray) -> np.ndarray:
    """The 2 x 3 affine map taking three ``points`` to ``moved`` (each (3, 2))."""
    return np.linalg.solve(np.c_[points, np.ones(3)], moved).T


def _elastic_transform(x: np.ndarray, c: tuple, rng: np.random.Generator) -> np.ndarray:
    """A random affine (three points moved by up to ``c[2]`` of the side), then a smooth random displacement
    field (uniform noise blurred by ``c[1]``, scaled by ``c[0]``, of the side), bilinear with reflected
    edges."""
    n, channels, h, w = x.shape
    side = min(h, w)
    alpha, sigma, shift = (v * side for v in c)
    centre, square = np.array([h // 2, w // 2], dtype=np.float64), side // 3
    points = np.array([centre + square, [centre[0] + square, centre[1] - square], centre - square])
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.empty_like(x)
    for k in range(n):
        forward = _affine(points, points + rng.uniform(-shift, shift, size=(3, 2)))  # (row, col) coordinates
        back = np.linalg.inv(np.r_[forward, [[0, 0, 1]]])[:2]  # each output pixel reads from back @ (r, c, 1)
        src_r = back[0, 0] * rows + back[0, 1] * cols + back[0, 2]
        src_c = back[1, 0] * rows + back[1, 1] * cols + back[1, 2]
        warped = np.stack([ndimage.map_coordinates(ch, [src_r, src_c], order=1, mode="mirror") for ch in x[k]])
        field = [ndimage.gaussian_filter(rng.uniform(-1, 1, size=(h, w)), sigma, mode="reflect", truncate=3) * alpha
                 for _ in range(2)]
        out[k] = np.stack([ndimage.map_coordinates(ch, [rows + field[1], cols + field[0]], order=1, mode="reflect")
                           for ch in warped])
    return out


_FROST: list[np.ndarray] = []  # the five shrunk photographs, (H, W, 3) uint8, read once


def _frost_photos() -> list[np.ndarray]:
    if not _FROST:
        with resources.files("robquant.data").joinpath("frost.npz").open("rb") as file:
            with np.load(file, allow_pickle=False) as photos:
                _FROST.extend(photos[f"frost{i}"] for i in range(1, 6))
    return _FROST


def _frost(x: np.ndarray, c: tuple, rng: np.random.Generator) -> np.ndarray:
    """``c[0]`` x the image + ``c[1]`` x a random crop of a random one of the five frost photographs."""
    n, channels, h, w = x.shape
    out = np.empty_like(x)
    for k in range(n):
        photo = _frost_photos()[rng.integers(5)]
        grow = max(h + 1 - photo.shape[0], 0), max(w + 1 - photo.shape[1], 0)
        if any(grow):  # images larger than the photograph see it mirrored
            photo = np.pad(photo, ((0, grow[0]), (0, grow[1]), (0, 0)), mode="symmetric")
        top, left = rng.integers(0, photo.shape[0] - h), rng.integers(0, photo.shape[1] - w)
        crop = photo[top:top + h, left:left + w].transpose(2, 0, 1) / 255
        if channels != 3:
            crop = np.tensordot([0.299, 0.587, 0.114], crop, axes=1)[None]
        out[k] = c[0] * x[k] + c[1] * crop
    return out


CORRUPTIONS: dict[str, Callable[[np.ndarray, object, np.random.Generator], np.ndarray]] = {
    "gaussian_noise": _gaussian_noise, "shot_noise": _shot_noise, "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur, "zoom_blur": _zoom_blur, "fog": _fog, "brightness": _brightness,
    "contrast": _contrast, "pixelate": _pixelate, "jpeg_compression": _jpeg,
    # after the first ten, so that their seeds (drawn from a corruption's place here) stay what they were
    "glass_blur": _glass_blur, "motion_blur": _motion_blur, "snow": _snow, "elastic_transform": _elastic_transform,
    "frost": _frost,
}


def corrupt(images: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """``images`` ((N, C, H, W) uint8) with corruption ``name`` at ``severity`` (0: unchanged; 1-5: the
    CIFAR-10-C constants), seeded by ``seed``, as uint8 (rounded, clipped to 0..255).

    Raises:
        ConfigError: an unknown corruption or a severity outside 0..5 (naming what is allowed).
    """
    if name not in CORRUPTIONS:
        raise ConfigError(f"corruption {name!r} is not known; known: {', '.join(CORRUPTIONS)}")
    if severity not in (0, *SEVERITIES):
        raise ConfigError(f"corruption severity must be 0..5, got {severity!r}")
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ConfigError(f"corruptions take (N, C, H, W) uint8 images, got {images.shape} {images.dtype}")
    if severity == 0:
        return images.copy()
    x = images.astype(np.float64) / 255
    rng = np.random.default_rng([seed, list(CORRUPTIONS).index(name), severity])
    out = CORRUPTIONS[name](x, CONSTANTS[name][severity - 1], rng)
    return np.clip(np.round(np.clip(out, 0, 1) * 255), 0, 255).astype(np.uint8)


_CACHE: dict[tuple[str, str, int, int], np.ndarray] = {}  # corrupted sets of this process, by data, name, ...
_CACHE_SIZE = 64


def corrupted(dataset: Any, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """:func:`corrupt` of ``dataset``'s images, kept in this process for the next model evaluated on the same
    examples (the last 64 sets)."""
    key = (dataset.sha256, name, severity, seed)
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = corrupt(dataset.images.cpu().numpy(), name, severity, seed)
    return _CACHE[key]


__all__ = ["CONSTANTS", "CORRUPTIONS", "SEVERITIES", "corrupt", "corrupted"]
