import math

import numpy as np
import pytest

from emcore import EmcoreError
from emcore.evaluate.profiles import (
    Profile,
    line_profile,
    profile_distance,
    profiles_for,
)


def ramp(h=40, w=50):
    r, c = np.mgrid[0:h, 0:w].astype(np.float64)
    return 2.0 * c + 3.0 * r


SEGMENTS = [
    ((5.0, 5.0), (30.0, 40.0)),
    ((20.0, 10.0), (20.0, 35.0)),  # horizontal
    ((5.0, 25.0), (33.0, 25.0)),  # vertical
    ((30.5, 7.25), (10.2, 41.9)),  # sub-pixel end points, going up
]


@pytest.mark.parametrize("start,end", SEGMENTS)
@pytest.mark.parametrize("width", [1, 5])
def test_profile_is_exact_on_a_linear_ramp(start, end, width):
    img = ramp()
    before = img.copy()
    prof = line_profile(img, start, end, width=width)
    np.testing.assert_array_equal(img, before)
    length = math.hypot(end[0] - start[0], end[1] - start[1])
    n = math.ceil(length) + 1
    assert prof.values.shape == prof.distance.shape == (n,)
    assert prof.distance[0] == 0.0 and prof.distance[-1] == pytest.approx(length)
    assert prof.length == pytest.approx(length)
    assert np.all(np.diff(prof.distance) <= 1.0 + 1e-12)
    t = prof.distance / length
    rows = start[0] + t * (end[0] - start[0])
    cols = start[1] + t * (end[1] - start[1])
    np.testing.assert_allclose(prof.values, 2.0 * cols + 3.0 * rows, atol=1e-9)
    assert prof.start == start and prof.end == end and prof.width == width


def test_number_of_samples_and_integer_dtype_image():
    img = ramp().astype(np.uint16)
    prof = line_profile(img, (0, 0), (0, 10))
    assert prof.values.shape == (11,)
    np.testing.assert_allclose(prof.values, 2.0 * np.arange(11))
    prof = line_profile(img, (0, 0), (3, 4))  # length 5
    assert prof.values.shape == (6,)
    prof = line_profile(img, (0, 0), (0, 10.2))  # length 10.2 → ceil + 1 = 12 samples
    assert prof.values.shape == (12,)


def test_width_averages_across_the_line():
    # A horizontal stripe 3 rows wide: width 1 on the centre row sees 1, width 5 sees 3/5.
    img = np.zeros((21, 21))
    img[9:12, :] = 1.0
    np.testing.assert_allclose(line_profile(img, (10, 2), (10, 18), width=1).values, 1.0)
    np.testing.assert_allclose(line_profile(img, (10, 2), (10, 18), width=5).values, 0.6)
    # Even width: offsets ±0.5, ±1.5 → rows 8.5, 9.5, 10.5, 11.5 → (0.5 + 1 + 1 + 0.5) / 4.
    np.testing.assert_allclose(line_profile(img, (10, 2), (10, 18), width=4).values, 0.75)


def test_zero_length_out_of_image_and_bad_width():
    img = ramp()
    with pytest.raises(EmcoreError, match="zero length: pick two different points"):
        line_profile(img, (3, 3), (3, 3))
    with pytest.raises(EmcoreError, match=r"outside the image of 40 × 50 pixels"):
        line_profile(img, (3, 3), (40, 10))
    with pytest.raises(EmcoreError, match=r"start point .*outside"):
        line_profile(img, (-0.5, 3), (10, 10))
    for bad in (0, 0.5, -2):
        with pytest.raises(EmcoreError, match="at least 1 pixel"):
            line_profile(img, (3, 3), (10, 10), width=bad)
    with pytest.raises(EmcoreError, match="whole number"):
        line_profile(img, (3, 3), (10, 10), width=2.5)
    with pytest.raises(EmcoreError, match="2-D image"):
        line_profile(np.zeros((2, 8, 8)), (1, 1), (5, 5))
    # The corners themselves are inside.
    assert line_profile(img, (0, 0), (39, 49)).values[-1] == pytest.approx(2 * 49 + 3 * 39)


def test_profile_distance_calibration():
    prof = line_profile(ramp(), (0, 0), (3, 4))
    np.testing.assert_allclose(profile_distance(prof, 0.5), prof.distance * 0.5)
    # Non-square pixels: rows 2 nm, columns 1 nm → calibrated length √(6² + 4²).
    d = profile_distance(prof, (2.0, 1.0))
    assert d[-1] == pytest.approx(math.hypot(6.0, 4.0))
    with pytest.raises(EmcoreError, match="pixel size"):
        profile_distance(prof, 0.0)


def test_profiles_for_several_results():
    img = ramp()
    out = profiles_for({"noisy": img, "result": img * 2}, (5, 5), (20, 30), width=3)
    assert list(out) == ["noisy", "result"]
    assert all(isinstance(p, Profile) for p in out.values())
    np.testing.assert_allclose(out["result"].values, 2 * out["noisy"].values)
    with pytest.raises(EmcoreError, match="'bm3d'"):
        profiles_for({"noisy": img, "bm3d": img[:-1]}, (5, 5), (20, 30), width=1)
    assert profiles_for({}, (0, 0), (1, 1), 1) == {}
    assert isinstance(out["noisy"].to_dict()["values"], list)
