"""The checks made before any reader runs: external files, lying headers, one-sentence answers."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from emcore import io
from emcore.errors import EmcoreError, TooLargeError
from tests.emcore.io import adversarial as adv

ROOT = Path(__file__).resolve().parents[3]


# ----------------------------------------------------------------------------------------
# HDF5 files never make the reader open another file
# ----------------------------------------------------------------------------------------
class FifoWatch:
    """Tells whether anything opened a FIFO for reading.

    A reader's ``open()`` of a FIFO blocks until a writer appears, and a non-blocking open for
    writing succeeds only while a reader is there: polling the latter catches every reader,
    however briefly it looks, and lets it go (it then reads end-of-file). The poller is a
    separate process because h5py keeps the GIL while HDF5 opens a file.
    """

    POLL = (
        "import os, sys, time\n"
        "while True:\n"
        "    try:\n"
        "        fd = os.open(sys.argv[1], os.O_WRONLY | os.O_NONBLOCK)\n"
        "    except OSError:\n"
        "        time.sleep(0.0005)\n"
        "        continue\n"
        "    os.close(fd)\n"
        "    print('opened', flush=True)\n"
    )

    def __init__(self, path: Path):
        self.path = path
        os.mkfifo(path)
        self._proc = subprocess.Popen([sys.executable, "-c", self.POLL, str(path)], stdout=subprocess.PIPE, text=True)
        time.sleep(0.2)  # let it start polling

    def stop(self) -> bool:
        time.sleep(0.2)
        self._proc.kill()
        out, _ = self._proc.communicate(timeout=10)
        return "opened" in out


def _linked_upload(tmp_path: Path, target: str, name: str = "linked.hspy") -> tuple[str, bytes]:
    import h5py

    def change(f, path):
        del f[path]
        f[path] = h5py.ExternalLink(target, "/cube")

    (p,) = adv._hspy_variant(tmp_path, name, change)
    return name, p.read_bytes()


def test_the_fifo_watch_sees_a_reader_that_follows_the_link(tmp_path):
    # The control: h5py following the link does open the FIFO, and the watch sees it.
    import h5py

    watch = FifoWatch(tmp_path / "target.h5")
    name, payload = _linked_upload(tmp_path, str(watch.path))
    with h5py.File(tmp_path / name, "r") as f:
        with pytest.raises(KeyError):
            f[adv._hspy_data_path(f)]  # HDF5 opens the target, reads EOF, gives up
    assert watch.stop()


@pytest.mark.parametrize("how", ["absolute", "relative", "missing target"])
def test_external_link_upload_is_refused_and_its_target_never_opened(tmp_path, how):
    watch = FifoWatch(tmp_path / "target.h5")
    if how == "absolute":
        target = str(watch.path)
    elif how == "relative":
        # The upload is written as <tmp>/emcore-upload-XXXX/upload.hspy: climb out of it.
        target = "../" + os.path.relpath(watch.path, tempfile.gettempdir())
    else:
        target = str(tmp_path / "nothing-here.h5")
    upload = _linked_upload(tmp_path, target)
    with pytest.raises(EmcoreError, match=r"^linked\.hspy contains an external link .* refused"):
        io.load_bytes([upload])
    with pytest.raises(EmcoreError, match="external link"):
        io.load(tmp_path / upload[0])
    with pytest.raises(EmcoreError, match="external link"):
        io.list_signals(tmp_path / upload[0])
    assert not watch.stop(), "the link target was opened"


def test_virtual_dataset_and_external_storage_are_refused_before_hyperspy(tmp_path):
    for build, what in ((adv._virtual, "virtual dataset"), (adv._external_storage, "external raw files")):
        (p,) = build(tmp_path)
        with pytest.raises(EmcoreError, match=what):
            io.load_bytes([(p.name, p.read_bytes())])
        with pytest.raises(EmcoreError, match=what):
            io.load_haadf(p)


def test_lazy_hdf5_files_are_closed_after_loading(tmp_path):
    import h5py

    p = tmp_path / "cube.hspy"
    io.save(np.ones((16, 16, 64), np.float32), p, kind="cube")
    io.load(p)
    open_files = [h5py.File(fid).filename for fid in h5py.h5f.get_obj_ids(types=h5py.h5f.OBJ_FILE)]
    assert str(p) not in open_files


# ----------------------------------------------------------------------------------------
# lying headers: answered from the header, fast and small (measured in a fresh process)
# ----------------------------------------------------------------------------------------
LYING = ["lying.mrc", "lying.rpl", "lying_gzip.hspy", "lying_1e72.hdf5", "lying_tiles.tif", "lying.png",
         "lying_metadata.hspy"]  # fmt: skip
MEASURE = (
    "import resource, subprocess, sys, time\n"
    "t = time.monotonic()\n"
    "r = subprocess.run([sys.executable, '-m', 'emcore', 'info', sys.argv[1]], capture_output=True, text=True, timeout=120)\n"
    "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(r.returncode, round(time.monotonic() - t, 2), round(u.ru_utime + u.ru_stime, 2), u.ru_maxrss)\n"
    "sys.stderr.write(r.stderr)\n"
)


def measure_info(path: Path) -> dict:
    """``python -m emcore info PATH`` in a fresh process: exit status, wall and CPU seconds,
    peak resident memory (``RUSAGE_CHILDREN`` of a wrapper whose only child it is), stderr."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "EMCORE_MAX_BYTES": ""}
    r = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True,
                       timeout=150, cwd=ROOT, env=env)  # fmt: skip
    rc, wall, cpu, rss_kb = r.stdout.split()
    return {"rc": int(rc), "wall_s": float(wall), "cpu_s": float(cpu), "peak_mb": int(rss_kb) / 1024, "stderr": r.stderr}


