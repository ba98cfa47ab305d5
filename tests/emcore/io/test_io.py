"""Tests for emcore.io: every real sample file, bad input, uploads, memory cap, round trips."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emcore import io
from emcore.data.dataset import Calibration, Dataset
from emcore.errors import EmcoreError, TooLargeError
from emcore.noise.models import Poisson

# ----------------------------------------------------------------------------------------
# every shared sample file
# ----------------------------------------------------------------------------------------
# (relative path, kind, shape, pixel size, pixel unit, energy scale, energy unit, HAADF shape)
SHARED_FILES = [
    ("eds/bruker_test_TEM.bcf", "cube", (64, 64, 2048), 0.771004754, "nm", 0.010001, "keV", (64, 64)),
    ("eds/core_shell.hdf5", "cube", (64, 64, 992), 0.5, "nm", 0.02, "keV", None),
    ("eds/sio2_eds.hspy", "cube", (128, 128, 2048), 8.552446, "nm", 0.01, "keV", None),
    ("eds/sio2_haadf.hspy", "image", (128, 128), 8.552446, "nm", None, None, None),
    ("eds/velox_SI_16x16.emd", "cube", (16, 16, 4096), 3.599249, "nm", 0.01, "keV", (16, 16)),
    ("formats/EELS_SI.dm4", "cube", (2, 2, 2048), 1.992074, "nm", 1.0, "eV", None),
    ("formats/test_STEM_image.dm3", "image", (68, 68), 0.248538, "nm", None, None, None),
    ("formats/multi_signal.dm3", "image", (512, 512), 0.017752, "nm", None, None, None),
    ("formats/HAADFscan.mrc", "image", (16, 16), 5.679131, "nm", None, None, None),
    ("formats/128x128_TEM_acquire-sum1.emi", "image", (128, 128), 21.479318, "nm", None, None, None),
    ("formats/FEI-Helios-Ebeam-16bits.tif", "image", (471, 512), 3372.4, "nm", None, None, None),
    ("hrem/ptceo2_sim_clean_1.tif", "image", (876, 927), 1.0, "px", None, None, None),
    ("hrem/ptceo2_sim_clean_2.tif", "image", (876, 927), 1.0, "px", None, None, None),
    ("hrem/ptceo2_sim_clean_3.tif", "image", (876, 927), 1.0, "px", None, None, None),
    ("hrem/ptceo2_sim_clean_4.tif", "image", (876, 927), 1.0, "px", None, None, None),
    ("hrem/si110_stem.png", "image", (512, 512), 1.0, "px", None, None, None),
    ("hrem/au_grain_boundary_stem.png", "image", (512, 512), 1.0, "px", None, None, None),
    ("hrem/stem_abf_stack.hspy", "stack", (5, 512, 512), 0.0092024, "nm", None, None, None),
]
# Files that are only read together with another one.
COMPANIONS = {"formats/128x128_TEM_acquire-sum1_1.ser"}


def test_table_covers_every_shared_file(shared_data):
    on_disk = {
        str(p.relative_to(shared_data))
        for p in shared_data.rglob("*")
        if p.is_file() and p.name != "MANIFEST.md"
    }
    assert on_disk == {row[0] for row in SHARED_FILES} | COMPANIONS


@pytest.mark.parametrize(
    "rel, kind, shape, pixel, unit, escale, eunit, haadf_shape", SHARED_FILES, ids=[r[0] for r in SHARED_FILES]
)
def test_shared_file_loads(shared_data, rel, kind, shape, pixel, unit, escale, eunit, haadf_shape):
    ds = io.load(shared_data / rel)
    assert ds.kind == kind
    assert ds.data.shape == shape
    assert ds.data.dtype == np.float32
    assert ds.calibration.pixel_unit == unit
    assert ds.calibration.pixel_size == pytest.approx(pixel, rel=1e-4)
    if escale is not None:
        assert ds.calibration.energy_scale == pytest.approx(escale, rel=1e-5)
        assert ds.calibration.energy_unit == eunit
    if haadf_shape is None:
        assert ds.haadf is None
    else:
        assert ds.haadf is not None and ds.haadf.shape == haadf_shape and ds.haadf.dtype == np.float32
    assert ds.name == Path(rel).name
    assert ds.metadata["source"] == Path(rel).name
    assert ds.metadata["signals"] and ds.metadata["signal_index"] is not None


def test_eds_cubes_are_counts_with_calibration_and_metadata(shared_data):
    ds = io.load(shared_data / "eds/core_shell.hdf5")
    assert ds.is_counts
    assert ds.calibration.energy_offset == pytest.approx(0.16)
    assert ds.metadata["voltage_kv"] == 200.0
    assert "Osiris" in ds.metadata["microscope"]
    assert ds.metadata["signal_type"] == "EDS_TEM"
    # ~216 counts per pixel according to the manifest
    assert 150 < ds.counts_per_pixel < 300

    bcf = io.load(shared_data / "eds/bruker_test_TEM.bcf")
    assert bcf.is_counts
    assert bcf.metadata["signal_index"] == 1 and bcf.metadata["haadf_signal_index"] == 0
    assert bcf.metadata["detector"] == "EDS (SuperX)"
    assert [s["kind"] for s in bcf.metadata["signals"]] == ["image", "cube"]


def test_images_are_not_counts_unless_low_dose(shared_data):
    assert not io.load(shared_data / "hrem/si110_stem.png").is_counts  # 8-bit PNG
    assert not io.load(shared_data / "hrem/ptceo2_sim_clean_1.tif").is_counts  # float values
    assert not io.load(shared_data / "hrem/stem_abf_stack.hspy").is_counts  # uint16 ADC units
    # EELS counts are gain-normalised floats, not integers
    assert not io.load(shared_data / "formats/EELS_SI.dm4").is_counts


def test_velox_picks_spectrum_image_and_haadf(shared_data):
    ds = io.load(shared_data / "eds/velox_SI_16x16.emd")
    sigs = ds.metadata["signals"]
    assert len(sigs) == 10
    chosen = sigs[ds.metadata["signal_index"]]
    assert chosen["kind"] == "cube" and chosen["shape"] == (16, 16, 4096)
    assert sigs[ds.metadata["haadf_signal_index"]]["title"] == "HAADF"
    assert sum(s["kind"] is None for s in sigs) == 4  # the per-detector sum spectra
    assert ds.metadata["voltage_kv"] == 300.0


def test_multi_signal_dm3_lists_both_and_rejects_the_plot(shared_data):
    path = shared_data / "formats/multi_signal.dm3"
    ds = io.load(path)
    sigs = ds.metadata["signals"]
    assert len(sigs) == 2
    assert sigs[0]["kind"] == "image" and sigs[0]["title"] == "HAADF"
    assert sigs[1]["kind"] is None and "1-D spectrum" in sigs[1]["reason"]
    assert ds.metadata["signal_index"] == 0
    assert io.list_signals(path) == sigs
    with pytest.raises(EmcoreError, match=r"multi_signal\.dm3.*signal 1.*1-D spectrum"):
        io.load(path, signal=1)
    with pytest.raises(EmcoreError, match="multi_signal.dm3"):
        io.load(path, signal=5)


def test_list_signals_is_cheap_and_complete(shared_data):
    sigs = io.list_signals(shared_data / "eds/bruker_test_TEM.bcf")
    assert [(s["index"], s["title"], s["shape"], s["kind"]) for s in sigs] == [
        (0, "HAADF", (64, 64), "image"),
        (1, "EDX", (64, 64, 2048), "cube"),
    ]
    assert sigs[1]["signal_type"] == "EDS_TEM"
    assert io.list_signals(shared_data / "hrem/si110_stem.png")[0]["kind"] == "image"


def test_signal_choice_loads_the_haadf_image_of_a_bcf(shared_data):
    ds = io.load(shared_data / "eds/bruker_test_TEM.bcf", signal=0)
    assert ds.kind == "image" and ds.data.shape == (64, 64)
    assert ds.haadf is None


def test_separate_haadf_is_attached_and_checked(shared_data):
    eds = shared_data / "eds/sio2_eds.hspy"
    haadf = shared_data / "eds/sio2_haadf.hspy"
    ds = io.load(eds, haadf=haadf)
    assert ds.haadf.shape == (128, 128)
    np.testing.assert_array_equal(ds.haadf, io.load_haadf(haadf))
    # A HAADF on another grid is refused with a sentence naming the HAADF file.
    with pytest.raises(EmcoreError, match=r"sio2_haadf\.hspy.*128×128.*64×64"):
        io.load(shared_data / "eds/core_shell.hdf5", haadf=haadf)
    # Binned data take a binned HAADF (k×k mean keeps its intensity scale).
    binned = io.load(eds, haadf=haadf, bin_spatial=2)
    assert binned.haadf.shape == (64, 64)
    assert binned.haadf.mean() == pytest.approx(ds.haadf.mean(), rel=1e-5)


def test_haadf_may_be_tiny_and_may_come_as_an_upload(shared_data, tmp_path):
    eels = shared_data / "formats/EELS_SI.dm4"
    np.save(tmp_path / "survey.npy", np.arange(4, dtype=np.float32).reshape(2, 2))
    ds = io.load(eels, haadf=tmp_path / "survey.npy")
    np.testing.assert_array_equal(ds.haadf, [[0, 1], [2, 3]])
    haadf = shared_data / "eds/sio2_haadf.hspy"
    up = io.load_bytes(
        [("sio2_eds.hspy", (shared_data / "eds/sio2_eds.hspy").read_bytes())],
        haadf=[(haadf.name, haadf.read_bytes())],
    )
    assert up.haadf.shape == (128, 128)
    with pytest.raises(EmcoreError, match=r"stem_abf_stack\.hspy holds no 2-D image"):
        io.load(eels, haadf=shared_data / "hrem/stem_abf_stack.hspy")
    with pytest.raises(EmcoreError, match=r"sio2_haadf\.hspy.*only be attached to a spectrum image"):
        io.load(shared_data / "hrem/si110_stem.png", haadf=haadf)


def test_load_haadf_takes_the_image_of_a_multi_signal_file(shared_data):
    h = io.load_haadf(shared_data / "eds/bruker_test_TEM.bcf")
    assert h.shape == (64, 64) and h.dtype == np.float32
    with pytest.raises(EmcoreError, match="core_shell.hdf5.*no 2-D image"):
        io.load_haadf(shared_data / "eds/core_shell.hdf5")


def test_emi_needs_its_ser_and_loads_from_uploads(shared_data):
    emi = shared_data / "formats/128x128_TEM_acquire-sum1.emi"
    ser = shared_data / "formats/128x128_TEM_acquire-sum1_1.ser"
    files = [(emi.name, emi.read_bytes()), (ser.name, ser.read_bytes())]
    ds = io.load_bytes(files)
    ref = io.load(emi)
    assert ds.kind == "image" and ds.data.shape == (128, 128)
    np.testing.assert_array_equal(ds.data, ref.data)
    assert ds.calibration == ref.calibration
    assert ds.name == emi.name and ds.metadata["source"] == emi.name
    with pytest.raises(EmcoreError, match=r"128x128_TEM_acquire-sum1\.emi.*\.ser"):
        io.load_bytes(files[:1])
    # the .ser alone is readable too
    assert io.load_bytes(files[1:]).data.shape == (128, 128)


# ----------------------------------------------------------------------------------------
# reductions and the memory cap
# ----------------------------------------------------------------------------------------
def test_too_large_cube_raises_with_a_suggestion_that_fits(shared_data):
    path = shared_data / "eds/core_shell.hdf5"
    cap = 2 * 1024**2  # the cube is 64×64×992×4 B ≈ 15.5 MiB
    with pytest.raises(TooLargeError) as err:
        io.load(path, max_bytes=cap)
    e = err.value
    assert e.shape == (64, 64, 992) and e.max_bytes == cap and e.nbytes == 64 * 64 * 992 * 4
    msg = str(e)
    assert "core_shell.hdf5" in msg and "15.5 MiB" in msg and "2.0 MiB" in msg and "bin" in msg
    sugg = e.suggestion
    ds = io.load(path, max_bytes=cap, **sugg)
    assert ds.data.nbytes <= cap
    assert ds.metadata["reduction"]["bin_spatial"] == sugg["bin_spatial"]


def test_reader_that_reads_whole_files_is_stopped_before_reading(shared_data):
    # The .bcf reader hands over one 8 MiB block (64×64×2048 uint8): binned to 2 MiB float32 it
    # would fit a 3 MiB cap, but reading it needs the whole block at once.
    with pytest.raises(EmcoreError, match=r"bruker_test_TEM\.bcf.*one piece of 8\.0 MiB"):
        io.load(shared_data / "eds/bruker_test_TEM.bcf", max_bytes=3 * 1024**2, bin_spatial=2, bin_energy=4)


def test_env_var_sets_the_cap(shared_data, monkeypatch):
    monkeypatch.setenv("EMCORE_MAX_BYTES", "1M")
    assert io.default_max_bytes() == 1024**2
    with pytest.raises(TooLargeError):
        io.load(shared_data / "eds/core_shell.hdf5")
    monkeypatch.setenv("EMCORE_MAX_BYTES", "lots")
    with pytest.raises(EmcoreError, match="EMCORE_MAX_BYTES"):
        io.default_max_bytes()


def test_binning_sums_counts_and_scales_calibration(shared_data):
    path = shared_data / "eds/core_shell.hdf5"
    full = io.load(path)
    b = io.load(path, bin_spatial=2, bin_energy=4)
    assert b.data.shape == (32, 32, 248)
    assert b.is_counts
    assert b.data.sum(dtype=np.float64) == full.data.sum(dtype=np.float64)
    np.testing.assert_array_equal(b.data[0, 0, 0], full.data[:2, :2, :4].sum())
    assert b.calibration.pixel_size == pytest.approx(1.0)
    assert b.calibration.energy_scale == pytest.approx(0.08)
    assert b.calibration.energy_offset == pytest.approx(0.16 + 0.02 * 1.5)

    # A remainder is cropped: 64 = 3·21 + 1.
    b3 = io.load(path, bin_spatial=3)
    assert b3.data.shape == (21, 21, 992)
    assert b3.data.sum(dtype=np.float64) == full.data[:63, :63].sum(dtype=np.float64)


def test_energy_range_crops_before_binning(shared_data):
    path = shared_data / "eds/core_shell.hdf5"
    full = io.load(path)
    e = full.energy_axis()
    ds = io.load(path, energy_range=(5.0, 10.0), bin_energy=2)
    keep = (e >= 5.0 - 1e-9) & (e <= 10.0 + 1e-9)
    i0 = int(np.argmax(keep))
    n = int(keep.sum()) // 2 * 2
    assert ds.data.shape == (64, 64, n // 2)
    assert ds.data.sum(dtype=np.float64) == full.data[:, :, i0 : i0 + n].sum(dtype=np.float64)
    assert ds.calibration.energy_offset == pytest.approx(e[i0] + 0.01)
    with pytest.raises(EmcoreError, match="core_shell.hdf5.*holds no channel"):
        io.load(path, energy_range=(50.0, 60.0))
    with pytest.raises(EmcoreError, match="no energy axis"):
        io.load(shared_data / "hrem/si110_stem.png", bin_energy=2)


def test_non_count_images_are_averaged_count_images_summed(tmp_path, shared_data):
    img = io.load(shared_data / "hrem/ptceo2_sim_clean_1.tif")
    b = io.load(shared_data / "hrem/ptceo2_sim_clean_1.tif", bin_spatial=2)
    assert b.data.shape == (438, 463)
    assert b.data.mean() == pytest.approx(img.data[:876, :926].mean(), rel=1e-5)
    assert b.metadata["reduction"]["spatial"] == "mean"

    rng = np.random.default_rng(0)
    counts = rng.poisson(2.0, size=(64, 64)).astype(np.uint16)
    np.save(tmp_path / "counts.npy", counts)
    ds = io.load(tmp_path / "counts.npy", bin_spatial=4)
    assert ds.is_counts and ds.data.shape == (16, 16)
    assert ds.data.sum() == counts.sum()


def test_bcf_haadf_is_binned_with_the_cube(shared_data):
    ds = io.load(shared_data / "eds/bruker_test_TEM.bcf", bin_spatial=2, bin_energy=2)
    assert ds.data.shape == (32, 32, 1024) and ds.haadf.shape == (32, 32)


def test_bad_binning_arguments(shared_data):
    path = shared_data / "hrem/si110_stem.png"
    with pytest.raises(EmcoreError, match="bin_spatial"):
        io.load(path, bin_spatial=0)
    with pytest.raises(EmcoreError, match="si110_stem.png.*under the 8×8"):
        io.load(path, bin_spatial=100)


# ----------------------------------------------------------------------------------------
# bad input: every problem is an EmcoreError naming the file
# ----------------------------------------------------------------------------------------
def _random_bytes(n=4096, seed=1):
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_unknown_extension(tmp_path):
    p = tmp_path / "scan.xyz"
    p.write_bytes(b"hello")
    with pytest.raises(EmcoreError, match=r"scan\.xyz.*\.xyz.*Supported formats:.*\.dm3"):
        io.load(p)


def test_empty_and_missing_files(tmp_path):
    p = tmp_path / "empty.dm4"
    p.write_bytes(b"")
    with pytest.raises(EmcoreError, match=r"empty\.dm4 is empty"):
        io.load(p)
    with pytest.raises(EmcoreError, match="nothere.npy: no such file"):
        io.load(tmp_path / "nothere.npy")


def test_truncated_dm3(tmp_path, shared_data):
    p = tmp_path / "cut.dm3"
    p.write_bytes((shared_data / "formats/test_STEM_image.dm3").read_bytes()[:100])
    with pytest.raises(EmcoreError, match=r"cut\.dm3 is truncated: its DigitalMicrograph header says"):
        io.load(p)


@pytest.mark.parametrize("ext", [".hspy", ".tif", ".png", ".bcf", ".dm4", ".emd", ".mrc", ".npz", ".npy"])
def test_random_bytes_are_reported_not_raised_raw(tmp_path, capfd, ext):
    p = tmp_path / f"garbage{ext}"
    p.write_bytes(_random_bytes())
    with pytest.raises(EmcoreError) as err:
        io.load(p)
    assert type(err.value) is EmcoreError
    assert f"garbage{ext}" in str(err.value)
    # The readers' own ERROR log lines are silenced; our sentence is enough.
    out, errout = capfd.readouterr()
    assert "ERROR" not in out + errout


def test_one_dimensional_spectrum(tmp_path):
    hs = pytest.importorskip("hyperspy.api")
    p = tmp_path / "spectrum.hspy"
    hs.signals.Signal1D(np.arange(2048, dtype=np.float32)).save(p)
    with pytest.raises(EmcoreError) as err:
        io.load(p)
    msg = str(err.value)
    assert msg.startswith("spectrum.hspy is a single 1-D spectrum (shape (2048,)); the workbench needs")
    np.save(tmp_path / "line.npy", np.ones(100))
    with pytest.raises(EmcoreError, match=r"line\.npy is a single 1-D spectrum \(shape \(100,\)\)"):
        io.load(tmp_path / "line.npy")


def test_four_d_data(tmp_path):
    hs = pytest.importorskip("hyperspy.api")
    p = tmp_path / "fourd.hspy"
    hs.signals.Signal2D(np.zeros((3, 4, 16, 16), np.float32)).save(p)
    with pytest.raises(EmcoreError, match=r"fourd\.hspy is 4-D data \(shape \(3, 4, 16, 16\)\).*4D-STEM"):
        io.load(p)
    np.save(tmp_path / "fourd.npy", np.zeros((3, 4, 16, 16), np.float32))
    with pytest.raises(EmcoreError, match=r"fourd\.npy is 4-D data"):
        io.load(tmp_path / "fourd.npy")


def test_nan_and_inf_name_the_file(tmp_path):
    a = np.ones((16, 16), np.float32)
    a[3, 4] = np.nan
    np.save(tmp_path / "holes.npy", a)
    with pytest.raises(EmcoreError, match=r"holes\.npy.*NaN or infinite"):
        io.load(tmp_path / "holes.npy", name="something else")
    a[3, 4] = np.inf
    import tifffile

    tifffile.imwrite(tmp_path / "holes.tif", a)
    with pytest.raises(EmcoreError, match=r"holes\.tif.*NaN or infinite"):
        io.load(tmp_path / "holes.tif")


def test_pickled_npy_is_refused(tmp_path):
    p = tmp_path / "objects.npy"
    from tests.conftest import pickled_npy_bytes

    p.write_bytes(pickled_npy_bytes([{"a": 1}, None]))
    with pytest.raises(EmcoreError, match=r"objects\.npy.*pickled"):
        io.load(p)
    z = tmp_path / "objects.npz"
    np.savez(z, data=np.array([{"a": 1}], dtype=object))
    with pytest.raises(EmcoreError, match=r"objects\.npz.*pickled"):
        io.load(z)


def test_npy_header_claiming_a_huge_array_is_refused_before_allocating(tmp_path):
    p = tmp_path / "huge.npy"
    with open(p, "wb") as f:
        np.lib.format.write_array_header_2_0(
            f, {"descr": "<f8", "fortran_order": False, "shape": (100_000, 100_000, 1_000)}
        )
        f.write(b"\0" * 64)
    with pytest.raises(EmcoreError, match=r"huge\.npy is truncated"):
        io.load(p)
    # A real (not truncated) array over the cap is a TooLargeError with a binning that fits.
    np.save(tmp_path / "big.npy", np.zeros((256, 256, 512), np.uint8))
    with pytest.raises(TooLargeError, match=r"big\.npy") as err:
        io.load(tmp_path / "big.npy", max_bytes=8 * 1024**2)
    assert err.value.nbytes == 256 * 256 * 512 * 4
    ds = io.load(tmp_path / "big.npy", max_bytes=8 * 1024**2, **err.value.suggestion)
    assert ds.data.nbytes <= 8 * 1024**2


def test_images_under_8x8_are_refused_but_small_cubes_are_fine(tmp_path):
    np.save(tmp_path / "tiny.npy", np.ones((4, 4), np.float32))
    with pytest.raises(EmcoreError, match=r"tiny\.npy is an image of only 4×4 pixels.*8×8"):
        io.load(tmp_path / "tiny.npy")
    from PIL import Image

    Image.fromarray(np.zeros((5, 7), np.uint8)).save(tmp_path / "tiny.png")
    with pytest.raises(EmcoreError, match=r"tiny\.png.*5×7"):
        io.load(tmp_path / "tiny.png")
    np.save(tmp_path / "cube.npy", np.ones((2, 2, 64), np.uint16))
    ds = io.load(tmp_path / "cube.npy")
    assert ds.kind == "cube" and ds.is_counts and ds.calibration.energy_unit == "channel"


# ----------------------------------------------------------------------------------------
# plain formats and kinds
# ----------------------------------------------------------------------------------------
def test_raw_3d_heuristic_and_kind_override(tmp_path):
    np.save(tmp_path / "cube.npy", np.zeros((16, 16, 100), np.float32))
    np.save(tmp_path / "stack.npy", np.zeros((5, 16, 16), np.float32))
    assert io.load(tmp_path / "cube.npy").kind == "cube"
    assert io.load(tmp_path / "stack.npy").kind == "stack"
    forced = io.load(tmp_path / "cube.npy", kind="stack")
    assert forced.kind == "stack" and forced.data.shape == (16, 16, 100)
    with pytest.raises(EmcoreError, match=r"stack\.npy.*cannot be read as an image"):
        io.load(tmp_path / "stack.npy", kind="image")
    # A one-frame stack is an image.
    np.save(tmp_path / "one.npy", np.zeros((1, 16, 16), np.float32))
    assert io.load(tmp_path / "one.npy").kind == "image"


def test_multi_page_tif_is_a_stack(tmp_path):
    import tifffile

    frames = np.arange(3 * 20 * 24, dtype=np.uint16).reshape(3, 20, 24)
    tifffile.imwrite(tmp_path / "movie.tif", frames)
    ds = io.load(tmp_path / "movie.tif")
    assert ds.kind == "stack" and ds.data.shape == (3, 20, 24)
    np.testing.assert_array_equal(ds.data, frames)
    cube = io.load(tmp_path / "movie.tif", kind="cube")  # pages are channels
    assert cube.data.shape == (20, 24, 3)
    np.testing.assert_array_equal(cube.data[:, :, 1], frames[1])


def test_npz_members(tmp_path):
    rng = np.random.default_rng(3)
    clean = rng.random((16, 16, 64)).astype(np.float32)
    noisy = rng.poisson(clean * 5).astype(np.uint16)
    haadf = rng.random((16, 16)).astype(np.float32)
    np.savez(tmp_path / "sim.npz", data=noisy, haadf=haadf, ground_truth=clean * 5)
    ds = io.load(tmp_path / "sim.npz")
    assert ds.kind == "cube" and ds.is_counts
    np.testing.assert_array_equal(ds.haadf, haadf)
    np.testing.assert_allclose(ds.ground_truth, clean * 5)
    b = io.load(tmp_path / "sim.npz", bin_spatial=2)
    assert b.ground_truth.shape == b.data.shape == (8, 8, 64)
    np.testing.assert_allclose(b.ground_truth.sum(), (clean * 5).sum(), rtol=1e-5)
    # Without a 'data' member the largest array is taken.
    np.savez(tmp_path / "two.npz", small=np.zeros((8, 8)), big=np.ones((32, 32)))
    assert io.load(tmp_path / "two.npz").data.shape == (32, 32)
    assert [s["title"] for s in io.list_signals(tmp_path / "two.npz")] == ["small", "big"]
    assert io.load(tmp_path / "two.npz", signal=0).data.shape == (8, 8)
    # Archive members are decompressed whole: refused before reading when far over the cap.
    with pytest.raises(EmcoreError, match=r"two\.npz.*'big'.*read whole"):
        io.load(tmp_path / "two.npz", max_bytes=1000)


def test_png_colour_and_16_bit(tmp_path):
    from PIL import Image

    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0] = 100
    rgb[..., 1] = 200
    Image.fromarray(rgb).save(tmp_path / "colour.png")
    ds = io.load(tmp_path / "colour.png")
    assert ds.data.shape == (16, 16)
    assert ds.data[0, 0] == pytest.approx(0.299 * 100 + 0.587 * 200, abs=1e-3)
    assert not ds.is_counts

    low = np.random.default_rng(0).poisson(3, (32, 32)).astype(np.uint16)
    Image.fromarray(low).save(tmp_path / "low16.png")
    ds16 = io.load(tmp_path / "low16.png")
    np.testing.assert_array_equal(ds16.data, low)
    assert ds16.is_counts  # 16-bit, integer, mean ≤ 100: low-dose counting


def test_ground_truth_argument(tmp_path):
    clean = np.random.default_rng(1).random((32, 32)).astype(np.float32)
    np.save(tmp_path / "noisy.npy", clean + 0.1)
    np.save(tmp_path / "clean.npy", clean)
    ds = io.load(tmp_path / "noisy.npy", ground_truth=tmp_path / "clean.npy", bin_spatial=2)
    assert ds.ground_truth.shape == (16, 16)
    np.testing.assert_allclose(ds.ground_truth + 0.1, ds.data, atol=1e-5)  # both averaged
    with pytest.raises(EmcoreError, match="ground truth"):
        io.load(tmp_path / "noisy.npy", ground_truth=np.zeros((8, 8)))


# ----------------------------------------------------------------------------------------
# uploads
# ----------------------------------------------------------------------------------------
def test_safe_upload_names_never_come_from_the_upload():
    files = [
        ("../../x/My Scan_7.SER", b"1"),
        ("C:\\evil\\..\\scan.EMI", b"1"),
        ("noindex.ser", b"1"),
    ]
    names = io._safe_upload_names(files)
    assert [s for s, _ in names] == ["upload_7.ser", "upload.emi", "upload_1.ser"]
    assert [d for _, d in names] == ["My Scan_7.SER", "scan.EMI", "noindex.ser"]
    with pytest.raises(EmcoreError, match=r"passwd.*not supported"):
        io._safe_upload_names([("../../etc/passwd", b"x")])


def test_malicious_upload_name_stays_in_the_temp_dir(tmp_path, monkeypatch):
    import tempfile

    work = tmp_path / "a" / "b"
    tmp = work / "tmp"
    tmp.mkdir(parents=True)
    monkeypatch.chdir(work)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    buf = tmp_path / "src.npy"
    np.save(buf, np.arange(256, dtype=np.float32).reshape(16, 16))
    before = {p for p in tmp_path.rglob("*")}
    ds = io.load_bytes([("../../etc/passwd.npy", buf.read_bytes())])
    assert ds.data.shape == (16, 16) and ds.name == "passwd.npy"
    after = {p for p in tmp_path.rglob("*")}
    assert after == before  # nothing written anywhere, and the temp folder is gone
    assert not list(tmp_path.rglob("passwd*"))


def test_upload_problems(tmp_path):
    with pytest.raises(EmcoreError, match=r"scan\.dm4 is empty"):
        io.load_bytes([("scan.dm4", b"")])
    with pytest.raises(EmcoreError, match=r"notes\.txt.*not supported"):
        io.load_bytes([("notes.txt", b"hello")])
    with pytest.raises(EmcoreError, match="No file"):
        io.load_bytes([])
    with pytest.raises(EmcoreError, match=r"big\.npy.*twice the memory cap"):
        io.load_bytes([("big.npy", b"\0" * 5000)], max_bytes=1000)
    with pytest.raises(EmcoreError, match="one dataset at a time"):
        io.load_bytes([("a.npy", b"1"), ("b.png", b"1")])
    with pytest.raises(EmcoreError, match=r"broken\.hspy could not be read"):
        io.load_bytes([("broken.hspy", _random_bytes())])


def test_upload_with_rpl_and_raw(tmp_path):
    hs = pytest.importorskip("hyperspy.api")
    s = hs.signals.Signal1D(np.arange(8 * 8 * 32, dtype=np.uint16).reshape(8, 8, 32))
    s.save(tmp_path / "si.rpl")
    files = [("si.rpl", (tmp_path / "si.rpl").read_bytes()), ("si.raw", (tmp_path / "si.raw").read_bytes())]
    ds = io.load_bytes(files)
    assert ds.kind == "cube" and ds.data.shape == (8, 8, 32)
    assert io.load(tmp_path / "si.raw").data.shape == (8, 8, 32)
    with pytest.raises(EmcoreError, match=r"si\.raw.*\.rpl"):
        io.load_bytes(files[1:])


# ----------------------------------------------------------------------------------------
# round trips
# ----------------------------------------------------------------------------------------
def _cube_dataset():
    rng = np.random.default_rng(7)
    data = rng.poisson(0.5, (12, 10, 40)).astype(np.float32)
    cal = Calibration(pixel_size=0.5, pixel_unit="nm", energy_offset=0.16, energy_scale=0.02, energy_unit="keV")
    haadf = rng.random((12, 10)).astype(np.float32)
    return Dataset(data=data, kind="cube", calibration=cal, name="my cube", haadf=haadf,
                   is_counts=True, noise=Poisson(dose=2.0), metadata={"voltage_kv": 200.0})  # fmt: skip


def _stack_dataset():
    data = np.random.default_rng(8).random((3, 16, 20)).astype(np.float32)
    return Dataset(data=data, kind="stack", calibration=Calibration(pixel_size=0.0092, pixel_unit="nm"), name="movie")


def test_hspy_round_trip(tmp_path):
    hs = pytest.importorskip("hyperspy.api")
    cube = _cube_dataset()
    p = io.save(cube, tmp_path / "cube.hspy")
    back = io.load(p)
    assert back.kind == "cube"
    np.testing.assert_array_equal(back.data, cube.data)
    assert back.calibration == cube.calibration
    assert back.is_counts and back.noise == Poisson(dose=2.0)
    np.testing.assert_array_equal(back.haadf, cube.haadf)
    assert back.metadata["title"] == "my cube" and back.metadata["voltage_kv"] == 200.0
    s = hs.load(p)  # HyperSpy itself reads it
    assert s.metadata.Signal.signal_type == "EDS_TEM"
    assert s.axes_manager.signal_axes[0].units == "keV"

    stack = _stack_dataset()
    back = io.load(io.save(stack, tmp_path / "stack.hspy"))
    assert back.kind == "stack" and back.calibration == stack.calibration
    np.testing.assert_array_equal(back.data, stack.data)
    assert back.is_counts is False

    img = np.random.default_rng(9).random((24, 16)).astype(np.float32)
    back = io.load(io.save(img, tmp_path / "img.hspy"))
    assert back.kind == "image" and back.calibration.pixel_unit == "px"
    np.testing.assert_array_equal(back.data, img)


def test_tif_round_trip(tmp_path):
    import tifffile

    cube = _cube_dataset()
    p = io.save(cube, tmp_path / "cube.tif")
    with tifffile.TiffFile(p) as tf:  # ImageJ-readable, pages are channels
        assert tf.is_imagej and tf.series[0].shape == (40, 12, 10)
        assert tf.imagej_metadata["unit"] == "nm"
    for kw in ({}, {"kind": "cube"}):
        back = io.load(p, **kw)
        assert back.kind == "cube"
        np.testing.assert_array_equal(back.data, cube.data)
        assert back.calibration.pixel_size == pytest.approx(0.5, rel=1e-6)
        assert back.calibration.pixel_unit == "nm"
        assert back.calibration.energy_scale == pytest.approx(0.02)
        assert back.calibration.energy_offset == pytest.approx(0.16)
        assert back.is_counts and back.noise == Poisson(dose=2.0)
    stack = _stack_dataset()
    back = io.load(io.save(stack, tmp_path / "stack.tiff"), kind="stack")
    assert back.kind == "stack"
    np.testing.assert_array_equal(back.data, stack.data)
    assert back.calibration.pixel_size == pytest.approx(0.0092, rel=1e-6)
    img = Dataset(data=np.random.default_rng(2).random((20, 30)), kind="image",
                  calibration=Calibration(pixel_size=2.5, pixel_unit="nm"))  # fmt: skip
    back = io.load(io.save(img, tmp_path / "img.tif"))
    assert back.kind == "image" and back.calibration.pixel_size == pytest.approx(2.5)
    np.testing.assert_allclose(back.data, img.data)


def test_npy_round_trip_and_unknown_extension(tmp_path):
    cube = _cube_dataset()
    back = io.load(io.save(cube, tmp_path / "cube.npy"))
    assert back.kind == "cube"
    np.testing.assert_array_equal(back.data, cube.data)
    stack = io.save(np.zeros((4, 16, 16)), tmp_path / "s.npy")
    assert io.load(stack).kind == "stack"
    with pytest.raises(EmcoreError, match=r"out\.jpg.*\.hspy, \.tif, \.tiff, \.npy"):
        io.save(cube, tmp_path / "out.jpg")


def test_round_trip_of_a_real_cube(shared_data, tmp_path):
    ds = io.load(shared_data / "eds/bruker_test_TEM.bcf", bin_energy=4)
    back = io.load(io.save(ds, tmp_path / "bruker.hspy"))
    np.testing.assert_array_equal(back.data, ds.data)
    assert back.calibration == ds.calibration and back.is_counts
    np.testing.assert_array_equal(back.haadf, ds.haadf)


# ----------------------------------------------------------------------------------------
# module hygiene
# ----------------------------------------------------------------------------------------
def test_importing_emcore_does_not_import_hyperspy():
    code = (
        "import sys, emcore, emcore.io; "
        "bad = [m for m in ('hyperspy', 'rsciio', 'exspy', 'tifffile', 'PIL', 'dask') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    root = Path(io.__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(root)})  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


def test_constants():
    assert ".dm4" in io.SUPPORTED_EXTENSIONS and ".npz" in io.SUPPORTED_EXTENSIONS
    assert all(e in io.SUPPORTED_EXTENSIONS for e in io.SAVE_EXTENSIONS)
    assert io.DEFAULT_MAX_BYTES == 4 * 1024**3
    assert json.dumps(io.SUPPORTED_EXTENSIONS)
