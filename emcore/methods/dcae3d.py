"""3D-DCAE: self-supervised denoising of EDS spectrum images with a 3-D convolutional
autoencoder, with or without the HAADF image.

Taylor, Chen, Zheng & Browning [1]_ extend Noise2Self [2]_ to hyperspectral EDS: a 3-D
convolutional autoencoder (:class:`models.DCAE3D`) is trained on the user's own noisy cube
to reconstruct it from a Bernoulli-masked copy — a fraction ``p`` of the voxels is hidden
(replaced by zero or by the mean of their neighbours) and the loss is computed on the hidden
voxels only. Because the noise of a voxel is independent of the noise of every other voxel,
the only way to predict a hidden voxel is from the signal its neighbours share with it
(Batson & Royer 2019, Sec. 3, J-invariance), so the minimiser is the denoised cube. Once
trained, the full noisy cube is the input and the output is the denoised cube.

The HAADF image, recorded at the same time on the same pixel grid, enters as an extra,
never-masked input channel broadcast along energy ("pansharpening" [1]_): its noise is
independent of the EDS noise, so the masked-voxel objective stays valid, and it tells the
network where the particle edges are, which the few X-ray counts per pixel cannot.

Around the network (this module):

* **spectral preparation** — the energy axis is cropped to the channels that hold counts
  (and to a user range), channels are summed in bins so that the network sees at most
  ~128 (``fast``) or ~256 (``quality``) channels, and the result is spread back over the
  original channels in proportion to the summed spectrum of the whole cube within each
  bin, which keeps the line shapes that binning would blur; channels with no count in the
  whole cube stay exactly zero;
* **count normalisation** — counts are divided by their mean per voxel; the network output
  goes through a softplus to a non-negative rate (the identity for processed data with
  negative values); the loss is the Poisson negative log-likelihood (default: EDS voxels
  hold a handful of counts) or the squared error;
* **context channels** — the summed spectrum (log scale) broadcast over the map, which
  tells the translation-equivariant convolutions where on the energy axis they are, and
  the HAADF image;
* **training** — random spatial crops with the whole prepared energy axis, flips and
  transposes, through :func:`emcore.train.train` (budgets, stop, resume, GPU with bf16
  autocast, out-of-memory fallback); a fixed random set of voxels is never a training
  target and serves as validation (the Noise2Self loss on held-out voxels);
* **inference** — the whole cube at once, or spatial tiles blended with raised-cosine
  weights when it would not fit in memory.

References
----------
.. [1] R. Taylor, Y. Chen, H. Zheng, N. D. Browning, "Deep learning-based blind denoising for
   enhancing energy-dispersive X-ray spectroscopy (EDS) images", Microscopy and
   Microanalysis (conference abstract).
.. [2] J. Batson, L. Royer, "Noise2Self: Blind Denoising by Self-Supervision", ICML 2019.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emcore.data.dataset import Dataset
from emcore.data.display import energy_window_map
from emcore.errors import EmcoreError
from emcore.methods.dcae3d_data import (
    _OFFSET_FLOOR,
    _SCALE_FLOOR,
    MaskedCubeSource,
    Prepared,
    _energy_window,
    _spectrum_channel,
    _standardise,
    prepare_cube,
    spread_back,
)
from emcore.methods.lesson import Box, Curve, Lesson, LessonFigure, Panel, spectrum_example
from emcore.methods.registry import FilterViewSpec, Method, Param, RunContext, register
from emcore.progress import Progress

# Settings of the two presets. `channels`: the most channels the network sees after
# binning; `max_minutes`: wall-clock training budget on the CPU (none on a GPU).
PRESETS: dict[str, dict] = {
    "fast": dict(width=12, levels=2, channels=128, patch=24, batch=4, steps=400, max_minutes=4.0, lr=2e-3,
                 val_every=50),
    "quality": dict(width=24, levels=2, channels=256, patch=48, batch=4, steps=3000, max_minutes=None, lr=1e-3,
                    val_every=200),
}
# Inference runs on the whole cube when its activations fit in this many bytes, else in tiles.
_INFER_BYTES = 1 << 30
# Passes of J-invariant inference: each hides a random eighth of the voxels.
_J_INVARIANT_PASSES = 8


class _Denoiser(nn.Module):
    """A :class:`models.DCAE3D` that learns a correction to a local average (residual learning).

    The output (on the link's scale) is ``net(x) + link⁻¹(b)``, where ``b`` is, for every
    voxel, the mean of the counts channel over a ``window × window`` pixel square at the same
    energy, shrunk by ``shrink`` toward the summed spectrum of the whole cube (so that a
    square without a count still gets a plausible rate). With the network's head
    initialised near zero the untrained model returns that smoothed cube — already a fair
    denoiser of sparse counts — and training learns where and how to depart from it (sharp
    edges, the HAADF's structure, spectral shape), which takes far fewer steps than learning
    the whole mapping. ``b`` averages only the voxels the input does not mark as hidden
    (channel 1), so a hidden voxel's own count never reaches its estimate (J-invariance
    holds) and the hidden fraction does not bias it.
    """

    def __init__(self, net: nn.Module, spectrum: np.ndarray, link: str, window: int = 5, shrink: float = 0.2):
        super().__init__()
        self.net = net
        self.link = link
        self.window = int(window)
        self.shrink = float(shrink)
        self.register_buffer("spectrum", torch.as_tensor(np.asarray(spectrum, np.float32)).reshape(1, 1, -1, 1, 1))

    def baseline(self, x: torch.Tensor) -> torch.Tensor:
        k = self.window
        pool = dict(kernel_size=(1, k, k), stride=1, padding=(0, k // 2, k // 2), count_include_pad=False)
        seen = 1.0 - x[:, 1:2].float()  # channel 1 marks the hidden voxels
        # The mean over the voxels that are not hidden (a normalised convolution).
        local = F.avg_pool3d(x[:, :1].float() * seen, **pool) / F.avg_pool3d(seen, **pool).clamp_min(1e-6)
        b = (1.0 - self.shrink) * local + self.shrink * self.spectrum
        if self.link == "softplus":
            b = b.clamp_min(_OFFSET_FLOOR)
            return b + torch.log(-torch.expm1(-b))  # softplus⁻¹
        return b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) + self.baseline(x)


class _SoftplusMSE:
    """Squared error of the softplus rate against the (normalised) counts."""

    def __call__(self, output, target, mask=None):
        from emcore.train.losses import MSELoss

        return MSELoss()(F.softplus(output.float()), target, mask)

    def __repr__(self) -> str:
        return "SoftplusMSE()"


# ------------------------------------------------------------------------------ inference


class _Network:
    """The trained network with the normalisation of the whole cube fixed."""

    def __init__(self, model, prep: Prepared, scale: np.ndarray, spectrum: np.ndarray, haadf: np.ndarray | None,
                 link: str = "softplus"):
        self.model, self.prep = model, prep
        self.scale = np.asarray(scale, np.float32).reshape(prep.channels)
        self.spectrum, self.haadf = spectrum, haadf
        self.link = link

    def inputs(self, x, haadf, hidden=None):
        """[E, h, w] normalised counts (torch), [h, w] HAADF and [E, h, w] hidden-voxel
        indicator (None: nothing hidden) -> [1, C, E, h, w]."""
        e, h, w = x.shape
        hid = torch.zeros_like(x) if hidden is None else torch.as_tensor(hidden, dtype=x.dtype, device=x.device)
        chans = [x, hid, torch.as_tensor(self.spectrum, dtype=x.dtype, device=x.device)[:, None, None].expand(e, h, w)]
        if haadf is not None:
            chans.append(torch.as_tensor(haadf, dtype=x.dtype, device=x.device)[None].expand(e, h, w))
        return torch.stack(chans)[None]

    def rates(self, x, haadf, hidden=None):
        """Normalised rates [E, h, w] for normalised counts [E, h, w]."""
        out = self.model(self.inputs(x, haadf, hidden)).float()[0, 0]
        return F.softplus(out) if self.link == "softplus" else out

    def infer(self, device, *, amp: bool, progress=None, hide: tuple | None = None) -> np.ndarray:
        """Denoised binned counts (H, W, E') of the whole prepared cube.

        ``hide = (groups, fill)``: J-invariant inference (Batson & Royer 2019, Sec. 4): the
        voxels are split into groups (``groups``, an (E', H, W) array of group numbers);
        one pass per group hides that group (by ``fill``, an (E', H, W) array, or zero) and
        keeps the output on it, so that no voxel's estimate depends on its own count.
        """

        from emcore.methods.tiling import axis_plan, tile_weights

        cube = self.prep.cube
        h, w, e = cube.shape
        x_all = np.ascontiguousarray(cube.transpose(2, 0, 1)) / self.scale[:, None, None]
        haadf = self.haadf
        # Activations of the widest layers at full resolution, float32, a few alive at once.
        per_voxel = 4 * 6 * self.model.net.width
        _, ms = self.model.net.multiple()
        rf = self.model.net.receptive_field()
        if e * h * w * per_voxel <= _INFER_BYTES:
            tile = max(h, w)
        else:
            side = int(math.sqrt(_INFER_BYTES / (e * per_voxel)))
            tile = max(ms * -(-(2 * rf) // ms), side // ms * ms)
        overlap = min(tile // 2, rf) if tile < max(h, w) else 0
        step = tile - overlap
        _, ph, rows = axis_plan(h, tile, step)
        _, pw, cols = axis_plan(w, tile, step)
        pad = ((0, 0), (0, ph - h), (0, pw - w))
        if (ph, pw) != (h, w):
            haadf = None if haadf is None else np.pad(haadf, pad[1:], mode="edge")
        th, tw = min(tile, ph), min(tile, pw)
        guard = overlap // 4
        wr = [tile_weights(th, overlap if len(rows) > 1 else 0, guard, i == 0, i == len(rows) - 1)
              for i in range(len(rows))]
        wc = [tile_weights(tw, overlap if len(cols) > 1 else 0, guard, j == 0, j == len(cols) - 1)
              for j in range(len(cols))]
        tiles = [(i, j) for i in range(len(rows)) for j in range(len(cols))]
        passes = [None] if hide is None else list(range(int(hide[0].max()) + 1))
        total = len(tiles) * len(passes)
        result = np.zeros((e, h, w), np.float32)
        t0 = time.perf_counter()
        done = 0
        self.model.eval()
        for group in passes:
            x_in, h_in = x_all, None
            if group is not None:
                hidden = hide[0] == group
                x_in = x_all.copy()
                x_in[hidden] = 0.0 if hide[1] is None else hide[1][hidden]
                h_in = hidden.astype(np.float32)
            if (ph, pw) != (h, w):
                x_in = np.pad(x_in, pad, mode="edge")
                h_in = None if h_in is None else np.pad(h_in, pad, mode="edge")
            out = np.zeros((e, ph, pw), np.float32)
            with torch.inference_mode(), torch.autocast(device_type="cuda", dtype=torch.bfloat16,
                                                        enabled=amp and device.type == "cuda"):
                for i, j in tiles:
                    r0, c0 = rows[i], cols[j]
                    x = torch.from_numpy(x_in[:, r0:r0 + th, c0:c0 + tw].copy()).to(device)
                    hd = None if haadf is None else haadf[r0:r0 + th, c0:c0 + tw]
                    hid = None if h_in is None else torch.from_numpy(h_in[:, r0:r0 + th, c0:c0 + tw].copy()).to(device)
                    r = self.rates(x, hd, hid).float().cpu().numpy()
                    out[:, r0:r0 + th, c0:c0 + tw] += r * np.outer(wr[i], wc[j]).astype(np.float32)[None]
                    done += 1
                    if progress is not None and total > 1:
                        el = time.perf_counter() - t0
                        progress(Progress(step=done, total=total, elapsed=el, eta=el / done * (total - done),
                                          message=f"Denoising the whole cube: pass {done} of {total}."))
            if group is None:
                result = out[:, :h, :w]
            else:
                result[hidden] = out[:, :h, :w][hidden]
        return (result * self.scale[:, None, None]).transpose(1, 2, 0)

    def apply_fn(self, data: np.ndarray):
        """The differentiable CPU callable left in ``DenoiseResult.artifacts["apply"]``."""

        prep = self.prep
        scale = torch.from_numpy(self.scale)
        h_full, w_full, e_full = data.shape
        # A fingerprint of every pixel's spectrum: finds where a crop lies in the map, so
        # that the matching HAADF window is used when the caller does not say.
        probe = np.random.default_rng(12345).random(e_full)
        prints = data.astype(np.float64) @ probe if self.haadf is not None else None

        def locate(x: np.ndarray) -> tuple[int, int]:
            h, w = x.shape[:2]
            mine = x.astype(np.float64) @ probe
            tol = 1e-9 * max(1.0, float(np.abs(prints).max()))
            from numpy.lib.stride_tricks import sliding_window_view

            win = sliding_window_view(prints, (h, w))
            hits = np.argwhere(np.abs(win[:, :, 0, 0] - mine[0, 0]) <= tol)
            for r0, c0 in hits:
                if np.all(np.abs(win[r0, c0] - mine) <= tol):
                    return int(r0), int(c0)
            raise EmcoreError(
                "This network reads the HAADF image too, and this crop is not part of the spectrum image it was "
                "trained on: give its position as origin=(row, column)."
            )

        def apply(cube, origin: tuple[int, int] | None = None):
            """Denoise a cube (or a spatial crop of it) ``(h, w, E)`` in counts.

            ``origin`` = (row, column) of the crop's top-left pixel in the whole map places the
            HAADF window; when it is not given, a crop of the recorded cube is located by its
            content.
            """
            x = torch.as_tensor(cube)
            if x.dim() != 3 or x.shape[2] != e_full:
                raise EmcoreError(f"apply needs a (rows, columns, {e_full}) spectrum image; got shape {tuple(x.shape)}.")
            x = x.to(torch.float32)
            h, w = x.shape[:2]
            hd = None
            if self.haadf is not None:
                if origin is None:
                    origin = (0, 0) if (h, w) == (h_full, w_full) else locate(x.detach().cpu().numpy())
                r0, c0 = int(origin[0]), int(origin[1])
                if r0 < 0 or c0 < 0 or r0 + h > h_full or c0 + w > w_full:
                    raise EmcoreError(f"A {h}×{w} crop at {tuple(origin)} does not lie inside the {h_full}×{w_full} map.")
                hd = self.haadf[r0:r0 + h, c0:c0 + w]
            n = prep.channels * prep.bin
            seg = x[:, :, prep.lo:prep.hi]
            seg = torch.nn.functional.pad(seg, (0, n - (prep.hi - prep.lo)))
            binned = seg.reshape(h, w, prep.channels, prep.bin).sum(dim=3) / scale
            rates = self.rates(binned.permute(2, 0, 1), hd).permute(1, 2, 0) * scale
            return torch.cat([x[:, :, :prep.lo], spread_back(rates, prep), x[:, :, prep.hi:]], dim=2)

        return apply


# --------------------------------------------------------------------------------- method
# Parameters whose None means "the preset's value", and their names in PRESETS.
_PRESET_KEYS = (("steps", "steps"), ("width", "width"), ("batch_size", "batch"), ("patch_size", "patch"))


def _auto_bin(channels: int, preset: dict) -> int:
    """Channels summed per bin so that the network sees at most the preset's number of channels."""
    return max(1, -(-channels // preset["channels"]))


def _preset_values(params: dict) -> dict:
    preset = PRESETS[params["preset"]]
    return {**{k: preset[key] for k, key in _PRESET_KEYS}, "max_minutes": preset["max_minutes"]}


# CPU seconds per voxel of a training crop and step for the fast preset's network (width 12),
# and per voxel at inference, on 2 CPU cores (measured on the 128×128×1024 EDS example, binned
# to 128 channels: about 6 s a step); the cost grows with the square of the width.
_STEP_SECONDS_PER_VOXEL = 2e-5
_INFER_SECONDS_PER_VOXEL = 3e-6


def _estimate(shape: tuple, kind: str, params: dict) -> float:
    from emcore.methods.common import accelerator_speedup

    preset = PRESETS[params["preset"]]
    steps, width, batch, patch = (params[k] if params[k] is not None else preset[key] for k, key in _PRESET_KEYS)
    h, w, e = shape
    channels = -(-e // (params["bin_energy"] or _auto_bin(e, preset)))
    scale = (width / 12) ** 2 / accelerator_speedup()
    train = _STEP_SECONDS_PER_VOXEL * scale * steps * batch * min(patch, max(h, w)) ** 2 * channels
    minutes = params["max_minutes"] if params["max_minutes"] is not None else (
        preset["max_minutes"] if accelerator_speedup() == 1.0 else None)
    if minutes is not None:
        train = min(train, 60.0 * minutes)
    passes = _J_INVARIANT_PASSES if params["inference"] == "j-invariant" else 1
    return train + _INFER_SECONDS_PER_VOXEL * scale * passes * h * w * channels


def _lesson_figure() -> LessonFigure:
    from emcore import spectral

    ds = spectrum_example()
    e = ds.energy_axis()
    r, c = 16, 16
    lo, hi = spectral.line_channels("Fe_Ka", ds.calibration, ds.data.shape[2])
    spectrum = Panel(f"Spectrum of pixel ({r}, {c})", x_title="Energy (keV)", band=(e[lo], e[hi - 1]),
                     curves=(Curve(e, ds.data[r, c], "recorded (counts)", "grey"),
                             Curve(e, ds.ground_truth[r, c], "true (expected counts)", "crimson")))
    window = Panel("Fe Kα slice, noisy: a 3×3 neighbourhood", energy_window_map(ds.data, (lo + hi - 1) // 2, hi - lo),
                   colorscale="viridis", clip=None, boxes=(Box(r - 1, c - 1, 3, 3, "white"),))
    return LessonFigure((spectrum, window), widths=(0.65, 0.35), spacing=0.08, legend_below=True)


LESSON = Lesson(
    assumes="In a spectrum image, neighbouring pixels and neighbouring energies are correlated (the same "
            "particle, the same peak), while counting noise is independent from voxel to voxel. A 3-D "
            "convolutional autoencoder compresses (row, column, energy) blocks and keeps what they share.",
    needs="Only the noisy spectrum image (trained on it Noise2Self-style; optionally with the HAADF image as "
          "an extra input). A GPU trains it many times faster than a CPU; the estimate beside Run is for "
          "this machine.",
    choose_when="EDS maps too sparse for PCA to separate minor elements, where both spatial and spectral "
                "context are needed. Check it against PCA with the count-split score of the Compare page: "
                "on a nearly uniform sample PCA's one spectral model for the whole map is hard to beat, and "
                "the network needs a longer training to pass it (on the SiO₂ cube of our benchmark: "
                "3000 steps rather than the fast preset's 400).",
    parameters="Training budget; the network's width and depth; use of the HAADF image.",
    reference="R. Taylor, Y. Chen, H. Zheng, N. D. Browning, “Deep learning-based blind denoising for "
              "enhancing energy-dispersive X-ray spectroscopy (EDS) images”, *Microscopy and Microanalysis* "
              "(conference abstract); with the masking of J. Batson, L. Royer, *ICML* 2019.",
    caption="A small simulated EDS map: the spectrum of one pixel as recorded (a handful of counts) and as it "
            "truly is, and the neighbourhood in space and energy a 3-D convolution reads.",
    figure=_lesson_figure,
)


def _choose_haadf(ds: Dataset, want: bool, ctx: RunContext) -> np.ndarray | None:
    if not want:
        return None
    if ds.haadf is None:
        ctx.log.append(f"{ds.name} has no HAADF image: training on the spectrum image alone.")
        return None
    haadf = np.asarray(ds.haadf)
    if haadf.shape != ds.data.shape[:2]:
        raise EmcoreError(
            f"The HAADF image of {ds.name} is {haadf.shape[0]}×{haadf.shape[1]} pixels but the spectrum image is "
            f"{ds.data.shape[0]}×{ds.data.shape[1]}; they must share one pixel grid. Set use_haadf to false to run "
            "without it, or load a matching HAADF image."
        )
    if not np.all(np.isfinite(haadf)):
        raise EmcoreError(f"The HAADF image of {ds.name} holds NaN or infinite values; set use_haadf to false to "
                          "run without it.")
    return _standardise(haadf)


def _run(ds: Dataset, params: dict, ctx: RunContext) -> np.ndarray:

    from emcore.train.config import TrainConfig, select_device
    from emcore.train.loop import train
    from emcore.train.losses import MSELoss, PoissonNLLLoss
    from models.dcae3d import DCAE3D

    data = ds.data
    lowest = float(data.min())
    if params["loss"] == "poisson" and lowest < 0:
        raise EmcoreError(
            f"{ds.name} holds negative values (down to {lowest:g}), so it is not raw counts and the Poisson loss "
            "does not apply; choose loss = mse."
        )
    preset = dict(PRESETS[params["preset"]])
    use_haadf = bool(params["use_haadf"])
    haadf = _choose_haadf(ds, use_haadf, ctx)

    lo, hi = _energy_window(ds, params["energy_min"], params["energy_max"])
    e_span = hi - lo
    bin_energy = params["bin_energy"] if params["bin_energy"] is not None else _auto_bin(e_span, preset)
    prep = prepare_cube(data, lo, hi, bin_energy)
    # None: the preset's value (Param.preset); the Params' ranges keep crops >= 8 px, width >= 4.
    steps, width, batch, patch = (params[k] if params[k] is not None else preset[key] for k, key in _PRESET_KEYS)
    device = select_device(ctx.device)
    max_minutes = params["max_minutes"]
    if max_minutes is None and device.type == "cpu":
        max_minutes = preset["max_minutes"]
    ctx.resolved.update(bin_energy=int(prep.bin), steps=int(steps), width=int(width), batch_size=int(batch),
                        patch_size=int(min(patch, max(data.shape[:2]))), use_haadf=haadf is not None,
                        max_minutes=None if max_minutes is None else float(max_minutes))
    cal = ds.calibration
    e_lo, e_hi = cal.energy_offset + cal.energy_scale * prep.lo, cal.energy_offset + cal.energy_scale * (prep.hi - 1)
    ctx.log.append(
        f"Energy {e_lo:g}–{e_hi:g} {cal.energy_unit} (channels {prep.lo}–{prep.hi - 1}), summed {prep.bin} "
        f"channel{'s' if prep.bin > 1 else ''} per bin: the network sees {prep.channels} channels"
        + (f"; the {data.shape[2] - (prep.hi - prep.lo)} channels outside are left as recorded."
           if prep.hi - prep.lo < data.shape[2] else ".")
    )
    if not np.any(prep.cube):
        ctx.log.append("The spectrum image holds no counts: nothing to denoise, the result is the input.")
        ctx.artifacts.update(receptive_field=1, min_size=1, training=[])
        return data.copy()

    # Counts (never negative) go through a softplus link to a non-negative rate, whatever the
    # loss; processed data with negative values (MSE only) through the identity.
    link = "softplus" if lowest >= 0 else "identity"
    level = max(float(np.abs(prep.cube).mean(dtype=np.float64)), _SCALE_FLOOR)
    mean_spectrum = prep.cube.mean(axis=(0, 1), dtype=np.float64)
    # One scale for all channels (counts / mean count per voxel): the Poisson loss then
    # weights the voxels as their counts do, so the bright lines that make the element maps
    # dominate it. (Dividing each channel by its own mean lets the many near-empty
    # background channels dominate instead: 4 dB worse maps on the simulated phantom.)
    scale = np.full(prep.channels, level, np.float32)
    counts = np.ascontiguousarray(prep.cube.transpose(2, 0, 1)) / scale[:, None, None]
    spectrum = _spectrum_channel(prep.cube, level)
    source = MaskedCubeSource(counts, spectrum, haadf, mask_rate=params["mask_rate"], fill=params["mask_fill"],
                              seed=ctx.seed, val_patch=patch)

    torch.manual_seed(ctx.seed)
    net = DCAE3D(in_channels=source.channels, out_channels=1, width=int(width), levels=preset["levels"])
    with torch.no_grad():
        net.head.bias.zero_()
    model = _Denoiser(net, mean_spectrum / scale, link)
    if params["loss"] == "poisson":
        loss = PoissonNLLLoss(link="softplus")
    else:
        loss = _SoftplusMSE() if link == "softplus" else MSELoss()
    config = TrainConfig(
        steps=int(steps),
        max_seconds=None if max_minutes is None else 60.0 * float(max_minutes),
        batch_size=int(batch),
        patch_size=int(patch),
        lr=preset["lr"],
        schedule="cosine",
        warmup_steps=min(20, max(0, int(steps) // 10)),
        val_every=min(preset["val_every"], int(steps)),
        seed=ctx.seed,
        device=device.type,
        amp=True,
        min_patch=8,
    )
    result = train(model, source, loss, config, progress=ctx.progress, should_stop=ctx.should_stop)
    ctx.log.append(result.message)
    if result.status == "stopped":
        ctx.log.append(f"Stopped at step {result.steps_done} of {steps}; result from the best model so far.")
    elif result.status == "diverged":
        ctx.log.append("Training diverged; the result comes from the best model before that.")
    network = _Network(model, prep, scale, spectrum, haadf, link)
    hide = None
    if params["inference"] == "j-invariant":
        groups = np.random.default_rng([int(ctx.seed), 7]).integers(0, _J_INVARIANT_PASSES, size=counts.shape)
        hide = (groups, source.fill_values)
    binned = network.infer(torch.device(result.device), amp=True, progress=ctx.progress, hide=hide)
    out = data.copy()
    out[:, :, prep.lo:prep.hi] = spread_back(binned, prep)

    model.to("cpu").eval()
    ctx.artifacts.update(
        apply=network.apply_fn(data),
        receptive_field=int(net.receptive_field()),
        receptive_field_energy=net.receptive_field_energy(),
        min_size=1,
        training=list(result.history),
        model=model,
    )
    return out


register(Method(
    name="dcae3d",
    label="3D-DCAE (self-supervised, EDS)",
    description="A 3-D convolutional autoencoder trained on your own spectrum image to predict hidden voxels from "
                "their neighbours (Noise2Self), optionally guided by the HAADF image.",
    kind="self-supervised",
    accepts=("cube",),
    uses_torch=True,
    params=(
        Param("preset", "choice", "fast", choices=("fast", "quality"), label="Preset",
              help="'fast': a small network, at most 128 channels after binning, 400 steps and at most 4 minutes "
                   "of training on the CPU; 'quality': a wider network, up to 256 channels and 3000 steps (use a GPU)."),
        Param("use_haadf", "bool", True, label="Use the HAADF image",
              help="Feed the simultaneously recorded HAADF image to the network as an extra, never-masked input "
                   "(sharper element maps). Ignored, with a note, when the spectrum image has none."),
        Param("loss", "choice", "poisson", choices=("poisson", "mse"), label="Loss",
              help="'poisson': Poisson negative log-likelihood, right for raw counts; 'mse': squared error, for "
                   "processed data."),
        Param("mask_rate", "float", 0.1, min=0.005, max=0.5, label="Masking rate",
              help="Fraction of voxels hidden in every training crop; the loss is computed on them only."),
        Param("mask_fill", "choice", "zero", choices=("zero", "local_mean"), label="Hidden voxels become",
              help="What a hidden voxel is replaced by: zero, or the mean of its 26 neighbours."),
        Param("inference", "choice", "single", choices=("single", "j-invariant"), label="Inference",
              help="'single': one pass over the whole noisy cube, as Taylor et al. (the usual choice); "
                   "'j-invariant': 8 passes, each hiding an eighth of the voxels, so that no voxel's estimate sees "
                   "its own count (Batson & Royer 2019, Sec. 4)."),
        Param("steps", "int", None, min=1, max=200_000, label="Training steps", preset=True, group="training",
              help="Optimiser steps (preset: fast 400, quality 3000)."),
        Param("max_minutes", "float", None, min=0.01, max=1440.0, label="Time limit (min)", preset=True,
              group="training",
              help="Stop training after this many minutes and denoise with the best model so far (preset: fast "
                   "4 min on the CPU and none on a GPU, quality none). A run that hits the limit is not "
                   "bit-reproducible."),
        Param("batch_size", "int", None, min=1, max=256, label="Batch size", preset=True, group="training",
              help="Crops per training step (preset: 4)."),
        Param("patch_size", "int", None, min=8, max=1024, label="Patch size (px)", preset=True, group="training",
              help="Side of the training crops in pixels, each holding the whole energy axis (preset: fast 24, "
                   "quality 48). Maps smaller than a crop train on crops of their own size."),
        Param("bin_energy", "int", None, auto=True, min=1, max=64, label="Energy binning",
              help="Channels summed into one before training (the result is spread back over them); when unset, "
                   "enough to leave at most 128 (fast) or 256 (quality) channels."),
        Param("energy_min", "float", None, auto=True, min=-1e6, max=1e6, label="Energy from",
              help="Lowest energy denoised, in the units of the energy axis (keV usually); the whole axis when unset."),
        Param("energy_max", "float", None, auto=True, min=-1e6, max=1e6, label="Energy to",
              help="Highest energy denoised; channels outside the range are left as recorded."),
        Param("width", "int", None, min=4, max=64, label="Network width", preset=True, group="advanced",
              help="Feature channels at full resolution, doubled at each level (preset: fast 12, quality 24)."),
    ),
    run=_run,
    quick={"steps": 3, "width": 4},
    estimate_seconds=_estimate,
    filter_view=FilterViewSpec(label="3D-DCAE"),
    lesson=LESSON,
    preset_values=_preset_values,
    cost_hint="On a CPU the fast preset stops training after 4 minutes; a GPU trains far more in that time.",
    details="Taylor, Chen, Zheng & Browning (Microsc. Microanal.) extend Noise2Self (Batson & Royer, ICML 2019) to "
            "EDS spectrum images: a 3-D convolutional autoencoder over (energy, row, column) — encoder, residual "
            "block, bottleneck, decoder of transposed convolutions — learns to predict randomly hidden voxels from "
            "their neighbours; as the noise of a voxel is independent of its neighbours', what it learns is the "
            "signal. The HAADF image, recorded at the same time, enters as an extra channel that is never hidden "
            "(its noise is independent of the X-ray counts), which sharpens the maps. The energy axis is cropped "
            "and binned first, and the result spread back over the original channels along the summed spectrum.",
))