@pytest.fixture(scope="module")
def lying_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lying")
    by_name = {c.name: c for c in adv.cases()}
    return {name: by_name[name].build(d)[0] for name in LYING}


@pytest.mark.parametrize("name", LYING)
def test_lying_header_is_answered_in_under_5_s_and_500_mb(lying_files, name):
    m = measure_info(lying_files[name])
    assert m["rc"] == 2, m
    assert m["stderr"].startswith("error: ") and m["stderr"].count("\n") == 1, m["stderr"]
    assert m["peak_mb"] < 500, m
    # CPU time is the figure (the machine may be shared); the wall clock is checked loosely.
    assert m["cpu_s"] < 5 and m["wall_s"] < 15, m


def test_lying_cube_is_a_too_large_error_with_the_cap_sentence(tmp_path):
    (p,) = adv.cases()[[c.name for c in adv.cases()].index("lying_gzip.hspy")].build(tmp_path)
    with pytest.raises(TooLargeError, match=r"over the memory cap of 4\.0 GiB \(EMCORE_MAX_BYTES\).*header is corrupt") as e:
        io.load(p)
    assert e.value.shape == (adv.LYING,) * 3


def test_a_declared_size_within_the_cap_is_refused_in_the_cap_sentence_from_the_header(tmp_path):
    # A real (plausible) TIFF over the cap: refused from its header, same words as after opening.
    import tifffile

    p = tmp_path / "big.tif"
    tifffile.imwrite(p, np.zeros((512, 512), np.uint16), compression="zlib")
    with pytest.raises(TooLargeError, match=r"the image would be 512×512 values = 1\.0 MiB as float32, over the memory cap") as e:
        io.load(p, max_bytes=2**19)
    assert e.value.suggestion == {"bin_spatial": 2, "bin_energy": 1}
    assert io.load(p, max_bytes=2**19, bin_spatial=2).data.shape == (256, 256)


def test_plausibility_bound_leaves_well_compressed_real_data_alone():
    from emcore.io.guards import _check_plausible, _Limits

    # 100 MiB of counts compressed 1000:1 (near deflate's limit) is real data; 2000:1 is not.
    _check_plausible("x", "its dataset", (100, 1024, 1024), np.dtype("u1"), 100 * 1024 + 1, _Limits(2**40))
    with pytest.raises(EmcoreError, match="far more than the file can hold"):
        _check_plausible("x", "its dataset", (100, 1024, 1024), np.dtype("u1"), 50 * 1024, _Limits(2**40))


