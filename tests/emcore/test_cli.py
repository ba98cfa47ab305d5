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


# ------------------------------------------------- bad command lines: one sentence, exit 2


def _one_line_error(code, capsys) -> str:
    out = capsys.readouterr()
    assert code == 2, out.out + out.err
    assert len(out.err.strip().splitlines()) == 1, out.err
    assert out.err.startswith("error: ") and "Traceback" not in out.err and "usage:" not in out.err
    return out.err


def _image(tmp_path, shape=(48, 40)) -> Path:
    src = tmp_path / "img.npy"
    np.save(src, np.random.default_rng(0).random(shape).astype(np.float32) + 0.5)
    return src


@pytest.mark.parametrize("seed", ["-1", str(2**63), str(2**64), "1.5", "many"])
@pytest.mark.parametrize("command", ["denoise", "simulate", "train"])
def test_seed_out_of_range_is_refused_with_the_range(tmp_path, capsys, command, seed):
    from emcore.cli import main

    args = {"denoise": ["denoise", str(_image(tmp_path)), "--method", "wiener", "--out", str(tmp_path / "o.npy")],
            "simulate": ["simulate", "hrem", "--out", str(tmp_path / "s.npy")],
            "train": ["train", "dncnn", "--out", str(tmp_path / "w.pt")]}[command]
    err = _one_line_error(main([*args, f"--seed={seed}"]), capsys)
    assert f"--seed: the seed must be a whole number from 0 to {2**63 - 1}" in err and repr(seed) in err
    assert not list(tmp_path.glob("[osw].*"))


def test_largest_seed_is_accepted(tmp_path, capsys):
    from emcore.cli import main

    assert main(["denoise", str(_image(tmp_path)), "--method", "wiener", "--out", str(tmp_path / "o.npy"),
                 "--seed", str(2**63 - 1)]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("argv,needle", [
    ([], "The following arguments are required: command; see 'python -m emcore --help'"),
    (["nope"], "Command: invalid choice: 'nope'"),
    (["denoise"], "The following arguments are required: IN, --method, --out; see 'python -m emcore denoise --help'"),
    (["info", "--kind", "sphere", "x.npy"], "--kind: invalid choice: 'sphere'"),
    (["denoise", "a.npy", "--method", "wiener", "--out", "b.npy", "--bogus"], "Unrecognized arguments: --bogus"),
    (["simulate", "hrem", "--out", "x.npy", "--dose", "lots"], "--dose: invalid float value: 'lots'"),
    (["train"], "The following arguments are required: model, --out"),
])
def test_argparse_errors_are_one_sentence(capsys, argv, needle):
    from emcore.cli import main

    err = _one_line_error(main(argv), capsys)
    assert needle in err and err.strip().endswith("for the options.")


def test_help_still_prints_the_usage(capsys):
    from emcore.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["denoise", "--help"])
    assert exit_.value.code == 0 and "usage: python -m emcore denoise" in capsys.readouterr().out


def test_bad_command_line_from_a_real_process_exits_2_with_one_line():
    r = run_cli("simulate", "hrem", "--out", "x.npy", "--seed", "-1")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "usage:" not in r.stderr and "Traceback" not in r.stderr and "from 0 to" in r.stderr


@pytest.fixture
def no_training(monkeypatch):
    """Any training that starts fails the test: --out must be refused before."""
    def refuse(*args, **kwargs):
        raise AssertionError("training started before --out was checked")

    monkeypatch.setattr("emcore.methods.supervised.train_network", refuse, raising=False)


@pytest.mark.parametrize("where,needle", [
    ("folder", "names a folder; give a file name in it, such as"),
    ("folder/", "names a folder; give a file name in it, such as"),
    ("a_file/w.pt", "a_file is a file, not a folder; choose another place"),
    ("a_file/deeper/w.pt", "a_file is a file, not a folder; choose another place"),
    ("card_is_folder.pt", "Cannot write the card"),
])
def test_train_refuses_an_unwritable_out_before_training(tmp_path, capsys, no_training, where, needle):
    from emcore.cli import main

    (tmp_path / "folder").mkdir()
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "card_is_folder.pt.json").mkdir()
    err = _one_line_error(main(["train", "dncnn", "--out", str(tmp_path / where)]), capsys)
    assert needle in err


def test_train_refuses_out_without_permission(tmp_path, capsys, no_training, monkeypatch):
    from emcore import cli

    # Tests may run as root, for whom chmod forbids nothing: ask os.access the question instead.
    monkeypatch.setattr(cli.os, "access", lambda path, mode: False)
    err = _one_line_error(cli.main(["train", "dncnn", "--out", str(tmp_path / "new" / "w.pt")]), capsys)
    assert f"you have no permission to write in {tmp_path}" in err
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("method", ["dncnn", "unet"])
@pytest.mark.parametrize("tile", [32, 33, 100, 4096])
def test_any_tile_in_the_declared_range_is_accepted(tmp_path, capsys, method, tile):
    from emcore.cli import main

    out = tmp_path / "o.npy"
    code = main(["denoise", str(_image(tmp_path, (70, 50))), "--method", method, "--out", str(out),
                 "--device", "cpu", "--set", f"tile={tile}"])
    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["params"]["tile"] == tile
    assert np.load(out).shape == (70, 50)
