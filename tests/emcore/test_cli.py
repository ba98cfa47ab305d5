"""The CLI as a script user meets it: subprocess calls, JSON out, exit status 2 on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "emcore", *map(str, args)], cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=300)


def test_info_json_on_shared_cube(shared_data):
    r = run_cli("info", shared_data / "eds" / "core_shell.hdf5", "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["kind"] == "cube" and info["shape"] == [64, 64, 992] and info["dtype"] == "float32"
    assert info["calibration"]["pixel_size"] == pytest.approx(0.5)
    assert info["calibration"]["energy_scale"] == pytest.approx(0.02)
    assert info["haadf_shape"] is None and info["is_counts"] is True


def test_info_text_with_haadf(shared_data):
    r = run_cli("info", shared_data / "eds" / "bruker_test_TEM.bcf")
    assert r.returncode == 0, r.stderr
    assert "cube" in r.stdout and "HAADF         64x64" in r.stdout


@pytest.mark.parametrize("content,name,needle", [
    (b"", "empty.dm3", "empty"),
    (b"not an image at all", "notes.txt", ".txt"),
    (b"\x00" * 300, "broken.hspy", "broken.hspy"),
])
def test_info_bad_input_exits_2_with_one_sentence(tmp_path, content, name, needle):
    p = tmp_path / name
    p.write_bytes(content)
    r = run_cli("info", p)
    assert r.returncode == 2
    assert needle in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_info_missing_file_exits_2(tmp_path):
    r = run_cli("info", tmp_path / "nope.dm4")
    assert r.returncode == 2 and "nope.dm4" in r.stderr


@pytest.mark.parametrize("example,ext", [("hrem", ".tif"), ("eds", ".hspy"), ("movie", ".npy")])
def test_simulate_writes_data_and_truth(tmp_path, example, ext):
    out = tmp_path / f"sim{ext}"
    r = run_cli("simulate", example, "--out", out, "--seed", 3, "--size", 64)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    truth = tmp_path / f"sim_truth{ext}"
    assert out.exists() and truth.exists()
    assert set(report["files"]) >= {"data", "ground_truth"}
    if example == "eds":
        assert (tmp_path / f"sim_haadf{ext}").exists()
    kind = {"hrem": "image", "eds": "cube", "movie": "stack"}[example]
    info = json.loads(run_cli("info", out, "--json", "--kind", kind).stdout)
    assert info["kind"] == kind and info["shape"][:2] == report["shape"][:2]


def test_simulate_bad_dose_exits_2(tmp_path):
    r = run_cli("simulate", "eds", "--out", tmp_path / "x.npy", "--dose", "-5")
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_methods_json_lists_registry():
    r = run_cli("methods", "--json")
    assert r.returncode == 0, r.stderr
    names = [m["name"] for m in json.loads(r.stdout)]
    assert {"bm3d", "wiener", "pca"} <= set(names)
    text = run_cli("methods").stdout
    assert "--set window=<int>" in text


def test_denoise_writes_result_and_prints_json(tmp_path):
    src = tmp_path / "noisy.npy"
    g = np.random.default_rng(0)
    r_, c_ = np.mgrid[0:64, 0:64]
    clean = 0.5 + 0.1 * np.cos(r_ / 2.0) * np.cos(c_ / 3.0)
    np.save(src, (clean + g.normal(0, 0.05, clean.shape)).astype(np.float32))
    out = tmp_path / "clean.tif"
    r = run_cli("denoise", src, "--method", "wiener", "--out", out, "--set", "window=7", "--set", "mode=local")
    assert r.returncode == 0, r.stderr
    line = json.loads(r.stdout.strip().splitlines()[-1])
    assert line["method"] == "wiener" and line["params"]["window"] == 7 and line["device"] == "cpu"
    assert out.exists() and line["output"] == str(out)
    info = json.loads(run_cli("info", out, "--json").stdout)
    assert info["shape"] == [64, 64]


@pytest.mark.parametrize("args,needle", [
    (["--method", "nope"], "Unknown method 'nope'; the methods are: bm3d"),
    (["--method", "wiener", "--set", "sigma=3"], "has no parameter 'sigma'; its parameters are: mode"),
    (["--method", "wiener", "--set", "window=1000"], "between 3 and 31"),
    (["--method", "pca"], "works on spectrum images, but"),
])
def test_denoise_bad_requests_exit_2(tmp_path, args, needle):
    src = tmp_path / "img.npy"
    np.save(src, np.random.default_rng(0).random((32, 32)).astype(np.float32))
    r = run_cli("denoise", src, "--out", tmp_path / "o.npy", *args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr
