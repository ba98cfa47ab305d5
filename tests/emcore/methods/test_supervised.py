"""dncnn / unet: shipped weights and their card, weights files, training on the user's data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from emcore import Dataset, EmcoreError, sim
from emcore.evaluate.reference import psnr
from emcore.methods.registry import denoise
from emcore.methods.supervised import (
    SHIPPED,
    TrainingPlan,
    load_network,
    save_uploaded_weights,
    train_and_denoise,
    train_network,
    weights_card,
)
from emcore.noise.models import Poisson

TINY = dict(model="unet", scales=2, base=16, steps=3, batch_size=2, patch_size=32, val_every=3)


@pytest.mark.parametrize("name", ["dncnn", "unet"])
def test_shipped_weights_and_card(name):
    path = SHIPPED[name]
    assert path.is_file() and path.stat().st_size < 16 * 2**20, "shipped weights are small files in the repo"
    card = weights_card(name)
    for key in ("command", "steps", "dose_range", "seed", "validation_psnr_db", "data"):
        assert card.get(key) is not None, key
    assert card["command"].startswith("python -m emcore train " + name)
    side = json.loads(path.with_name(path.name + ".json").read_text())
    assert side["steps"] == card["steps"]
    import torch

    raw = torch.load(path, weights_only=True)  # plain tensors and values, no pickled code
    assert raw["model"] == {"dncnn": "DnCNN", "unet": "UNet"}[name]


def test_shipped_unet_beats_bm3d_and_dncnn_on_a_simulated_case():
    clean = sim.hrem_phantom((256, 256), rng=np.random.default_rng(123))
    noisy = Poisson(1.0).sample(clean, np.random.default_rng(7))
    ds = Dataset(noisy, "image", ground_truth=clean, noise=Poisson(1.0), name="validation phantom")
    scores = {m: psnr(denoise(ds, m).data, clean) for m in ("unet", "dncnn", "bm3d")}
    assert scores["unet"] > scores["bm3d"] + 1.0, scores
    assert scores["unet"] > scores["dncnn"], scores
    assert scores["dncnn"] > psnr(noisy, clean) + 5, scores


def test_result_carries_a_differentiable_network_function():
    import torch

    ds = sim.hrem_example(seed=1, dose=1.0, size=128)
    res = denoise(ds, "unet")
    apply = res.artifacts["apply"]
    x = torch.from_numpy(ds.data[:64, :64].copy()).requires_grad_(True)
    y = apply(x)
    assert y.shape == x.shape
    y[32, 32].backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert res.artifacts["receptive_field"] == load_network("unet").receptive_field()


def test_stack_frames_are_denoised_one_by_one():
    mov = sim.movie_example(seed=3, frames=3, size=96, dose=2.0)
    res = denoise(mov, "dncnn")
    one = denoise(Dataset(mov.data[1], "image", name="frame"), "dncnn")
    np.testing.assert_allclose(res.data[1], one.data, rtol=1e-5, atol=1e-5)


def test_weights_for_another_network_or_not_weights_get_a_sentence(tmp_path):
    tr = train_network(TrainingPlan(**TINY), out=tmp_path / "tiny.pt")
    ds = sim.hrem_example(seed=1, dose=1.0, size=64)
    with pytest.raises(EmcoreError, match="holds weights for a UNet .* not for a DnCNN"):
        denoise(ds, "dncnn", weights=str(tr.path))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x04not a state dict")
    with pytest.raises(EmcoreError, match="bad.pt is not a weights file"):
        denoise(ds, "unet", weights=str(bad))
    with pytest.raises(EmcoreError, match="my upload.pt is not a weights file"):
        save_uploaded_weights("unet", b"junk", "../../my upload.pt", tmp_path)
    assert not any(p.name.startswith("..") for p in tmp_path.iterdir())
    good = save_uploaded_weights("unet", tr.path.read_bytes(), "x.pt", tmp_path)
    assert denoise(ds, "unet", weights=good).data.shape == ds.data.shape


def test_training_on_user_data_and_its_refusals(tmp_path):
    mov = sim.movie_example(seed=3, frames=4, size=96, dose=2.0)
    res = train_and_denoise(TrainingPlan(**{**TINY, "source": "frames"}), mov)
    assert res.data.shape == mov.data.shape and res.params["training_data"] == "frames"
    assert res.artifacts["training"] and "Noise2Noise" in res.log[0]
    img = sim.hrem_example(seed=1, dose=1.0, size=64)
    res = train_and_denoise(TrainingPlan(**{**TINY, "source": "pairs"}), img)
    assert res.data.shape == img.data.shape
    with pytest.raises(EmcoreError, match="Noise2Noise needs a stack"):
        train_network(TrainingPlan(**{**TINY, "source": "frames"}), img)
    with pytest.raises(EmcoreError, match="needs a clean version"):
        train_network(TrainingPlan(**{**TINY, "source": "pairs"}), Dataset(img.data, "image", name="raw"))
    with pytest.raises(EmcoreError, match="Load a dataset first"):
        train_network(TrainingPlan(**{**TINY, "source": "pairs"}), None)
    with pytest.raises(EmcoreError, match="smaller than the training patch"):
        train_network(TrainingPlan(**{**TINY, "source": "pairs", "patch_size": 128}), img)
    cube = sim.eds_example(seed=4, counts_per_pixel=5.0, size=16, channels=64)
    with pytest.raises(EmcoreError, match="spectrum image .* dcae3d"):
        train_network(TrainingPlan(**{**TINY, "source": "pairs"}), cube)


def test_stop_request_keeps_a_usable_model(tmp_path):
    calls = []
    tr = train_network(TrainingPlan(**{**TINY, "steps": 50}), out=tmp_path / "s.pt",
                       should_stop=lambda: calls.append(1) or len(calls) > 2)
    assert tr.result.status == "stopped" and tr.result.steps_done < 50
    ds = sim.hrem_example(seed=1, dose=1.0, size=64)
    assert np.isfinite(denoise(ds, "unet", weights=str(tr.path)).data).all()


def test_training_on_the_physics_set_cache(tmp_path):
    import json as _json

    r, c = np.mgrid[0:96, 0:80]
    imgs = np.stack([(0.45 + 0.1 * np.cos(2 * np.pi * r / (8 + i)) * np.cos(2 * np.pi * c / 9)) for i in range(4)])
    np.savez_compressed(tmp_path / "set.npz", images=imgs.astype(np.float32),
                        pixel_size_nm=np.full(4, 0.008, np.float32), wave_index=np.arange(4, dtype=np.int32),
                        defocus_nm=np.zeros(4, np.float32), meta=np.array(_json.dumps({"generator": "test"})))
    tr = train_network(TrainingPlan(**{**TINY, "source": "physics", "cache": str(tmp_path / "set.npz")}),
                       out=tmp_path / "phys.pt")
    assert tr.card["data"].startswith("abTEM multislice") and tr.card["dose_range"] == [0.3, 20.0]
    with pytest.raises(EmcoreError):
        train_network(TrainingPlan(**{**TINY, "source": "physics", "cache": str(tmp_path / "missing.npz")}))


def test_fine_tuning_starts_from_the_shipped_weights_and_records_them(tmp_path):
    from emcore.methods.supervised import SHIPPED, load_network, weights_card

    shipped = load_network("unet")
    # The plan's size (TINY: 2 scales, base 16) is not the shipped one: fine-tuning adopts the
    # shipped network's scales and base channels, as it adopts its prior channel.
    assert (TINY["scales"], TINY["base"]) != (shipped.scales, shipped.base)
    plan = TrainingPlan(**{**TINY, "start_from_shipped": True, "bias_free": not shipped.bias})
    tr = train_network(plan, out=tmp_path / "ft.pt", should_stop=lambda: True)  # stops before the first step
    assert tr.card["config"] == shipped.config()
    assert tr.card["started_from"] == {"weights": SHIPPED["unet"].name, "card": weights_card("unet")}
    tuned = load_network("unet", tr.path)
    for a, b in zip(tuned.state_dict().values(), shipped.state_dict().values()):
        assert torch.equal(a, b)  # no step taken: exactly the shipped weights
    scratch = train_network(TrainingPlan(**{**TINY, "steps": 1}), out=tmp_path / "s.pt")
    assert scratch.card["started_from"] is None


def test_bias_free_fine_tuning_from_biased_shipped_weights_drops_the_constants(tmp_path):
    from emcore.methods.supervised import load_network

    shipped = load_network("unet")
    if not shipped.bias:
        pytest.skip("the shipped UNet is already bias-free")
    plan = TrainingPlan(**{**TINY, "start_from_shipped": True, "scales": shipped.scales, "base": shipped.base,
                           "bias_free": True, "freeze_norm": True, "steps": 2})
    tr = train_network(plan, out=tmp_path / "bf.pt")
    assert tr.card["started_from"]["converted"].startswith("bias-free")
    bf = load_network("unet", tr.path)
    assert not bf.bias and not any(k.endswith((".bias", "running_mean")) for k in bf.state_dict())
    ours, theirs = bf.state_dict(), shipped.state_dict()
    # Frozen norms: two training steps changed the weights but not the running variances.
    assert all(torch.equal(ours[k], theirs[k]) for k in ours if k.endswith("running_var"))
    assert any(not torch.equal(ours[k], theirs[k]) for k in ours if k.endswith(".weight"))
    x = torch.rand(1, bf.in_channels, 32, 32) + 0.5  # with the shipped prior channel: (image, prior)
    with torch.no_grad():
        torch.testing.assert_close(bf(3 * x), 3 * bf(x), rtol=1e-4, atol=1e-5)  # f(ax) = a f(x)
    with pytest.raises(EmcoreError, match="bias-free"):
        TrainingPlan(**{**TINY, "freeze_norm": True})


def test_shipped_bias_free_unet_is_exactly_its_filter(tmp_path):
    """shipped="bias-free" runs the bias-free UNet: its output at a pixel is exactly the filter
    the Jacobian view shows applied to the input (f(x) = J(x) x), unlike the standard UNet."""
    from emcore.evaluate.filter_view import pixel_filter
    from emcore.methods.supervised import SHIPPED_BIAS_FREE

    path = SHIPPED_BIAS_FREE["unet"]
    assert path.is_file() and path.stat().st_size < 16 * 2**20
    card = weights_card("unet", path)
    assert card["config"]["bias"] is False and card["command"].startswith("OMP_NUM_THREADS=2 python benchmarks/")
    assert card["started_from"]["converted"].startswith("bias-free") and len(card["stages"]) == 2
    ds = sim.hrem_example(seed=0, dose=1.0, size=128)
    bf = denoise(ds, "unet", device="cpu", shipped="bias-free")
    assert bf.params["shipped"] == "bias-free" and "unet32_bf.pt" in bf.log[0]
    assert psnr(bf.data, ds.ground_truth) > psnr(ds.data, ds.ground_truth) + 10
    f = pixel_filter(bf.artifacts, ds.data, 40, 70)
    assert f.linear_estimate == pytest.approx(f.output, rel=1e-4)
    std = denoise(ds, "unet", device="cpu")
    g = pixel_filter(std.artifacts, ds.data, 40, 70)
    assert abs(g.linear_estimate - g.output) > 0.05 * abs(g.output)  # the standard UNet has an offset
    # A weights file, when given, wins over the choice of shipped weights.
    own = denoise(ds, "unet", device="cpu", shipped="bias-free", weights=str(SHIPPED["unet"]))
    np.testing.assert_array_equal(own.data, std.data)
    with pytest.raises(EmcoreError):
        denoise(ds, "unet", device="cpu", shipped="biased")


# -- networks with a prior channel (issue 17) ----------------------------------------------


def _reference_crop(shared_data, side=256):
    import tifffile

    clean = tifffile.imread(shared_data / "hrem" / "ptceo2_sim_clean_1.tif").astype(np.float32)
    h, w = clean.shape
    return clean[h // 2 - side // 2:h // 2 + side // 2, w // 2 - side // 2:w // 2 + side // 2].copy()


def test_shipped_networks_beat_bm3d_on_a_reference_pt_ceo2_crop(shared_data):
    """The shipped UNet and DnCNN against BM3D given the true noise, on a multislice Pt/CeO₂
    image no one trained on (Poisson–Gaussian a = 0.05, b = 0.02, fixed seed, 256² crop). Measured:
    UNet +4.8 dB, DnCNN +4.2 dB; stated margins +4 and +2 dB (the benchmark's figures are medians
    over 512² crops and whole images, benchmarks/RESULTS.md)."""
    from emcore.noise.models import PoissonGaussian

    clean = _reference_crop(shared_data)
    noise = PoissonGaussian(0.05, 0.02)
    noisy = noise.sample(clean, np.random.default_rng(0))
    score = {m: psnr(denoise(Dataset(noisy, "image", noise=noise if m == "bm3d" else None), m, device="cpu").data,
                     clean) for m in ("bm3d", "unet", "dncnn")}
    assert score["unet"] > score["bm3d"] + 4.0, score
    assert score["dncnn"] > score["bm3d"] + 2.0, score


@pytest.mark.parametrize("name", ["dncnn", "unet"])
def test_shipped_cards_are_complete(name):
    card = weights_card(name)
    assert card["config"]["prior"] is True and card["prior"] == "wiener"
    for key in ("command", "steps", "seed", "validation_psnr_db", "data", "data_set", "seconds"):
        assert card.get(key) is not None, key
    assert card["data_set"]["generator"] == "benchmarks/make_abtem_set.py"
    assert card["data_set"]["settings"]["generator_version"] >= 1 and card["data_set"]["images"] > 0
    # What it started from: a one-channel network widened by the prior channel (the DnCNN), or
    # nothing, said so (the UNet of 24 base channels, trained from scratch).
    assert "started_from" in card
    if card["started_from"] is None:
        assert "--finetune" not in card["command"] and "--start-from" not in card["command"]
    else:
        assert card["started_from"]["converted"].startswith("prior channel added")
    assert sum(p.stat().st_size for p in SHIPPED["unet"].parent.glob("*.pt")) < 30 * 2**20


def _prior_unet_file(tmp_path):
    import models
    from emcore.train.weights import save_weights

    torch.manual_seed(0)
    net = models.UNet(in_channels=2, scales=2, base=16, prior=True)
    torch.nn.init.normal_(net.head.weight, std=0.1)  # a correction that is not zero
    path = tmp_path / "prior_unet.pt"
    save_weights(net, path, {"model": "unet"})
    return path


def test_prior_network_tiled_equals_whole_image_away_from_borders(tmp_path):
    ds = sim.hrem_example(seed=2, dose=2.0, size=200)
    path = _prior_unet_file(tmp_path)
    whole = denoise(ds, "unet", device="cpu", weights_source="file", weights=str(path), tile=256, overlap=0)
    tiled = denoise(ds, "unet", device="cpu", weights_source="file", weights=str(path), tile=96, overlap=48)
    assert any("Prior channel" in line for line in whole.log) and whole.params["prior_window"] is not None
    rf = load_network("unet", path).receptive_field()
    np.testing.assert_allclose(tiled.data[rf:-rf, rf:-rf], whole.data[rf:-rf, rf:-rf], rtol=1e-4, atol=1e-4)
    # The output is the Wiener prior plus the network's correction.
    prior = denoise(ds, "wiener", device="cpu")
    assert 0 < np.abs(whole.data - prior.data).mean() < 0.5 * np.abs(ds.data - prior.data).mean()


def test_prior_network_filter_view_holds_the_prior_fixed(tmp_path):
    from emcore.evaluate.filter_view import pixel_filter

    ds = sim.hrem_example(seed=3, dose=2.0, size=96)
    res = denoise(ds, "unet", device="cpu", weights_source="file", weights=str(_prior_unet_file(tmp_path)))
    f = pixel_filter(res.artifacts, ds.data, 50, 40, method="unet")
    assert f.output == pytest.approx(float(res.data[50, 40]), rel=1e-4)
    assert "prior" in f.note and float(np.abs(f.weights).sum()) > 0


def test_fine_tuning_a_prior_network_on_the_users_pairs_keeps_the_prior(tmp_path):
    ds = sim.hrem_example(seed=4, dose=2.0, size=96)
    plan = TrainingPlan(**{**TINY, "source": "pairs", "steps": 2, "prior": "wiener"})
    tr = train_network(plan, ds, out=tmp_path / "p.pt")
    net = load_network("unet", tr.path)
    assert net.prior and net.in_channels == 2 and tr.card["prior"] == "wiener"
    res = denoise(ds, "unet", device="cpu", weights_source="file", weights=str(tr.path))
    assert res.data.shape == ds.data.shape and np.isfinite(res.data).all()


def test_fine_tuning_from_a_given_weights_file_records_it(tmp_path):
    first = train_network(TrainingPlan(**{**TINY, "steps": 1}), out=tmp_path / "first.pt")
    plan = TrainingPlan(**{**TINY, "start_from_shipped": True})
    tr = train_network(plan, out=tmp_path / "second.pt", start_from=first.path, should_stop=lambda: True)
    assert tr.card["started_from"]["weights"] == "first.pt"
    assert tr.card["started_from"]["card"]["steps"] == first.card["steps"]
    for a, b in zip(load_network("unet", tr.path).state_dict().values(),
                    load_network("unet", first.path).state_dict().values()):
        assert torch.equal(a, b)
