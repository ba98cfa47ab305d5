"""Simulated examples: shapes, value ranges, determinism, noise statistics and physics.

Each test checks one property a denoising benchmark relies on; the EDS and movie examples
are built once per module (the first EDS call imports exspy, which takes a few seconds).
"""

import time
import warnings

import numpy as np
import pytest
from scipy.spatial import cKDTree
from skimage.feature import peak_local_max
from skimage.filters import window
from skimage.registration import phase_cross_correlation

from emcore import EmcoreError, sim
from emcore.noise.models import Gaussian, Poisson


@pytest.fixture(scope="module")
def eds():
    return sim.eds_example(seed=1)


@pytest.fixture(scope="module")
def movie():
    return sim.movie_example(seed=2)


def _xray_energy(element: str, line: str) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from exspy.material import elements
    return float(elements[element].Atomic_properties.Xray_lines[line]["energy (keV)"])


def _column_peaks(image, vacuum):
    """Bright local maxima clearly above vacuum: the atomic columns of a bright-contrast image."""
    return peak_local_max(image, min_distance=15, threshold_abs=vacuum + 0.07)


# -- HRTEM phantom ----------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(512, 512), (200, 320)])
def test_hrem_phantom_shape_dtype_and_range(shape):
    img = sim.hrem_phantom(shape, rng=np.random.default_rng(0), vacuum=0.45)
    assert img.shape == shape and img.dtype == np.float32
    assert 0.2 < img.min() and img.max() < 0.8
    assert img.std() > 0.02  # a lattice, not a flat field
    # Vacuum is present: a good part of the field sits at the vacuum level.
    assert np.mean(np.abs(img - 0.45) < 1e-3) > 0.05


def test_hrem_phantom_values_on_the_reference_scale():
    # The reference multislice images (Mohan et al. 2022) span 0.34–0.63 with vacuum 0.45.
    for seed in range(5):
        img = sim.hrem_phantom((256, 256), rng=seed)
        assert 0.2 < np.percentile(img, 1) and np.percentile(img, 99) < 0.7
        assert 0.4 < np.median(img) < 0.5


def test_hrem_phantom_is_deterministic_by_seed():
    a = sim.hrem_phantom((128, 128), rng=np.random.default_rng(5))
    b = sim.hrem_phantom((128, 128), rng=np.random.default_rng(5))
    c = sim.hrem_phantom((128, 128), rng=np.random.default_rng(6))
    d = sim.hrem_phantom((128, 128), rng=5)  # an int seed is the same Generator
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, d)
    assert not np.array_equal(a, c)


def test_hrem_lattice_period_matches_reference_scale():
    # Pt [110] columns are a*sqrt(3/8) = 0.240 nm apart: ~49 px at 0.0049 nm/px, the spacing
    # measured in the reference images (50 px).
    img = sim.hrem_phantom((512, 512), rng=3, contrast="bright", vacuum=0.45, pixel_size_nm=0.0049)
    peaks = _column_peaks(img, 0.45)
    nn, _ = cKDTree(peaks).query(peaks, k=2)
    assert len(peaks) > 10
    assert 45 < np.percentile(nn[:, 1], 10) < 53
    # Halving the pixel size doubles the period in pixels.
    fine = sim.hrem_phantom((512, 512), rng=3, contrast="bright", vacuum=0.45, pixel_size_nm=0.0098)
    peaks = _column_peaks(fine, 0.45)
    nn, _ = cKDTree(peaks).query(peaks, k=2)
    assert 22 < np.percentile(nn[:, 1], 10) < 27


