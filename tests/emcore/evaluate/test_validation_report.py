"""Spectral helpers (lines from exspy, windows, element maps), scoring helpers and the HTML report."""

from __future__ import annotations

import re

import numpy as np
import pytest

from emcore import Dataset, EmcoreError, sim, spectral
from emcore.data.display import summed_spectrum
from emcore.evaluate import validation
from emcore.evaluate.report import build_report
from emcore.methods.registry import denoise
from emcore.noise.models import Gaussian


@pytest.fixture(scope="module")
def eds():
    return sim.eds_example(seed=1, counts_per_pixel=30.0, size=48, channels=512)


def test_lines_come_from_exspy_with_right_energies():
    fe = spectral.get_line("Fe_Ka")
    assert fe.energy_kev == pytest.approx(6.4039, abs=2e-3)
    names = [x.name for x in spectral.xray_lines(6.3, 6.5)]
    assert "Fe_Ka" in names and all(x.line in ("Ka", "La", "Ma") for x in spectral.xray_lines(6.3, 6.5))
    with pytest.raises(EmcoreError, match="Unknown X-ray line"):
        spectral.get_line("Xx_Ka")


def test_window_is_two_fwhm_and_map_sums_it(eds):
    cal = eds.calibration
    lo, hi = spectral.line_channels("Fe_Ka", cal, eds.data.shape[2])
    width_kev = (hi - lo) * cal.energy_scale
    assert width_kev == pytest.approx(2 * float(spectral.fwhm_kev(6.404)), abs=2 * cal.energy_scale)
    assert lo * cal.energy_scale < 6.404 < hi * cal.energy_scale
    m = spectral.element_map(eds.data, "Fe_Ka", cal)
    np.testing.assert_allclose(m, eds.data[:, :, lo:hi].sum(axis=2), rtol=1e-6)
    with pytest.raises(EmcoreError, match="outside this spectrum image's energy range"):
        spectral.line_channels("U_Ka", cal, eds.data.shape[2])  # ~98 keV


def test_suggested_lines_find_the_phantom_elements(eds):
    picked = spectral.suggest_lines(summed_spectrum(eds.ground_truth), eds.calibration)
    assert {"Fe_Ka", "Si_Ka", "Pt_La"} <= set(picked)


def test_region_spectrum_and_bounds(eds):
    s = spectral.region_spectrum(eds.data, 10, 12, half=1)
    np.testing.assert_allclose(s, eds.data[9:12, 11:14].sum(axis=(0, 1)))
    with pytest.raises(EmcoreError, match="outside"):
        spectral.region_spectrum(eds.data, 99, 0)


def test_reference_metrics_include_element_maps(eds):
    res = denoise(eds, "pca").data
    m = validation.reference_metrics(eds, res, ["Fe_Ka", "Si_Ka"])
    assert {"psnr", "ssim", "psnr_Fe_Ka", "psnr_Si_Ka"} <= set(m)
    raw = validation.reference_metrics(eds, eds.data, ["Fe_Ka"])
    assert m["psnr_Fe_Ka"] > raw["psnr_Fe_Ka"]
    with pytest.raises(EmcoreError, match="belongs to another dataset"):
        validation.reference_metrics(eds, res[:10], [])


def test_counts_of_recovers_integer_counts():
    ds = sim.hrem_example(seed=0, dose=5.0, size=64)
    counts = validation.counts_of(ds)
    np.testing.assert_allclose(counts / 5.0, ds.data, atol=1e-5)
    gauss = Dataset(np.random.default_rng(0).random((32, 32)), "image", noise=Gaussian(0.1))
    assert validation.counts_of(gauss) is None
    with pytest.raises(EmcoreError, match="does not hold raw counts"):
        validation.count_split_validation(gauss, {})


def test_count_split_validation_ranks_denoiser_above_raw():
    ds = sim.hrem_example(seed=3, dose=20.0, size=128)
    out = validation.count_split_validation(ds, {"wiener": ("wiener", {})})
    assert out["ranking"] == ["wiener", "no denoising (raw half)"]


def test_frame_pair_validation_on_movie():
    ds = sim.movie_example(seed=1, frames=6, size=96, dose=20.0)
    out = validation.frame_pair_validation(ds, {"wiener": ("wiener", {})})
    assert out["ranking"][0] == "wiener"


def test_report_is_self_contained_html(eds):
    res = denoise(eds, "pca")
    runs = [{"label": "pca #1", "method": "pca", "params": res.params, "seconds": res.seconds, "device": "cpu",
             "data": res.data, "metrics": {"psnr": 30.0}}]
    from emcore.evaluate.profiles import line_profile

    prof = {"Input": line_profile(eds.data.sum(axis=2), (5, 5), (40, 40), 3)}
    html = build_report(eds, runs, channel=320, window=9, profiles=prof)
    assert html.startswith("<!doctype html>") and "pca #1" in html and "30" in html
    assert "<script" not in html
    assert not re.search(r"(src|href)=['\"]https?://", html)  # opens offline: nothing fetched
    assert html.count("data:image/png;base64,") >= 3  # panels, profile, spectra


def test_suggested_lines_come_from_the_peaks_present():
    """The Fe/Pt example lists Ni among its elements, but its spectrum shows Pt: the suggestion
    ranks the listed lines by their peaks (Pt Lα in, one line per element)."""
    from emcore import sim
    from emcore.data.display import summed_spectrum

    ds = sim.example("eds", seed=0, size=64)
    lines = spectral.suggest_lines(summed_spectrum(ds.data), ds.calibration, candidates=ds.metadata["xray_lines"])
    assert "Pt_La" in lines and "Fe_Ka" in lines
    assert len({x.split("_")[0] for x in lines}) == len(lines)
    assert set(lines) <= set(ds.metadata["xray_lines"])
