"""Natural corruptions (robquant.data.corruptions): shape and range kept, severity 0 is the identity,
distance from the clean image rises with severity, seeded draws repeat, bad names and severities refused."""

import numpy as np
import pytest

from robquant.data.corruptions import CORRUPTIONS, corrupt
from robquant.errors import ConfigError


@pytest.fixture(scope="module")
def images():
    """Smooth colour images with texture (32x32, 3 channels), uint8."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:32, 0:32] / 31
    base = np.stack([xx, yy, (xx + yy) / 2])[None] * 0.6 + 0.2
    x = base + 0.15 * np.sin(rng.uniform(2, 9, size=(8, 3, 1, 1)) * xx * 6) * np.cos(yy * 5)
    return np.clip(np.round(x * 255), 0, 255).astype(np.uint8)


# The published constants of these three do not order the pixel distance from the clean image: glass blur's
# severity 4 blurs less than 3 with two shuffling passes; elastic's severity 1 is a pure affine of up to
# 2.6 pixels, 5 an affine of up to 1 pixel and a local field of about half a pixel; frost's 4 and 5 add
# about as much frost as 3 and darken the image more (on 200 CIFAR-10 test images, mean distance by
# severity: glass 16.3, 16.2, 14.7, 21.1, 19.1; elastic 21.7, 20.2, 18.2, 16.4, 13.5; frost 31.7, 46.3,
# 51.9, 46.5, 45.7)
UNORDERED = {"glass_blur", "elastic_transform", "frost"}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_a_corruption_keeps_shape_and_range_and_severity_orders_the_distance(images, name):
    assert np.array_equal(corrupt(images, name, 0), images)
    distances = []
    for severity in range(1, 6):
        out = corrupt(images, name, severity, seed=1)
        assert out.shape == images.shape and out.dtype == np.uint8
        distances.append(float(np.abs(out.astype(float) - images).mean()))
        assert np.array_equal(out, corrupt(images, name, severity, seed=1))  # seeded
    assert min(distances) > 0
    if name in UNORDERED:
        return
    assert distances[-1] > distances[0]
    assert all(b >= a - 0.5 for a, b in zip(distances, distances[1:])), distances  # non-decreasing (1/2 level)


def test_motion_blur_draws_a_point_into_a_one_sided_line_of_its_radius():
    from robquant.data.corruptions import _motion, _motion_kernel

    point = np.zeros((1, 33, 33))
    point[0, 16, 16] = 1.0
    for angle in (0.0, 30.0, -45.0):
        kernel = _motion_kernel(6, 2, angle)
        out = _motion(point, kernel)
        assert len(kernel) == 13 and out.sum() == pytest.approx(1.0)  # 2 ceil(radius) + 1 taps, mass kept
        lit = np.argwhere(out[0] > 0)
        # each output pixel reads the taps ahead of it along the angle: the point spreads behind, one side only
        dy, dx = lit[:, 0] - 16, lit[:, 1] - 16
        along = -(dx * np.cos(np.deg2rad(angle)) + dy * np.sin(np.deg2rad(angle)))
        assert along.min() >= -0.5 and along.max() <= 12.5 and len(lit) >= 7
        assert out[0, 16, 16] == pytest.approx(max(w for _, _, w in kernel))  # the heaviest tap is the pixel


def test_glass_blur_keeps_the_brightness_and_geometric_corruptions_keep_a_flat_image(images):
    for severity in (1, 5):  # swaps move pixels, blurs average them: the mean is kept (up to the 8-bit floor)
        out = corrupt(images, "glass_blur", severity, seed=2)
        assert abs(out.astype(float).mean() - images.astype(float).mean()) < 1.0
    flat = np.full((4, 3, 32, 32), 97, dtype=np.uint8)
    for name in ("glass_blur", "motion_blur", "elastic_transform", "zoom_blur"):
        for severity in range(1, 6):
            assert np.array_equal(corrupt(flat, name, severity, seed=3), flat), (name, severity)


def test_snow_brightens_more_with_severity(images):
    means = [corrupt(images, "snow", severity, seed=4).astype(float).mean() for severity in range(0, 6)]
    assert all(b > a for a, b in zip(means, means[1:])), means


def test_grey_images_and_bad_input(images):
    grey = images[:, :1]
    for name in CORRUPTIONS:
        assert corrupt(grey, name, 3).shape == grey.shape
    with pytest.raises(ConfigError, match="corruption 'spatter' is not known"):
        corrupt(images, "spatter", 1)
    with pytest.raises(ConfigError, match="severity must be 0..5"):
        corrupt(images, "fog", 6)


def test_frost_adds_a_crop_of_one_of_the_five_photographs():
    from numpy.lib.stride_tricks import sliding_window_view

    from robquant.data.corruptions import _frost_photos

    black = np.zeros((6, 3, 32, 32), dtype=np.uint8)
    out = corrupt(black, "frost", 5, seed=5)  # 0.75 x 0 + 0.45 x the crop
    photos = _frost_photos()
    assert len(photos) == 5 and all(p.dtype == np.uint8 and p.shape[0] >= 63 for p in photos)
    used = set()
    for image in out.transpose(0, 2, 3, 1):
        found = [i for i, photo in enumerate(photos)
                 if (np.abs(sliding_window_view(photo * 0.45, (32, 32, 3)) - image) <= 0.5 + 1e-9)
                 .all(axis=(-3, -2, -1)).any()]  # rounded to whole levels
        assert found, "the frost layer is no crop of a photograph"
        used.add(found[0])
    assert len(used) > 1  # the photograph is drawn per image
    big = corrupt(np.full((2, 1, 150, 200), 128, dtype=np.uint8), "frost", 3)  # larger than every photograph
    assert big.shape == (2, 1, 150, 200) and big.min() >= 115  # 0.9 x 128 + 0.4 x frost