def test_contrast_mode_flips_column_contrast():
    # All random draws are made whatever the options, so the same seed gives the same
    # columns; only the defocus (and with it the contrast) changes.
    kw = dict(rng=11, vacuum=0.45, defocus_variation_nm=0.0)
    bright = sim.hrem_phantom((256, 256), contrast="bright", **kw)
    dark = sim.hrem_phantom((256, 256), contrast="dark", **kw)
    ring = sim.hrem_phantom((256, 256), contrast="ring", **kw)
    cols = _column_peaks(bright, 0.45)
    assert len(cols) >= 5
    at_bright = bright[cols[:, 0], cols[:, 1]] - 0.45
    at_dark = dark[cols[:, 0], cols[:, 1]] - 0.45
    assert np.all(at_bright > 0.05)
    assert np.median(at_dark) < -0.03
    assert not np.allclose(ring, bright, atol=0.02) and not np.allclose(ring, dark, atol=0.02)
    # Defocus itself sets the sign: positive bright, negative dark.
    plus = sim.hrem_phantom((256, 256), defocus_nm=12.0, **kw)
    minus = sim.hrem_phantom((256, 256), defocus_nm=-12.0, **kw)
    assert np.median(plus[cols[:, 0], cols[:, 1]]) > 0.5 > 0.45 > np.median(minus[cols[:, 0], cols[:, 1]])


def test_surface_defects_change_only_the_particle_surface():
    kw = dict(rng=4, contrast="bright", vacuum=0.45)
    clean = sim.hrem_phantom((512, 512), defect_rate=0.0, **kw)
    defective = sim.hrem_phantom((512, 512), defect_rate=0.5, **kw)
    changed = np.abs(defective - clean) > 0.01
    assert changed.mean() > 0.005  # several columns missing or added (~600 px each)
    assert changed.mean() < 0.2  # the particle interior and the support stay as they were


def test_hrem_phantom_rejects_bad_options():
    with pytest.raises(EmcoreError, match="contrast"):
        sim.hrem_phantom((64, 64), rng=0, contrast="grey")
    with pytest.raises(EmcoreError):
        sim.hrem_phantom((4, 4), rng=0)
    with pytest.raises(EmcoreError):
        sim.hrem_phantom((64, 64), rng=0, defect_rate=2.0)
    with pytest.raises(EmcoreError):
        sim.hrem_phantom((64, 64), rng="seven")
    with pytest.raises(EmcoreError, match="defect_rate"):  # lists the valid options
        sim.hrem_phantom((64, 64), rng=0, defects=0.1)


def test_hrem_phantom_is_fast():
    sim.hrem_phantom((512, 512), rng=0)  # warm-up (FFT plans, imports)
    t0 = time.perf_counter()
    sim.hrem_phantom((512, 512), rng=1)
    assert time.perf_counter() - t0 < 1.0


# -- HRTEM example --------------------------------------------------------------------


def test_hrem_example_dataset():
    ds = sim.hrem_example(seed=3, dose=2.0, size=128)
    assert ds.kind == "image" and ds.data.shape == (128, 128) and ds.data.dtype == np.float32
    assert ds.ground_truth.shape == (128, 128) and ds.ground_truth.dtype == np.float32
    assert ds.noise == Poisson(2.0) and not ds.is_counts
    # Poisson(dose) scaled back by the dose: data * dose are whole electron counts.
    counts = ds.data * 2.0
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-4)
    assert abs(ds.data.mean() - ds.ground_truth.mean()) < 0.02
    assert ds.calibration.pixel_unit == "nm" and 0.004 < ds.calibration.pixel_size < 0.006
    assert "e⁻/px" in ds.name and "Pt" in ds.name
    meta = ds.metadata
    assert meta["source"] == "emcore.sim.hrem" and meta["seed"] == 3 and meta["dose"] == 2.0
    assert meta["voltage_kv"] == 300


def test_hrem_example_seed_and_generator_agree_and_dose_keeps_phantom():
    a = sim.hrem_example(seed=7, size=64)
    b = sim.hrem_example(rng=np.random.default_rng(7), size=64)
    c = sim.hrem_example(seed=7, size=64, dose=10.0)
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.ground_truth, c.ground_truth)
    assert not np.array_equal(a.data, c.data)


def test_hrem_example_takes_any_noise_model():
    ds = sim.hrem_example(seed=0, size=128, noise=Gaussian(0.05))
    assert ds.noise == Gaussian(0.05)
    resid = ds.data - ds.ground_truth
    assert 0.045 < resid.std() < 0.055
    assert "Gaussian" in ds.name


