"""Big data with bounded memory: lazy reading, frame-by-frame and out-of-core batch runs equal to
the whole-file ones, block writing, the simulated cube made in blocks, the dashboard link.

The batch tests use one in-process Dask cluster (threads) reached by address: the tasks are
the same functions as on a process cluster, without the seconds of starting workers.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from emcore import io
from emcore.batch import run_batch
from emcore.batch.frames import denoise_by_frame
from emcore.cli import main
from emcore.data.dataset import Calibration, Dataset
from emcore.errors import EmcoreError
from emcore.io.lazy import open_lazy, write_blocks
from emcore.methods.pca import denoise_pca
from emcore.methods.pca_lazy import pca_out_of_core
from emcore.methods.registry import denoise
from emcore.noise.models import Poisson
from emcore.sim.eds import three_phase_cube
from emcore.sim.eds_large import eds_blocks


@pytest.fixture(scope="module")
def cluster():
    from distributed import LocalCluster

    cl = LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0")
    yield cl.scheduler_address
    cl.close()


def _stack(seed=0, t=5, h=40, w=48, dose=3.0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    clean = dose * (1 + 0.5 * np.sin(2 * np.pi * xx / 6.0) * np.cos(2 * np.pi * yy / 5.0))
    frames = rng.poisson(np.broadcast_to(clean, (t, h, w))).astype(np.float32)
    return Dataset(frames, "stack", calibration=Calibration(pixel_size=0.05, pixel_unit="nm"), name="movie",
                   is_counts=True, noise=Poisson(1.0))


def _cube():
    _, noisy = three_phase_cube(np.random.default_rng(0), 36, 30, 128, counts=30)
    noisy[3, 5] = 0  # an empty pixel and an empty channel stay empty
    noisy[:, :, 7] = 0
    return Dataset(noisy, "cube", calibration=Calibration(energy_scale=0.05, energy_unit="keV"), is_counts=True)


@pytest.mark.parametrize("ext", [".npy", ".tif", ".hspy"])
def test_lazy_frames_equal_eager_reading(tmp_path, ext):
    path = io.save(_stack(), tmp_path / f"movie{ext}")
    whole, binned = io.load(path), io.load(path, bin_spatial=2)
    with open_lazy(path) as lz:
        assert (lz.kind, lz.shape) == ("stack", whole.data.shape)
        lz.scan()
        assert lz.is_counts == whole.is_counts
        assert np.array_equal(np.stack([lz.frame(i) for i in range(lz.shape[0])]), whole.data)
    with open_lazy(path, bin_spatial=2) as lz:
        lz.scan()
        assert np.array_equal(np.concatenate([b for _, b in lz.blocks()]), binned.data)
        assert lz.calibration == binned.calibration


@pytest.mark.parametrize("ext", [".npy", ".hspy"])
def test_lazy_cube_is_binned_and_cropped_like_load(tmp_path, ext):
    path = io.save(_cube(), tmp_path / f"cube{ext}")
    kw = dict(bin_spatial=2, bin_energy=2, energy_range=(0.5, 5.0))
    eager = io.load(path, **kw)
    with open_lazy(path, **kw) as lz:
        assert lz.shape == eager.data.shape
        assert np.array_equal(np.concatenate([b for _, b in lz.blocks(rows=4)]), eager.data)
        assert lz.calibration == eager.calibration


def test_lazy_reading_refuses_what_load_refuses(tmp_path):
    bad = tmp_path / "short.npy"
    np.save(bad, np.zeros((4, 64, 64), np.float32))
    bad.write_bytes(bad.read_bytes()[:2000])
    with pytest.raises(EmcoreError, match="truncated"):
        open_lazy(bad)
    io.save(np.ones((32, 32), np.float32), tmp_path / "image.npy")
    with pytest.raises(EmcoreError, match="an image is read whole"):
        open_lazy(tmp_path / "image.npy")
    from PIL import Image

    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "x.png")
    with pytest.raises(EmcoreError, match="cannot be read piece by piece"):
        open_lazy(tmp_path / "x.png")


@pytest.mark.parametrize("ext", [".npy", ".tif", ".hspy"])
def test_written_block_by_block_reads_back(tmp_path, ext):
    ds = _stack()
    calls = []

    def fn(start, stop):
        calls.append(start)
        return ds.data[start:stop] * 2

    out = write_blocks(tmp_path / f"twice{ext}", ds.data.shape, fn, kind="stack", calibration=ds.calibration)
    assert sorted(calls) == list(range(ds.data.shape[0]))  # once per block
    back = io.load(out)
    assert back.kind == "stack" and np.array_equal(back.data, ds.data * 2)
    with pytest.raises(EmcoreError, match=".hspy or .npy"):
        write_blocks(tmp_path / "cube.tif", (4, 4, 16), fn, kind="cube")


@pytest.mark.parametrize("method,params", [("wiener", {}), ("wiener", {"window": 5}), ("dncnn", {"tile": 32})])
def test_frame_by_frame_equals_the_whole_stack(tmp_path, method, params):
    ds = _stack(t=3 if method == "dncnn" else 5)
    path = io.save(ds, tmp_path / "movie.npy")
    whole = denoise(io.load(path), method, seed=4, **params)
    with open_lazy(path) as lz:
        run = denoise_by_frame(lz, tmp_path / "out.npy", method, params=params, seed=4)
    assert np.array_equal(np.load(tmp_path / "out.npy"), whole.data)
    assert run.params == whole.params
    with open_lazy(path) as lz, pytest.raises(EmcoreError, match="cannot run frame by frame"):
        denoise_by_frame(lz, tmp_path / "no.npy", "bm3d")


@pytest.mark.parametrize("poisson,n", [(True, None), (True, 3), (False, 2), (False, None)])
def test_out_of_core_pca_equals_in_memory_pca(tmp_path, poisson, n):
    """A given count: the same reconstruction to rounding. Unset: the count the 'pca' method
    chooses (count splitting for counts — another draw of the split, the same choice on this
    rank-3 cube; the J-invariant loss on the central crop otherwise)."""
    ds = _cube() if poisson else replace(_cube(), is_counts=False)
    chosen = denoise(ds, "pca", seed=5, poisson=poisson).params["n_components"] if n is None else n
    ref, info = denoise_pca(ds.data, n_components=chosen, poisson=poisson)
    path = io.save(ds, tmp_path / "cube.hspy")
    with open_lazy(path) as lz:
        fn, ooc = pca_out_of_core(lz, n_components=n, poisson=poisson, rows=7, seed=5)
        out = np.concatenate([fn(s, min(36, s + 7)) for s in range(0, 36, 7)])
    assert ooc.n_components == info.n_components == chosen
    assert (ooc.calibration is None) == (n is not None)
    if n is None:
        assert ooc.calibration.criterion == ("count-split" if poisson else "J-invariant")
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5 * float(ref.max()))
    assert np.all(out[3, 5] == 0) and np.all(out[:, :, 7] == 0)


def test_batch_in_pieces_equals_the_whole_file_batch(cluster, tmp_path):
    inputs = {"wiener": io.save(_stack(), tmp_path / "movie.tif"), "pca": io.save(_cube(), tmp_path / "cube.hspy")}
    runs = {}
    for stream in ("never", "always"):
        for method, params in (("wiener", {}), ("pca", {"n_components": 3})):
            s = run_batch([str(inputs[method])], method, tmp_path / f"{stream}_{method}", params=params, fmt=".hspy",
                          seed=2, scheduler=cluster, stream=stream, score=False)
            rows = [r for r in s.rows if r["status"] == "done"]
            assert len(rows) == 1, [r["error"] for r in s.rows]
            runs[stream, method] = rows[0]
    for method in ("wiener", "pca"):
        whole, pieces = runs["never", method], runs["always", method]
        a, b = io.load(pieces["output"]), io.load(whole["output"])
        assert a.kind == b.kind and a.calibration == b.calibration
        if method == "wiener":
            assert np.array_equal(a.data, b.data)
        else:  # the same sums, accumulated block by block
            np.testing.assert_allclose(a.data, b.data, rtol=1e-4, atol=1e-4)
        assert pieces["params"] == whole["params"] and pieces["preview"]


def test_auto_goes_piece_by_piece_over_the_workers_cap(cluster, tmp_path, monkeypatch):
    path = io.save(_stack(), tmp_path / "movie.npy")
    monkeypatch.setenv("EMCORE_MAX_BYTES", "20000")  # the stack is 38 kB as float32, a frame 8 kB
    s = run_batch([str(path)], "wiener", tmp_path / "out", fmt=".npy", seed=1, scheduler=cluster, score=True)
    row = s.rows[0]
    assert row["status"] == "done", row["error"]
    assert "frame" in row["score"] and "frames, one at a time" in row["pieces"]
    s = run_batch([str(path)], "bm3d", tmp_path / "out2", fmt=".npy", scheduler=cluster, score=False)
    assert s.rows[0]["status"] == "failed" and "cannot run frame by frame" in s.rows[0]["error"]


def test_simulated_cube_made_in_blocks_is_reproducible():
    cube = eds_blocks(64, 64, counts_per_pixel=40.0, energy_scale=0.3, seed=3)
    a, b = cube.make(8, 16), cube.make(8, 16)
    assert a.shape == (8, 64, 64) and np.array_equal(a, b) and a.dtype == np.float32
    whole = np.concatenate([cube.make(s, s + 16) for s in range(0, 64, 16)])
    assert abs(whole.sum(axis=2).mean() - 40.0) < 2.0 and cube.haadf.shape == (64, 64)


def test_dashboard_link_is_printed_and_handed_to_the_page(cluster, tmp_path, capsys):
    pytest.importorskip("bokeh")
    path = io.save(_stack(), tmp_path / "movie.npy")
    said, started = [], []
    s = run_batch([str(path)], "wiener", tmp_path / "out", fmt=".npy", scheduler=cluster, score=False,
                  say=said.append, on_start=started.append)
    assert s.dashboard and s.dashboard.startswith("http") and f"Dask dashboard: {s.dashboard}" in said
    assert started and started[0].dashboard == s.dashboard
    code = main(["batch", str(path), "--method", "wiener", "--out", str(tmp_path / "cli"), "--scheduler", cluster,
                 "--format", ".npy", "--no-score"])
    err = capsys.readouterr()
    assert code == 0 and f"Dask dashboard: {s.dashboard}" in err.err and json.loads(err.out.splitlines()[-1])["done"] == 1
