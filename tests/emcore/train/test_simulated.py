"""Simulation-based training pairs and the `train` command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from emcore import EmcoreError
from emcore.train.simulated import SimulatedPairs, denormalise, normalise

ROOT = Path(__file__).resolve().parents[3]


def test_pairs_shapes_scale_and_determinism():
    src = SimulatedPairs(dose_range=(0.5, 2.0), noise="poisson")
    a_noisy, a_clean = src.batch(3, 48, np.random.default_rng(1))
    b_noisy, b_clean = src.batch(3, 48, np.random.default_rng(1))
    assert a_noisy.shape == a_clean.shape == (3, 1, 48, 48) and a_noisy.dtype == torch.float32
    assert torch.equal(a_noisy, b_noisy) and torch.equal(a_clean, b_clean)
    # each noisy patch has mean 1 (normalised), its clean target the same scale
    assert torch.allclose(a_noisy.mean(dim=(1, 2, 3)), torch.ones(3), atol=1e-4)
    assert 0.5 < float(a_clean.mean()) < 2.0
    c_noisy, _ = src.batch(3, 48, np.random.default_rng(2))
    assert not torch.equal(a_noisy, c_noisy)  # fresh noise and phantoms every batch


def test_lower_dose_is_noisier():
    lo = SimulatedPairs(dose_range=(0.5, 0.5), noise="poisson", augment=False)
    hi = SimulatedPairs(dose_range=(50.0, 50.0), noise="poisson", augment=False)
    n_lo, c_lo = lo.batch(4, 64, np.random.default_rng(0))
    n_hi, c_hi = hi.batch(4, 64, np.random.default_rng(0))
    assert float(((n_lo - c_lo) ** 2).mean()) > 20 * float(((n_hi - c_hi) ** 2).mean())


def test_validation_is_fixed_and_has_clean():
    src = SimulatedPairs(n_val=2, val_patch=32)
    (noisy, target, clean), = src.validation()
    assert noisy.shape == (2, 1, 32, 32) and torch.equal(target, clean)
    assert src.validation()[0][0] is noisy


def test_bad_settings_are_sentences():
    with pytest.raises(EmcoreError, match="dose range"):
        SimulatedPairs(dose_range=(0.0, 1.0))
    with pytest.raises(EmcoreError, match="Unknown training noise"):
        SimulatedPairs(noise="speckle")


def test_normalise_round_trip():
    img = np.random.default_rng(0).random((8, 8)).astype(np.float32) * 7
    n, s = normalise(img)
    assert abs(float(n.mean()) - 1.0) < 1e-5
    np.testing.assert_allclose(denormalise(n, s), img, rtol=1e-6)


def test_train_cli_writes_loadable_weights_and_card(tmp_path):
    out = tmp_path / "tiny.pt"
    r = subprocess.run([sys.executable, "-m", "emcore", "train", "unet", "--steps", "12", "--batch", "2", "--patch", "32",
                        "--base", "16", "--scales", "2", "--val-every", "6", "--val-patches", "2", "--device", "cpu",
                        "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    line = json.loads(r.stdout.strip().splitlines()[-1])
    assert line["model"] == "unet" and line["steps"] == 12 and line["status"] == "done"
    card = json.loads(Path(str(out) + ".json").read_text())
    assert card["command"].startswith("python -m emcore train unet") and card["dose_range"] == [0.3, 20.0]
    assert card["validation_psnr_db"] is not None and card["seed"] == 0
    import models
    from emcore.train.weights import load_weights, read_weights

    net = load_weights(models.UNet, out)
    assert isinstance(net, models.UNet) and net.config()["base"] == 16
    assert read_weights(out)["card"]["steps"] == 12
    with pytest.raises(EmcoreError, match="tiny.pt"):
        load_weights(models.DnCNN(depth=17, width=8), out)


def test_train_cli_noise2noise_from_a_stack_and_refusals(tmp_path):
    from emcore import sim

    stack = tmp_path / "movie.npy"
    np.save(stack, sim.movie_example(seed=3, frames=4, size=64, dose=2.0).data, allow_pickle=False)
    base = [sys.executable, "-m", "emcore", "train", "dncnn", "--steps", "2", "--batch", "2", "--patch", "32",
            "--depth", "17", "--width", "8", "--device", "cpu", "--out", str(tmp_path / "n2n.pt")]
    r = subprocess.run(base + ["--source", "frames", "--data", str(stack), "--kind", "stack"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    card = json.loads((tmp_path / "n2n.pt.json").read_text())
    assert card["data"].startswith("Noise2Noise pairs") and card["dose_range"] is None
    r = subprocess.run(base + ["--source", "pairs"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "--data FILE" in r.stderr and "Traceback" not in r.stderr


def test_weights_with_out_of_range_config_give_a_sentence(tmp_path):
    import models
    from emcore.train.weights import load_weights, save_weights

    net = models.UNet(scales=2, base=16)
    path = save_weights(net, tmp_path / "odd.pt", {"note": "edited"})
    import torch

    data = torch.load(path, map_location="cpu", weights_only=True)
    data["config"]["scales"] = 9  # outside 2..6: the constructor refuses it
    torch.save(data, path)
    with pytest.raises(EmcoreError, match="odd.pt"):
        load_weights(models.UNet, path)