def test_poisson_mean_equals_variance_on_flat_input():
    # The noise model the examples use: at dose d, counts = data*d have mean = variance.
    clean = np.full((256, 256), 0.45, np.float32)
    counts = Poisson(4.0).sample(clean, np.random.default_rng(0)) * 4.0
    assert abs(counts.mean() - 1.8) < 0.02 and abs(counts.var() - 1.8) < 0.05


# -- EDS example ----------------------------------------------------------------------


def test_eds_shapes_counts_and_calibration(eds):
    assert eds.kind == "cube" and eds.data.shape == (128, 128, 1024) and eds.data.dtype == np.float32
    assert eds.ground_truth.shape == eds.data.shape and eds.ground_truth.dtype == np.float32
    assert eds.is_counts and eds.noise == Poisson(1.0)
    assert eds.data.min() >= 0 and np.array_equal(eds.data, np.round(eds.data))
    cal = eds.calibration
    assert cal.pixel_unit == "nm" and cal.energy_unit == "keV"
    assert cal.energy_scale == pytest.approx(0.02) and cal.energy_offset == 0.0
    meta = eds.metadata
    assert meta["source"] == "emcore.sim.eds" and meta["voltage_kv"] == 200
    assert meta["detector"] == "simulated SDD" and meta["counts_per_pixel"] == 50.0
    assert {"Fe", "Pt", "Si", "O", "C", "Cu"} <= set(meta["elements"])
    assert {"Fe_Ka", "Pt_La", "Pt_Ma", "Si_Ka", "O_Ka"} <= set(meta["xray_lines"])


def test_eds_mean_counts_match_dose(eds):
    assert eds.ground_truth.sum(axis=2).mean() == pytest.approx(50.0, rel=1e-3)
    assert eds.counts_per_pixel == pytest.approx(50.0, rel=0.02)
    low = sim.eds_example(seed=1, counts_per_pixel=5.0, size=32, channels=256, energy_scale=0.08)
    assert low.counts_per_pixel == pytest.approx(5.0, rel=0.06)


def test_eds_counts_are_poisson(eds):
    # Poisson: the variance of the counts about their expectation equals the expectation.
    resid = eds.data.astype(np.float64) - eds.ground_truth
    assert abs(resid.mean()) < 0.01 * eds.ground_truth.mean() + 1e-3
    assert (resid**2).sum() / eds.ground_truth.sum(dtype=np.float64) == pytest.approx(1.0, abs=0.02)


def test_eds_peaks_at_xray_line_energies(eds):
    spectrum = eds.ground_truth.sum(axis=(0, 1), dtype=np.float64)
    for element, line in [("Fe", "Ka"), ("Pt", "La"), ("Si", "Ka"), ("O", "Ka"), ("Pt", "Ma")]:
        k = eds.calibration.channel_of(_xray_energy(element, line), spectrum.size)
        window_ = spectrum[k - 2 : k + 3]
        top = k - 2 + int(np.argmax(window_))
        assert spectrum[top] > spectrum[top - 1] and spectrum[top] > spectrum[top + 1], (element, line)
        assert spectrum[top] > 1.3 * spectrum[k - 12 : k + 13].min(), (element, line)  # a peak, not the background


def test_eds_element_maps_and_haadf(eds):
    maps = eds.metadata["element_maps_truth"]
    assert set(maps) == set(eds.metadata["elements"])
    assert all(m.shape == (128, 128) and m.dtype == np.float32 for m in maps.values())
    # Characteristic counts are part of the total expected counts.
    assert sum(m.sum() for m in maps.values()) < eds.ground_truth.sum()
    assert eds.haadf.shape == (128, 128) and eds.haadf.dtype == np.float32
    particles = (maps["Pt"] + maps["Fe"] + maps["Ni"]) > 0.2 * (maps["Pt"] + maps["Fe"] + maps["Ni"]).max()
    assert 0.02 < particles.mean() < 0.6
    assert eds.haadf[particles].mean() > eds.haadf[~particles].mean() + 0.1  # Z-contrast
    noise = eds.haadf - eds.metadata["haadf_truth"]
    assert 0.005 < noise.std() < 0.05  # its own, weaker noise


