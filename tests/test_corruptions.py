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


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_a_corruption_keeps_shape_and_range_and_severity_orders_the_distance(images, name):
    assert np.array_equal(corrupt(images, name, 0), images)
    distances = []
    for severity in range(1, 6):
        out = corrupt(images, name, severity, seed=1)
        assert out.shape == images.shape and out.dtype == np.uint8
        distances.append(float(np.abs(out.astype(float) - images).mean()))
        assert np.array_equal(out, corrupt(images, name, severity, seed=1))  # seeded
    assert distances[0] > 0 and distances[-1] > distances[0]
    assert all(b >= a - 0.5 for a, b in zip(distances, distances[1:])), distances  # non-decreasing (1/2 level)


def test_grey_images_and_bad_input(images):
    grey = images[:, :1]
    for name in CORRUPTIONS:
        assert corrupt(grey, name, 3).shape == grey.shape
    with pytest.raises(ConfigError, match="corruption 'frost' is not known"):
        corrupt(images, "frost", 1)
    with pytest.raises(ConfigError, match="severity must be 0..5"):
        corrupt(images, "fog", 6)