def test_suggestion_by_bisection_equals_the_exhaustive_search():
    from emcore.io.guards import MIN_IMAGE_SIDE
    from emcore.io.reduce import _Plan, _suggest

    def exhaustive(plan, cap):
        shape = plan.shape_in
        if plan.kind == "cube":
            (H, W), E, side = shape[:2], len(range(*plan.e_slice.indices(shape[2]))), 1
        else:
            (H, W), E, side = shape[-2:], 1, MIN_IMAGE_SIDE
        T = shape[0] if plan.kind == "stack" else 1
        ms = [plan.m]
        while plan.kind == "cube" and ms[-1] * 2 <= E:
            ms.append(ms[-1] * 2)
        best = smallest = None
        for k in range(plan.k, max(plan.k, min(H, W) // side) + 1):
            for m in ms:
                n = (H // k) * (W // k) * T * (E // m) * 4
                if n <= cap and (best is None or (k * k * m, k) < best[0]):
                    best = ((k * k * m, k), k, m)
                if smallest is None or n < smallest[0]:
                    smallest = (n, k, m)
        hit = best or smallest
        return {"bin_spatial": hit[1], "bin_energy": hit[2]}, best is not None

    rng = random.Random(0)
    for _ in range(2000):
        kind = rng.choice(["image", "stack", "cube"])
        shape = {"cube": (rng.randint(1, 200), rng.randint(1, 200), rng.randint(1, 3000)),
                 "stack": (rng.randint(1, 30), rng.randint(8, 500), rng.randint(8, 500)),
                 "image": (rng.randint(8, 2000), rng.randint(8, 2000))}[kind]  # fmt: skip
        e_slice = slice(rng.randint(0, 10), rng.randint(11, 3000)) if kind == "cube" and rng.random() < 0.3 else slice(None)
        plan = _Plan(kind, rng.choice([1, 2, 3]), rng.choice([1, 2, 4]) if kind == "cube" else 1, e_slice, 0, shape, shape)
        cap = rng.choice([10, 10**4, 10**6, 10**8])
        assert _suggest(plan, cap) == exhaustive(plan, cap)


# ----------------------------------------------------------------------------------------
# the sentences name what is actually wrong
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("make, pattern", [
    (lambda d: os.mkfifo(d / "x.npy"), r"x\.npy is not a regular file but a named pipe"),
    (lambda d: os.symlink("/dev/null", d / "x.npy"), r"x\.npy is not a regular file but a character device"),
    (lambda d: os.symlink("/proc/self/status", d / "x.npy"), r"x\.npy is a system pseudo-file"),
])  # fmt: skip
def test_special_files_are_not_called_empty(tmp_path, make, pattern):
    make(tmp_path)
    with pytest.raises(EmcoreError, match=pattern) as e:
        io.load(tmp_path / "x.npy")
    assert "empty" not in str(e.value)


def test_negative_sizes_name_the_header_not_memory(tmp_path):
    for ext, payload, field in (
        (".npy", adv._npy_bytes({"descr": "<f4", "fortran_order": False, "shape": (64, -64)}, bytes(64)), "axis 1=-64"),
        (".mrc", adv._mrc_header(-64, 64, 1, 2) + bytes(64), "nx=-64"),
    ):
        p = tmp_path / f"neg{ext}"
        p.write_bytes(payload)
        with pytest.raises(EmcoreError, match=f"header declares a negative size \\({field}\\)") as e:
            io.load(p)
        assert "memory" not in str(e.value)


def test_kind_refusals_are_worded_from_what_was_set(tmp_path):
    import tifffile

    tagged = tmp_path / "tagged.tif"
    tifffile.imwrite(tagged, np.zeros((16, 16), np.float32), imagej=True, metadata={"axes": "YX", "emcore_kind": "cube"})
    with pytest.raises(EmcoreError, match=r"its ImageJ metadata \(emcore_kind='cube'\) mark it as a spectrum image") as e:
        io.load(tagged)
    assert "leave kind unset" not in str(e.value)
    assert io.load(tagged, kind="image").kind == "image"  # what the sentence offers works
    plain = io.save(np.zeros((16, 16), np.float32), tmp_path / "plain.npy")
    with pytest.raises(EmcoreError, match=r"cannot be read as a spectrum image; leave kind unset or use kind='image'"):
        io.load(plain, kind="cube")


def test_npz_with_a_text_haadf_and_tiff_with_a_text_energy_scale(tmp_path):
    p = tmp_path / "c.npz"
    np.savez(p, data=np.ones((16, 16, 64), np.float32), haadf=np.array([["abc"] * 16] * 16))
    with pytest.raises(EmcoreError, match=r"c\.npz: the archive's 'haadf' array holds <U3 values"):
        io.load(p)
    (t,) = adv._tif("e.tif", np.zeros((32, 16, 16), np.float32), imagej=True,
                    metadata={"axes": "ZYX", "emcore_kind": "cube", "energy_scale": "abc"})(tmp_path)  # fmt: skip
    with pytest.raises(EmcoreError, match=r"e\.tif: its ImageJ metadata give energy_scale='abc', which is not a usable number"):
        io.load(t)


def test_energy_range_on_an_uncalibrated_axis_is_one_sentence(tmp_path):
    import h5py

    p = tmp_path / "c.hspy"
    io.save(np.ones((16, 16, 64), np.float32), p, kind="cube")
    with h5py.File(p, "r+") as f:
        exp = next(iter(f["Experiments"]))
        f[f"Experiments/{exp}/axis-2"].attrs["scale"] = 0.0
    with pytest.raises(EmcoreError, match="no usable calibration"):
        io.load(p, energy_range=(1, 2))


@pytest.mark.parametrize("fraction", [0.02, 0.25, 0.5, 0.9, 0.999])
def test_a_cut_bcf_is_refused_never_zeros(shared_data, tmp_path, fraction):
    b = (shared_data / "eds/bruker_test_TEM.bcf").read_bytes()
    p = tmp_path / "cut.bcf"
    p.write_bytes(b[: int(len(b) * fraction)])
    with pytest.raises(EmcoreError, match=r"cut\.bcf is (truncated|not a Bruker \.bcf file)"):
        io.load(p)