def test_eds_is_deterministic_and_dose_scales_the_same_phantom():
    kw = dict(size=32, channels=256, energy_scale=0.08)
    a = sim.eds_example(seed=4, **kw)
    b = sim.eds_example(seed=4, **kw)
    c = sim.eds_example(seed=5, **kw)
    d = sim.eds_example(seed=4, counts_per_pixel=100.0, **kw)
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.haadf, b.haadf)
    assert not np.array_equal(a.data, c.data)
    np.testing.assert_allclose(d.ground_truth, 2 * a.ground_truth, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(a.haadf, d.haadf)


@pytest.mark.parametrize("dose", [0.5, 0.0, -5.0, 1000.5, float("nan")])
def test_eds_dose_out_of_range_is_refused(dose):
    with pytest.raises(EmcoreError, match="counts per pixel"):
        sim.eds_example(seed=0, counts_per_pixel=dose, size=16, channels=64)


# -- movie ----------------------------------------------------------------------------


def test_movie_shapes_and_noise(movie):
    assert movie.kind == "stack" and movie.data.shape == (10, 256, 256) and movie.data.dtype == np.float32
    assert movie.ground_truth.shape == movie.data.shape and movie.noise == Poisson(1.0)
    drift = movie.metadata["drift_px"]
    assert drift.shape == (10, 2) and np.all(drift[0] == 0)
    assert np.hypot(*drift.T).max() <= 3.0 + 1e-9 and np.hypot(*drift.T).max() > 0.5
    # Independent noise per frame.
    r0 = (movie.data[0] - movie.ground_truth[0]).ravel()
    r1 = (movie.data[1] - movie.ground_truth[1]).ravel()
    assert abs(np.corrcoef(r0, r1)[0, 1]) < 0.02


def test_movie_drift_metadata_matches_frames(movie):
    clean = movie.ground_truth.astype(np.float64)
    drift = movie.metadata["drift_px"]
    # A window keeps the field edges (where content enters and leaves) out of the estimate.
    win = window("hann", clean.shape[1:])
    ref = (clean[0] - clean[0].mean()) * win
    for t in range(1, clean.shape[0]):
        moving = (clean[t] - clean[t].mean()) * win
        shift, _, _ = phase_cross_correlation(ref, moving, upsample_factor=20, normalization=None)
        # The shift that registers frame t onto frame 0 undoes its drift.
        np.testing.assert_allclose(-shift, drift[t], atol=0.25)


def test_movie_is_deterministic():
    a = sim.movie_example(seed=9, frames=3, size=64)
    b = sim.movie_example(seed=9, frames=3, size=64)
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(a.metadata["drift_px"], b.metadata["drift_px"])


# -- registry -------------------------------------------------------------------------


def test_examples_registry_and_dispatch():
    assert list(sim.EXAMPLES) == ["hrem", "eds", "movie"]
    for name, info in sim.EXAMPLES.items():
        assert info.name == name and info.label and info.description and info.dose_label
        assert info.dose_min <= info.dose_default <= info.dose_max
    assert sim.EXAMPLES["eds"].dose_min == 1 and sim.EXAMPLES["eds"].dose_max == 1000
    ds = sim.example("hrem", seed=1, size=64)
    assert ds.kind == "image" and ds.metadata["dose"] == sim.EXAMPLES["hrem"].dose_default
    ds = sim.example("movie", seed=1, dose=5.0, size=64)
    assert ds.kind == "stack" and ds.metadata["dose"] == 5.0
    ds = sim.example("eds", seed=1, dose=20.0, size=16)
    assert ds.kind == "cube" and ds.data.shape[:2] == (16, 16) and ds.metadata["counts_per_pixel"] == 20.0


def test_unknown_example_and_bad_dose_raise_emcore_error():
    with pytest.raises(EmcoreError, match="hrem, eds, movie"):
        sim.example("stem")
    with pytest.raises(EmcoreError):
        sim.example("eds", dose=-5)
    with pytest.raises(EmcoreError):
        sim.example("hrem", dose=0.0, size=64)
    with pytest.raises(EmcoreError):
        sim.hrem_example(seed=-1, size=64)
