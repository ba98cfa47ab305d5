"""Tests for the one training loop, weights files and tiled inference (emcore.train).

Everything runs on the CPU in seconds with a three-layer convolutional net on a denoising
toy (smooth images plus Gaussian noise); the CUDA tests at the end are skipped without a GPU.
"""

from __future__ import annotations

import math
import pickle
import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from torch import nn

from emcore.errors import EmcoreError, Stopped
from emcore.methods.tiling import tile_weights, tiled_apply
from emcore.progress import Progress
from emcore.train.config import TrainConfig, learning_rate, select_device
from emcore.train.loop import train
from emcore.train.losses import MSELoss, PoissonNLLLoss
from emcore.train.weights import load_weights, read_weights, save_weights

SIGMA = 0.2  # noise standard deviation of the toy; an identity "denoiser" scores SIGMA**2


# Tiny convolutions on a shared 2-core machine run ~10x faster single-threaded.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


class TinyNet(nn.Module):
    """Three 3x3 conv layers predicting the noise (residual learning); receptive field 7 px."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.channels = channels
        c = channels
        self.body = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
            nn.Conv2d(c, 1, 3, padding=1),
        )

    def forward(self, x):
        return x - self.body(x)

    def config(self):
        return {"channels": self.channels}


class OtherNet(nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        self.width = width
        self.conv = nn.Conv2d(1, 1, width, padding="same")

    def forward(self, x):
        return self.conv(x)

    def config(self):
        return {"width": self.width}


class SmoothSource:
    """Random crops of a fixed smooth image plus Gaussian noise; targets are the clean crops."""

    def __init__(self, size: int = 160, seed: int = 0, n_val: int = 4, val_patch: int = 32):
        r = np.random.default_rng(seed)
        im = gaussian_filter(r.standard_normal((size, size)), 4)
        self.image = ((im - im.min()) / (im.max() - im.min())).astype(np.float32)
        vr = np.random.default_rng(seed + 1)
        clean = np.stack([self.image[30 * i:30 * i + val_patch, 7:7 + val_patch] for i in range(n_val)])[:, None]
        noisy = (clean + SIGMA * vr.standard_normal(clean.shape)).astype(np.float32)
        self.val = [(torch.from_numpy(noisy), torch.from_numpy(clean), torch.from_numpy(clean))]
        self.calls = 0
        self.shapes: list[tuple[int, int]] = []

    def batch(self, batch_size, patch_size, rng):
        self.calls += 1
        self.shapes.append((batch_size, patch_size))
        n = self.image.shape[0]
        ys = rng.integers(0, n - patch_size + 1, batch_size)
        xs = rng.integers(0, n - patch_size + 1, batch_size)
        clean = np.stack([self.image[y:y + patch_size, x:x + patch_size] for y, x in zip(ys, xs)])[:, None]
        noisy = (clean + SIGMA * rng.standard_normal(clean.shape)).astype(np.float32)
        return torch.from_numpy(noisy), torch.from_numpy(clean)

    def validation(self):
        return self.val


class NoValSource(SmoothSource):
    validation = None


class NaNSource(SmoothSource):
    """Feeds a NaN batch at call ``nan_at`` (i.e. at that training step)."""

    def __init__(self, nan_at: int, **kw):
        super().__init__(**kw)
        self.nan_at = nan_at

    def batch(self, batch_size, patch_size, rng):
        x, y = super().batch(batch_size, patch_size, rng)
        if self.calls == self.nan_at:
            x = torch.full_like(x, float("nan"))
        return x, y


class OOMSource(SmoothSource):
    """Simulates running out of GPU memory when batch * patch**2 exceeds a pixel budget."""

    def __init__(self, max_pixels: int, **kw):
        super().__init__(**kw)
        self.max_pixels = max_pixels
        self.ooms = 0

    def batch(self, batch_size, patch_size, rng):
        if batch_size * patch_size**2 > self.max_pixels:
            self.ooms += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return super().batch(batch_size, patch_size, rng)


class RecordingLoss(MSELoss):
    """MSE that records the value of every training-step call (validation runs without grad)."""

    def __init__(self):
        self.values: list[float] = []

    def __call__(self, output, target, mask=None):
        value = super().__call__(output, target, mask)
        if torch.is_grad_enabled():
            self.values.append(float(value.detach()))
        return value


def fast_config(**kw) -> TrainConfig:
    base = dict(steps=40, batch_size=8, patch_size=32, lr=3e-3, val_every=10, device="cpu", seed=0)
    base.update(kw)
    return TrainConfig(**base)


def fresh_model(seed: int = 0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet()


def states_equal(a: dict, b: dict, atol: float = 0.0) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k].cpu(), b[k].cpu(), atol=atol, rtol=0) for k in a)


# ---------------------------------------------------------------- config, device, loss


def test_config_validation_sentences():
    with pytest.raises(EmcoreError, match="budget"):
        TrainConfig(steps=None, max_seconds=None)
    with pytest.raises(EmcoreError, match="schedule"):
        TrainConfig(schedule="linear")
    with pytest.raises(EmcoreError, match="batch size"):
        TrainConfig(batch_size=2, min_batch=4)
    with pytest.raises(EmcoreError, match="learning rate"):
        TrainConfig(lr=-1)
    with pytest.raises(EmcoreError, match="device"):
        TrainConfig(device="tpu")
    with pytest.raises(EmcoreError, match="steps"):
        TrainConfig(steps=0)
    cfg = TrainConfig(steps=None, max_seconds=5)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_select_device():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type in ("cpu", "cuda", "mps")
    if not torch.cuda.is_available():
        with pytest.raises(EmcoreError, match="CUDA"):
            select_device("cuda")
    with pytest.raises(EmcoreError, match="Unknown device"):
        select_device("tpu")


def test_schedules():
    cos = TrainConfig(steps=100, lr=1.0, schedule="cosine", warmup_steps=10)
    assert learning_rate(cos, 1, 0.0) == pytest.approx(0.1)  # warm-up
    assert learning_rate(cos, 10, 0.09) == pytest.approx((1 + math.cos(math.pi * 0.09)) / 2)
    assert learning_rate(cos, 100, 0.99) < 0.01
    const = TrainConfig(steps=100, lr=0.5, schedule="constant")
    assert learning_rate(const, 50, 0.5) == 0.5
    one = TrainConfig(steps=100, lr=1.0, schedule="onecycle")
    assert learning_rate(one, 1, 0.0) == pytest.approx(1 / 25)
    assert learning_rate(one, 31, 0.3) == pytest.approx(1.0)
    assert learning_rate(one, 100, 1.0) == pytest.approx(1 / 25 / 1e4)


def test_losses_masked_and_poisson():
    out = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    tgt = torch.zeros_like(out)
    mask = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    assert float(MSELoss()(out, tgt)) == pytest.approx(7.5)
    assert float(MSELoss()(out, tgt, mask)) == pytest.approx((1 + 16) / 2)
    counts = torch.tensor([[[[0.0, 1.0], [3.0, 7.0]]]])
    lograte = torch.log(torch.tensor([[[[0.5, 1.0], [2.0, 6.0]]]]))
    ref = nn.functional.poisson_nll_loss(lograte, counts, log_input=True)
    assert float(PoissonNLLLoss(link="log")(lograte, counts)) == pytest.approx(float(ref), rel=1e-6)
    rate = torch.tensor([[[[0.5, 1.0], [2.0, 6.0]]]])
    soft = PoissonNLLLoss(link="softplus")(torch.log(torch.expm1(rate)), counts)  # softplus^-1(rate)
    assert float(soft) == pytest.approx(float(ref), rel=1e-4)
    masked = PoissonNLLLoss(link="log")(lograte, counts, mask)
    per_pixel = torch.exp(lograte) - counts * lograte
    assert float(masked) == pytest.approx(float((per_pixel[0, 0, 0, 0] + per_pixel[0, 0, 1, 1]) / 2))
    with pytest.raises(EmcoreError):
        PoissonNLLLoss(link="identity")


# -------------------------------------------------------------------------- training


def test_training_lowers_loss_and_improves_psnr(tmp_path):
    source = SmoothSource()
    reports: list[Progress] = []
    model = fresh_model()
    result = train(model, source, MSELoss(), fast_config(steps=150, val_every=25), progress=reports.append,
                   checkpoint_dir=tmp_path)
    assert result.status == "done" and result.steps_done == 150
    first, last = result.history[0]["train_loss"], result.history[-1]["train_loss"]
    assert first > 3 * last, (first, last)  # the toy is denoised, not just fitted: >= 3x lower loss
    assert last < SIGMA**2 / 3  # better than the identity by 3x
    vals = [h for h in result.history if h["val_psnr"] is not None]
    assert len(vals) == 6
    noisy, clean, _ = source.val[0]
    noisy_psnr = float(np.mean([10 * math.log10(float(c.max() - c.min()) ** 2 / float(((n - c) ** 2).mean()))
                                for n, c in zip(noisy, clean)]))
    assert vals[-1]["val_psnr"] > vals[0]["val_psnr"] - 0.5
    assert max(v["val_psnr"] for v in vals) > noisy_psnr + 3  # a real denoising gain in dB
    assert result.input_psnr == pytest.approx(noisy_psnr, abs=1e-3) and result.warning is None
    assert reports[-1].metrics["input_psnr"] == pytest.approx(noisy_psnr, abs=1e-3)
    # the model holds the best weights, and progress carried the validation metrics
    best = torch.load(tmp_path / "best.pt", map_location="cpu", weights_only=True)
    assert best["step"] == result.best_step
    assert states_equal(model.state_dict(), best["state_dict"])
    assert any("val_psnr" in p.metrics and "train" in p.losses for p in reports)
    assert reports[-1].step == 150 and reports[-1].total == 150
    assert "best model" in result.message and result.device == "cpu"
    assert all(p.total == 150 for p in reports)
    steps = [p.step for p in reports]
    assert steps == sorted(steps)


def test_a_network_worse_than_its_input_is_flagged():
    """Too few steps from a random start: the output is further from the clean images than the
    noisy input is; the result says so instead of passing garbage on silently."""
    torch.manual_seed(0)
    model = OtherNet(width=5)
    result = train(model, SmoothSource(), MSELoss(), fast_config(steps=2, lr=1e-6, val_every=2))
    kept = [h["val_psnr"] for h in result.history if h["val_psnr"] is not None][-1]
    assert kept < result.input_psnr
    assert result.warning is not None and "worse than its noisy input" in result.warning
    assert f"{result.input_psnr:.1f} dB" in result.warning and result.warning in result.message


def test_stop_after_k_steps_keeps_usable_best_model(tmp_path):
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 17  # checked before each step: 17 steps are taken

    model = fresh_model()
    result = train(model, SmoothSource(), MSELoss(), fast_config(steps=100), should_stop=stop, checkpoint_dir=tmp_path)
    assert result.status == "stopped"
    assert result.steps_done == 17
    assert "17 of 100" in result.message and "best model" in result.message
    assert result.best_step in (10, 17)  # the stop validated step 17 as a candidate too
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert states_equal(model.state_dict(), best["state_dict"])
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["step"] == 17
    with torch.no_grad():
        out = model(torch.zeros(1, 1, 24, 24))
    assert out.shape == (1, 1, 24, 24) and torch.isfinite(out).all()


def test_checkpoint_reads_back_with_weights_only(tmp_path):
    train(fresh_model(), SmoothSource(), MSELoss(), fast_config(steps=12), checkpoint_dir=tmp_path)
    ck = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)
    for key in ("state_dict", "optimizer", "scheduler", "step", "torch_rng", "numpy_rng", "config",
                "model", "model_config", "history"):
        assert key in ck
    assert ck["step"] == 12 and ck["model"] == "TinyNet" and ck["model_config"] == {"channels": 8}
    assert ck["config"]["steps"] == 12
    rng = np.random.default_rng()
    rng.bit_generator.state = ck["numpy_rng"]  # the generator state round-trips as plain ints
    assert isinstance(ck["numpy_rng"]["state"]["state"], int)


def test_resume_reproduces_uninterrupted_run(tmp_path):
    full_loss = RecordingLoss()
    full_model = fresh_model()
    full = train(full_model, SmoothSource(), full_loss, fast_config(), checkpoint_dir=tmp_path / "a")

    part_loss = RecordingLoss()
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 15

    part = train(fresh_model(), SmoothSource(), part_loss, fast_config(), should_stop=stop, checkpoint_dir=tmp_path / "b")
    assert part.status == "stopped" and part.steps_done == 15

    rest_loss = RecordingLoss()
    rest = train(fresh_model(seed=123), SmoothSource(), rest_loss, fast_config(), checkpoint_dir=tmp_path / "b",
                 resume=True)
    assert rest.status == "done" and rest.steps_done == 40
    assert len(part_loss.values) == 15 and len(rest_loss.values) == 25
    np.testing.assert_allclose(part_loss.values + rest_loss.values, full_loss.values, rtol=1e-5, atol=1e-7)
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    assert states_equal(a["state_dict"], b["state_dict"], atol=1e-6)
    assert rest.history[-1]["val_loss"] == pytest.approx(full.history[-1]["val_loss"], rel=1e-5)
    assert any("Resumed" in line for line in rest.log)


def test_resume_without_checkpoint_is_a_plain_error(tmp_path):
    with pytest.raises(EmcoreError, match="Cannot resume"):
        train(fresh_model(), SmoothSource(), MSELoss(), fast_config(), checkpoint_dir=tmp_path, resume=True)


def test_resume_with_another_architecture_is_refused(tmp_path):
    train(fresh_model(), SmoothSource(), MSELoss(), fast_config(steps=10), checkpoint_dir=tmp_path)
    with pytest.raises(EmcoreError, match="TinyNet with channels 8, not for a TinyNet with channels 4"):
        train(TinyNet(channels=4), SmoothSource(), MSELoss(), fast_config(steps=20), checkpoint_dir=tmp_path,
              resume=True)


def test_nan_loss_stops_and_keeps_best(tmp_path):
    model = fresh_model()
    lines: list[str] = []
    result = train(model, NaNSource(nan_at=25), MSELoss(), fast_config(steps=100), checkpoint_dir=tmp_path, log=lines)
    assert result.status == "diverged"
    assert result.steps_done == 24
    assert result.best_step in (10, 20)
    assert "NaN at step 25" in result.message
    assert f"best model (step {result.best_step}" in result.message
    assert "lower the learning rate" in result.message
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["step"] == result.best_step
    assert states_equal(model.state_dict(), best["state_dict"])
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    assert lines and lines[-1] == result.message


def test_nan_before_any_validation_resets_to_start():
    model = fresh_model()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    result = train(model, NaNSource(nan_at=3), MSELoss(), fast_config(steps=100))
    assert result.status == "diverged" and result.best_step == 0
    assert "starting weights" in result.message
    assert states_equal(model.state_dict(), start)


def test_out_of_memory_halves_batch_then_patch():
    # 8 x 32^2 and 4 x 32^2 and 2 x 32^2 do not fit; 2 x 16^2 does.
    source = OOMSource(max_pixels=2 * 16 * 16)
    reports: list[Progress] = []
    lines: list[str] = []
    result = train(fresh_model(), source, MSELoss(),
                   fast_config(steps=5, batch_size=8, patch_size=32, min_batch=2, min_patch=16),
                   progress=reports.append, log=lines)
    assert result.status == "done" and result.steps_done == 5
    assert (result.batch_size, result.patch_size) == (2, 16)
    assert source.ooms == 3
    assert set(source.shapes) == {(2, 16)}
    oom_lines = [ln for ln in lines if ln.startswith("Out of memory")]
    assert len(oom_lines) == 3
    assert "continuing with batch 4" in oom_lines[0]
    assert "continuing with batch 2" in oom_lines[1]
    assert "continuing with 16-px patches" in oom_lines[2]
    assert sum("Out of memory" in p.message for p in reports) == 3


def test_out_of_memory_gives_up_when_nothing_can_shrink():
    source = OOMSource(max_pixels=10)
    with pytest.raises(EmcoreError, match="Out of memory .* even with a batch of 2 and 16-px patches"):
        train(fresh_model(), source, MSELoss(), fast_config(steps=5, batch_size=4, min_batch=2, patch_size=32))


def test_max_seconds_budget_is_respected():
    t0 = time.perf_counter()
    reports: list[Progress] = []
    result = train(fresh_model(), NoValSource(), MSELoss(), fast_config(steps=None, max_seconds=1.0, val_every=20),
                   progress=reports.append)
    wall = time.perf_counter() - t0
    assert result.status == "done"
    assert result.steps_done > 5
    assert 1.0 <= result.seconds < 2.0
    assert wall < 4.0
    assert "time budget" in result.message
    assert result.best_on == "train_loss" and result.best_val is not None
    assert reports[-1].total == result.steps_done
    assert all(h["val_loss"] is None for h in result.history)


def test_log_callable_and_history_fields():
    got: list[str] = []
    result = train(fresh_model(), SmoothSource(), MSELoss(), fast_config(steps=20), log=got.append)
    assert got[0].startswith("Training on cpu")
    assert tuple(got) == result.log
    h = result.history[-1]
    assert set(h) == {"step", "train_loss", "val_loss", "val_psnr", "lr", "seconds"}
    assert h["step"] == 20


class MaskedSource(SmoothSource):
    """Self-supervised style: noisy targets, loss only on a random quarter of the pixels."""

    def batch(self, batch_size, patch_size, rng):
        noisy, _ = super().batch(batch_size, patch_size, rng)
        mask = torch.from_numpy((rng.random(noisy.shape) < 0.25).astype(np.float32))
        return noisy, noisy, mask

    def validation(self):
        noisy, clean, _ = self.val[0]
        return [(noisy, noisy, torch.ones_like(noisy), None)]


def test_masked_batches_and_validation_without_clean():
    loss = RecordingLoss()
    result = train(fresh_model(), MaskedSource(), loss, fast_config(steps=20))
    assert result.status == "done" and len(loss.values) == 20
    vals = [h for h in result.history if h["val_loss"] is not None]
    assert vals and all(h["val_psnr"] is None for h in vals)
    assert result.best_on == "val_loss"


# --------------------------------------------------------------------------- weights


def test_weights_round_trip(tmp_path):
    model = fresh_model()
    train(model, SmoothSource(), MSELoss(), fast_config(steps=10))
    card = {"method": "n2c", "trained_on": "toy", "psnr": 21.5, "tags": ["a", "b"]}
    path = save_weights(model, tmp_path / "w.pt", card)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == "emcore-weights-1" and raw["model"] == "TinyNet" and raw["config"] == {"channels": 8}
    assert read_weights(path)["card"] == card
    x = torch.rand(1, 1, 20, 20)
    rebuilt = load_weights(TinyNet, path)
    filled = load_weights(TinyNet(channels=8), path)
    with torch.no_grad():
        ref = model.cpu().eval()(x)
        assert torch.allclose(rebuilt(x), ref) and torch.allclose(filled(x), ref)


def test_weights_for_another_architecture_name_the_file(tmp_path):
    path = save_weights(TinyNet(channels=8), tmp_path / "tiny8.pt", {})
    with pytest.raises(EmcoreError, match=r"tiny8\.pt holds weights for a TinyNet with channels 8, not for a TinyNet with channels 4"):
        load_weights(TinyNet(channels=4), path)
    with pytest.raises(EmcoreError, match=r"tiny8\.pt holds weights for a TinyNet with channels 8, not for an OtherNet"):
        load_weights(OtherNet(), path)
    with pytest.raises(EmcoreError, match=r"tiny8\.pt holds weights for a TinyNet"):
        load_weights(OtherNet, path)


def test_weights_with_wrong_tensors_name_the_file(tmp_path):
    class NoConfig(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv = nn.Conv2d(1, c, 3)

    path = save_weights(NoConfig(4), tmp_path / "noconf.pt", {})
    with pytest.raises(EmcoreError, match=r"noconf\.pt does not fit this NoConfig: .*conv\.weight"):
        load_weights(NoConfig(5), path)


@dataclass
class _Custom:
    value: int = 1


def test_not_a_weights_file_names_the_file(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(np.random.default_rng(0).bytes(1000))
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    other_dict = tmp_path / "dict.pt"
    torch.save({"state_dict": {}}, other_dict)
    pickled = tmp_path / "pickled.pt"
    with open(pickled, "wb") as fh:
        pickle.dump({"format": "emcore-weights-1", "obj": _Custom()}, fh)
    for path in (garbage, tensor, other_dict, pickled):
        with pytest.raises(EmcoreError, match=rf"{path.name} is not a weights file saved by this workbench"):
            load_weights(TinyNet, path)
    with pytest.raises(EmcoreError, match="does not exist"):
        load_weights(TinyNet, tmp_path / "missing.pt")


# --------------------------------------------------------------------- tiled inference


def mean5(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.conv2d(x, torch.full((1, 1, 5, 5), 1 / 25, device=x.device), padding=2)


def test_tiled_apply_matches_whole_image_away_from_borders():
    img = np.random.default_rng(1).random((300, 261)).astype(np.float32)
    before = img.copy()
    seen = []

    def fn(x):
        seen.append(tuple(x.shape))
        return mean5(x)

    out = tiled_apply(fn, img, tile=64, step=48, batch=3)
    whole = mean5(torch.from_numpy(img)[None, None])[0, 0].numpy()
    assert out.shape == img.shape and out.dtype == np.float32
    np.testing.assert_allclose(out[2:-2, 2:-2], whole[2:-2, 2:-2], atol=1e-5)
    np.testing.assert_array_equal(img, before)
    assert max(s[0] for s in seen) <= 3  # never more than `batch` tiles at once
    assert all(s[1:] == (1, 64, 64) for s in seen)


def test_tiled_apply_default_tiles_and_stack():
    stack = np.random.default_rng(2).random((2, 500, 420)).astype(np.float32)
    out = tiled_apply(mean5, stack, batch=2)  # Mohan et al. defaults: 400-px tiles, 350-px step
    for frame, res in zip(stack, out):
        whole = mean5(torch.from_numpy(frame)[None, None])[0, 0].numpy()
        np.testing.assert_allclose(res[2:-2, 2:-2], whole[2:-2, 2:-2], atol=1e-5)


def test_tiled_apply_partition_of_unity_and_small_images():
    ones = tiled_apply(torch.ones_like, np.zeros((333, 250), np.float32), tile=96, step=60)
    np.testing.assert_allclose(ones, 1.0, atol=1e-6)
    for first, last in ((True, False), (False, False), (False, True)):
        w = tile_weights(96, 36, 9, first, last)
        assert w.min() >= 0 and w.max() <= 1
    left, right = tile_weights(96, 36, 9, True, False), tile_weights(96, 36, 9, False, True)
    np.testing.assert_allclose(left[60:] + right[:36], 1.0, atol=1e-12)
    assert left[-9:].max() == 0 and right[:9].max() == 0  # guard band hides tile edges
    shapes = []

    def identity(x):
        shapes.append(tuple(x.shape))
        return x

    small = np.random.default_rng(3).random((20, 30)).astype(np.float32)
    out = tiled_apply(identity, small)
    np.testing.assert_allclose(out, small)
    assert shapes == [(1, 1, 32, 32)]  # padded up to a multiple of 16, not to 400


def test_tiled_apply_infers_module_device_and_stops():
    model = fresh_model().eval()
    img = np.random.default_rng(4).random((100, 100)).astype(np.float32)
    out = tiled_apply(model, img, tile=64, step=48)
    with torch.no_grad():
        whole = model(torch.from_numpy(img)[None, None])[0, 0].numpy()
    np.testing.assert_allclose(out[4:-4, 4:-4], whole[4:-4, 4:-4], atol=1e-5)
    with pytest.raises(Stopped):
        tiled_apply(model, img, tile=64, step=48, should_stop=lambda: True)
    with pytest.raises(EmcoreError, match="step"):
        tiled_apply(model, img, tile=64, step=16)


# ------------------------------------------------------------------------------ CUDA


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


class DtypeRecorder(TinyNet):
    def __init__(self):
        super().__init__(channels=16)
        self.dtypes: set = set()

    def forward(self, x):
        y = self.body(x)
        self.dtypes.add(y.dtype)
        return x - y


@cuda
def test_cuda_bf16_autocast_trains():
    model = DtypeRecorder()
    result = train(model, SmoothSource(), MSELoss(), fast_config(steps=60, device="cuda", amp=True))
    assert result.device.startswith("cuda")
    assert torch.bfloat16 in model.dtypes
    assert result.status == "done"
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] / 3
    assert next(model.parameters()).dtype == torch.float32  # master weights stay float32


@cuda
def test_cuda_amp_off_is_float32():
    model = DtypeRecorder()
    train(model, SmoothSource(), MSELoss(), fast_config(steps=5, device="cuda", amp=False))
    assert model.dtypes == {torch.float32}


@cuda
def test_cuda_memory_stays_bounded_across_steps():
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    allocated: list[tuple[int, int]] = []

    def watch(p: Progress):
        allocated.append((p.step, torch.cuda.memory_allocated()))

    model = TinyNet(channels=32)
    train(model, SmoothSource(size=256), MSELoss(),
          fast_config(steps=200, device="cuda", batch_size=16, patch_size=64, val_every=20), progress=watch)
    early = max(a for s, a in allocated if 20 <= s <= 60)
    late = max(a for s, a in allocated if s >= 150)
    assert late <= early * 1.05 + 2**20, (early, late)  # no growth step after step
    peak = torch.cuda.max_memory_allocated()
    assert peak < 512 * 2**20  # a tiny net on 16 x 64^2 patches stays far below 0.5 GiB


# --------------------------------------------------------------------------- ETA


class SlowSource(SmoothSource):
    """Each batch costs ``delay`` seconds more: the step rate is set by the test, not the machine."""

    def __init__(self, delay: float):
        super().__init__()
        self.delay = delay

    def batch(self, batch_size, patch_size, rng):
        time.sleep(self.delay)
        return super().batch(batch_size, patch_size, rng)


def test_eta_comes_from_the_measured_step_rate():
    def late_etas(delay: float) -> list[float]:
        reports: list[Progress] = []
        train(fresh_model(), SlowSource(delay), MSELoss(), fast_config(steps=24, batch_size=2, patch_size=16,
                                                                        val_every=100), progress=reports.append)
        late = [p for p in reports if p.eta is not None and 8 <= p.step <= 16]
        assert late, "no progress report with an ETA mid-run"
        # what is left at the measured rate of this run so far
        for p in late:
            assert p.eta == pytest.approx(p.elapsed / p.step * (24 - p.step), rel=0.6)
        return [p.eta / (24 - p.step) for p in late]

    fast, slow = late_etas(0.02), late_etas(0.10)
    assert min(slow) > 2 * max(fast)  # five times slower steps: a proportionally longer ETA
