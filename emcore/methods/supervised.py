"""Supervised networks: ``dncnn`` and ``unet`` registry entries, and training them.

Inference uses the weights shipped in ``emcore/weights`` (trained on simulated HRTEM pairs
by ``benchmarks/train_shipped_weights.sh``: DnCNN on the workbench's phantoms, UNet on the
abTEM multislice set of ``benchmarks/make_abtem_set.py``; their JSON cards say how) or a weights file the
user trained — in the app, from the CLI (``python -m emcore train``) or with
:func:`train_network`. Images are divided by their mean before the network and multiplied
back after (:func:`emcore.train.simulated.normalise`), as in training, so one set of weights serves data
on any intensity scale. Large images go through :func:`emcore.methods.tiling.tiled_apply`
(400-px tiles every 350 px by default, after Mohan et al. 2022).

:func:`train_network` is the one entry point for the ways of training these models
(:mod:`emcore.methods.supervised_training`); with ``weights_source="train"`` a run trains first
and denoises with the new weights, from the same parameters everywhere (app, CLI, library).
"""

from __future__ import annotations

import os
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np

from emcore.data.dataset import Dataset
from emcore.errors import EmcoreError
from emcore.methods.lesson import Lesson, LessonFigure, example_image, image_row
from emcore.methods.registry import FilterViewSpec, Method, Param, RunContext, register
from emcore.methods.supervised_training import (  # noqa: F401  (TrainingPlan, TrainedNetwork: re-exported)
    MODEL_CLASS,
    TrainedNetwork,
    TrainingPlan,
    fit_network,
    training_params,
)
from emcore.progress import ProgressFn, StopFn

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
# Both read the self-calibrated Wiener prior of the whole frame (emcore.methods.prior) and were
# trained on whole fields of the abTEM multislice set (benchmarks/train_shipped_weights.sh; the
# DnCNN's card nests the one-channel network it started from; the UNet, 24 base channels for
# speed, was trained from scratch with its correction head at zero).
SHIPPED = {"dncnn": WEIGHTS_DIR / "dncnn_prior.pt", "unet": WEIGHTS_DIR / "unet24_prior.pt"}
# Bias-free weights (benchmarks/train_bias_free_unet.py): the output is exactly the filter the
# Jacobian view shows, f(x) = J(x) x; chosen with the parameter shipped="bias-free".
SHIPPED_BIAS_FREE = {"unet": WEIGHTS_DIR / "unet32_bf.pt"}
VARIANTS = ("standard", "bias-free")


def shipped_path(name: str, variant: str = "standard") -> Path:
    """The shipped weights file of network ``name``: ``"standard"`` or ``"bias-free"`` (UNet)."""
    return SHIPPED_BIAS_FREE[name] if variant == "bias-free" and name in SHIPPED_BIAS_FREE else SHIPPED[name]

_CACHE: dict[tuple, Any] = {}
_CACHE_LOCK = threading.Lock()
# The inference copy of each loaded network (batch norms folded; see _inference_network).
_INFERENCE: "weakref.WeakKeyDictionary[Any, tuple]" = weakref.WeakKeyDictionary()


def _model_class(name: str):
    import models

    return getattr(models, MODEL_CLASS[name])


def load_network(name: str, weights: str | os.PathLike | None = None):
    """The network ``name`` ("dncnn" or "unet") with ``weights`` (default: the shipped ones).

    Loaded once per file and modification time and shared (read-only, eval mode, CPU).
    """
    return _load(name, weights)[0]


def weights_card(name: str, weights: str | os.PathLike | None = None) -> dict:
    """The model card stored with a weights file (shipped ones by default)."""
    return dict(_load(name, weights)[1])


def _load(name: str, weights: str | os.PathLike | None):
    from emcore.train.weights import load_weights, read_weights

    path = Path(weights) if weights else SHIPPED[name]
    if path in (SHIPPED[name], SHIPPED_BIAS_FREE.get(name)) and not path.is_file():
        raise EmcoreError(
            f"The shipped {MODEL_CLASS[name]} weights ({path.name}) are missing from this installation; "
            "reinstall the workbench to get them back, or train some with "
            f"'python -m emcore train {name} --out FILE' and pass them with --set weights=FILE."
        )
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        raise EmcoreError(f"The weights file {path.name} does not exist.") from None
    key = (name, str(path.resolve()), stamp)
    with _CACHE_LOCK:
        hit = _CACHE.get(key)
        if hit is None:
            model = load_weights(_model_class(name), path)
            for p in model.parameters():
                p.requires_grad_(False)
            hit = (model, dict(read_weights(path).get("card") or {}))
            if len(_CACHE) > 8:
                _CACHE.clear()
            _CACHE[key] = hit
    return hit


MAX_WEIGHTS_BYTES = 512 * 2**20


def save_uploaded_weights(name: str, data: bytes, upload_name: str, folder: str | os.PathLike) -> str:
    """Write uploaded weights into ``folder`` under a fixed name and check they fit ``name``.

    The uploaded name is used only in messages. Returns the path written; raises
    :class:`EmcoreError` (naming the uploaded file) when the file is too big, not a weights
    file of this workbench, or made for another architecture.
    """
    shown = Path(str(upload_name)).name or "the uploaded file"
    if len(data) > MAX_WEIGHTS_BYTES:
        raise EmcoreError(f"{shown} is {len(data) / 2**20:.0f} MB; weights files of these networks are a few MB — "
                          "choose the file written by the workbench.")
    path = Path(folder) / f"uploaded_{name}.pt"
    path.write_bytes(data)
    try:
        load_network(name, path)
    except EmcoreError as err:
        path.unlink(missing_ok=True)
        raise EmcoreError(str(err).replace(path.name, shown)) from None
    return str(path)


# Default tiles of the supervised networks. On two CPU cores the shipped UNet denoises a 1024²
# image in 3.8 s in one 1024-px tile, 4.5 s in 400-px tiles overlapping by 50 px, and took
# 6.0 s before batch norms were folded and activations reused (benchmarks/bench_inference.py).
# A 1024-px tile holds about 0.95 GB of the UNet's activations (0.55 GB for DnCNN), a 768-px one
# about 0.55 GB: frames above LARGE_FRAME pixels, whose whole-frame arrays (the frame, its prior,
# the result: 256 MiB each at 8192²) already fill memory, get the smaller tile.
TILE, LARGE_TILE, LARGE_FRAME, OVERLAP = 1024, 768, 4096 * 4096, 128


def auto_tile(shape) -> int:
    """The tile side used when none is given: :data:`TILE`, or :data:`LARGE_TILE` for large frames."""
    h, w = (int(v) for v in shape[-2:])
    return LARGE_TILE if h * w > LARGE_FRAME else TILE


def _tile_batch(tile: int, device_type: str) -> int:
    """Tiles per forward pass: about 0.6 (CPU) or 2.5 (accelerator) million pixels, at least one."""
    return max(1, (640_000 if device_type == "cpu" else 2_560_000) // (tile * tile))


def _multiple(model) -> int:
    scales = getattr(model, "scales", None)
    return 2 ** (scales - 1) if scales else 1


def _run_supervised(ds: Dataset, params: dict, ctx: RunContext, name: str) -> np.ndarray:
    if params["weights_source"] == "train":
        return _train_then_run(ds, params, ctx, name)
    import torch

    from emcore.methods.fast_inference import heap_allocation
    from emcore.methods.tiling import tiled_apply
    from emcore.train.simulated import frame_scale

    weights = params.get("weights") or shipped_path(name, params.get("shipped", "standard"))
    net = load_network(name, weights)
    device = torch.device(ctx.device)
    model = _inference_network(net, device)
    card = weights_card(name, weights)
    ctx.log.append(
        f"{MODEL_CLASS[name]} weights: {Path(weights).name if params.get('weights') else 'shipped ' + Path(weights).name}"
        + (f" (trained {card.get('steps')} steps on {card.get('data', 'unknown data')}; "
           f"validation PSNR {card['validation_psnr_db']:.2f} dB)" if card.get("validation_psnr_db") is not None else "")
        + "."
    )
    mult = _multiple(net)
    # Any tile in the declared range works: a UNet needs sides that are a multiple of
    # 2**(scales-1), so the tile is rounded up to one here (tiled_apply would do the same),
    # and the step is kept within [tile/2, tile] of the tile actually used. For tiles that
    # were accepted before, tile and step are unchanged.
    asked = int(params["tile"] or auto_tile(ds.data.shape[-2:]))
    if not params["tile"]:
        ctx.resolved["tile"] = asked
    tile = -(-asked // mult) * mult
    step = min(tile, max(-(-tile // 2), asked // 2, asked - int(params["overlap"])))
    frames = ds.data if ds.kind == "stack" else ds.data[None]
    out = np.empty(frames.shape, np.float32) if len(frames) > 1 else None  # one image: the tiled result is it
    with_prior = bool(getattr(net, "prior", False))
    scale0 = prior0 = None  # the first frame's scale and prior, for the filter view
    for i, frame in enumerate(frames):
        # The channels (the frame, and its whole-frame prior) are cut tile by tile and divided
        # by the frame's scale on each tile, as normalise / network_input would, without a
        # whole-frame copy: on an 8192² image every such copy is 256 MiB.
        scale = frame_scale(frame)
        planes = [frame]
        if with_prior:
            # The prior of the whole frame, before tiling: its strength is the whole field.
            from emcore.methods.prior import wiener_prior

            prior, chosen = wiener_prior(frame)
            planes.append(prior)
            if i == 0:
                prior0 = prior
                ctx.log.append(f"Prior channel: the self-calibrated Wiener filter of the whole frame (window "
                               f"{chosen.get('window')} px), which the network corrects.")
                ctx.resolved.update(prior_window=chosen.get("window"))
            del prior
        if i == 0:
            scale0 = scale
        with heap_allocation():  # large activations reused, not faulted in again (2x on a CPU)
            y = tiled_apply(lambda t, _s=np.float32(scale): model(t / _s), planes, tile=tile, step=step,
                            batch=_tile_batch(tile, device.type), device=device, multiple=mult,
                            progress=_frame_progress(ctx.progress, i, len(frames)),
                            should_stop=ctx.should_stop, channels=True)
        del planes
        y *= np.float32(scale)
        if out is None:
            out = y[None]
        else:
            out[i] = y
        del y
    ctx.log.append(f"Inference in {tile}-px tiles every {step} px, each frame divided by its mean first.")

    def apply(t, _m=net, _s=scale0):
        # The same normalisation as the whole frame (fixed), so a crop gives the same output
        # pixels away from its border; a differentiable function of the input.
        return _m((t / _s)[None, None])[0, 0] * _s

    extra = {}
    if with_prior:
        import torch

        prior0 = torch.from_numpy(prior0 / np.float32(scale0))

        def apply_at(t, r0, c0, _m=net, _s=scale0, _p=prior0):
            # The network on a window with the same window of the whole-frame prior, held fixed.
            p = _p[r0:r0 + t.shape[0], c0:c0 + t.shape[1]].to(t.dtype)
            return _m(torch.stack([t / _s, p])[None])[0, 0] * _s

        extra = {"apply_at": apply_at, "apply": lambda t: apply_at(t, 0, 0),  # the whole frame: window at 0, 0
                 "filter_note": "The network also reads the Wiener filter of the whole image (its prior channel), "
                                "held fixed here: the weights show what its correction takes from the noisy pixels "
                                "around this one; the prior itself averages each lattice reflection over the whole "
                                "image (see the Wiener filter's lesson)."}
    ctx.artifacts.update(apply=apply, receptive_field=int(net.receptive_field()), min_size=mult,
                         network=MODEL_CLASS[name])
    ctx.artifacts.update(extra)
    return out if ds.kind == "stack" else out[0]


def _inference_network(net, device):
    """``net`` prepared for inference on ``device``, made once and reused while its weights stay.

    Batch norms folded into the convolutions and, for a UNet, no copies around them
    (:func:`emcore.methods.fast_inference.inference_copy`): the same outputs to float rounding,
    about a quarter less time on a CPU. The copy (0.07 s for the UNet) is kept per network
    object and remade when any of its tensors has been changed in place (their version counters).
    """
    from itertools import chain

    from emcore.methods.fast_inference import inference_copy

    versions = tuple(t._version for t in chain(net.parameters(), net.buffers()))
    with _CACHE_LOCK:
        hit = _INFERENCE.get(net)
    if hit is not None and hit[0] == versions and hit[1] == device:
        return hit[2]
    model = inference_copy(net) if device.type == "cpu" else _device_copy(inference_copy(net), device)
    with _CACHE_LOCK:
        _INFERENCE[net] = (versions, device, model)
    return model


def _device_copy(net, device):
    import copy

    return copy.deepcopy(net).to(device)


def _frame_progress(progress: ProgressFn | None, i: int, n: int) -> ProgressFn | None:
    if progress is None:
        return None
    from emcore.progress import Progress

    def inner(p: Progress) -> None:
        total = n * max(p.total, 1)
        progress(Progress(step=i * max(p.total, 1) + p.step, total=total, elapsed=p.elapsed,
                          message=(f"Frame {i + 1} of {n}: " if n > 1 else "") + p.message))

    return inner


def _common_params(name: str) -> tuple[Param, ...]:
    shipped = (("weights_source", ("shipped",)),)
    variants = (Param("shipped", "choice", "standard", choices=VARIANTS, label="Shipped weights", when=shipped,
                      help="standard: the better denoiser (trained on multislice images). bias-free: no additive "
                           "constant anywhere, so the output is exactly the filter that 'what is the network "
                           "looking at?' shows, f(x) = J(x) x (Mohan et al. 2020); trained on the workbench's "
                           "phantoms, last at 0.2–3 e⁻/px, so it is for low-dose data: at ~20 e⁻/px it denoises "
                           "far worse than the standard weights. A weights file, when given, is used instead."),) \
        if name in SHIPPED_BIAS_FREE else ()
    return (
        Param("weights_source", "choice", "shipped", choices=("shipped", "file", "train"), label="Weights",
              choice_labels={"shipped": "Shipped (trained on simulated HRTEM)", "file": "A weights file",
                             "train": "Train now"},
              help="shipped: the weights that come with the workbench; file: a weights file trained for this "
                   f"{MODEL_CLASS[name]} (weights); train: train the network now (the training parameters), then "
                   "denoise with the new weights."),
    ) + variants + (
        Param("weights", "path", None, label="Weights file", when=(("weights_source", ("file",)),),
              required=True, file_types=("pt",), upload=lambda data, shown, folder: save_uploaded_weights(
                  name, data, shown, folder),
              help=f"A weights file trained for this {MODEL_CLASS[name]} (python -m emcore train {name}, or "
                   "'Train now' on the Denoise page); when given, it is used whatever the weights source."),
        Param("tile", "int", None, auto=True, min=32, max=4096, label="Tile (px)", group="advanced",
              help=f"Largest side of the tiles the image is cut into; the tiles are shrunk to just cover the "
                   f"image. Unset: {TILE} px, or {LARGE_TILE} px for frames above {LARGE_FRAME // 1_000_000} million "
                   f"pixels (a {TILE}-px tile holds about 1 GB of the UNet's activations on a CPU). Larger tiles "
                   "are faster (less overlap computed twice); Mohan et al. 2022 used 400 px."),
        Param("overlap", "int", OVERLAP, min=0, max=2048, label="Tile overlap (px)", group="advanced",
              help="Overlap between neighbouring tiles, blended smoothly (at most half the tile); the default "
                   "is about the UNet's receptive field (116 px), so a tile's borders barely show."),
    ) + training_params(name)


def _train_then_run(ds: Dataset, params: dict, ctx: RunContext, name: str) -> np.ndarray:
    """Train the network as the training parameters say, then denoise with the new weights."""
    plan = TrainingPlan.from_params(name, params, seed=ctx.seed, device=ctx.device)
    clean = None
    if params["clean"] and plan.source == "pairs":
        from emcore import io

        clean = io.load(params["clean"], kind=ds.kind).data
    trained = train_network(plan, ds, clean=clean, progress=ctx.progress, should_stop=ctx.should_stop)
    first = _trained_line(trained)
    out = _run_supervised(ds, {**params, "weights_source": "file", "weights": str(trained.path)}, ctx, name)
    ctx.log.insert(0, first)
    ctx.artifacts.update(training=trained.result.history, weights_path=str(trained.path), card=trained.card)
    ctx.resolved.update(steps_done=int(trained.result.steps_done))
    return out


def _trained_line(trained: TrainedNetwork) -> str:
    """The log's first line after a training run; refuses a run that never gave a usable model."""
    r = trained.result
    if r.status == "diverged" and r.best_step == 0:
        raise EmcoreError(f"Training diverged before any usable model: {r.message} Lower the learning rate.")
    return f"Trained {MODEL_CLASS[trained.card['model']]} on {trained.card['data']}: {r.message}"


# CPU seconds per pixel (2 cores) of inference and of a training step per patch pixel; DnCNN's
# 17 full-resolution layers cost about four times the UNet's pyramid (measured on 512×512; the
# UNet's on 1024², benchmarks/bench_inference.py: 2.0-2.4 s with its prior on an AVX2 EPYC).
_INFER_SECONDS = {"dncnn": 8e-6, "unet": 2e-6}
_STEP_SECONDS = {"dncnn": 2e-5, "unet": 5e-6}
# The self-calibrated Wiener prior of a whole frame: about 0.2 s for 1024×1024 on 2 cores.
_PRIOR_SECONDS = 2e-7


def _estimate(name: str):
    def seconds(shape: tuple, kind: str, params: dict) -> float:
        from emcore.methods.common import accelerator_speedup

        frames = shape[0] if kind == "stack" else 1
        h, w = shape[-2:]
        from emcore.methods.tiling import axis_plan

        tile = int(params["tile"] or auto_tile((h, w)))
        step = max(tile // 2, tile - int(params["overlap"]))
        (th, _, ys), (tw, _, xs) = axis_plan(h, tile, step, fit=True), axis_plan(w, tile, step, fit=True)
        tiled = th * len(ys) * tw * len(xs)
        total = _INFER_SECONDS[name] * frames * tiled + _PRIOR_SECONDS * frames * h * w
        if params["weights_source"] == "train":
            train = _STEP_SECONDS[name] * params["steps"] * params["batch_size"] * params["patch_size"] ** 2
            total += train if params["max_minutes"] is None else min(train, 60.0 * params["max_minutes"])
        return total / accelerator_speedup()

    return seconds


def _dncnn_figure() -> LessonFigure:
    clean, noisy = example_image()
    return image_row([("Noisy input (20 e⁻/px)", noisy), ("Clean target", clean),
                      ("Noise = input − target", noisy - clean)], colorscales={2: "RdBu_r"})


def unet_views(image: np.ndarray, scales: int = 4) -> list[np.ndarray]:
    """The image at ``scales`` resolutions, each a 2×2 average of the previous one."""
    views = [np.asarray(image, np.float32)]
    for _ in range(scales - 1):
        a = views[-1]
        h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
        views.append(a[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)))
    return views


def _unet_figure() -> LessonFigure:
    _, noisy = example_image()
    views = unet_views(noisy, 4)
    return image_row([(f"1/{2 ** i} resolution" if i else "Full resolution", v) for i, v in enumerate(views)],
                     height=260)


_MOHAN = ("S. Mohan, R. Manzorro, J. L. Vincent et al., “Deep denoising for scientific discovery: a case study in "
          "electron microscopy”, *IEEE Trans. Comput. Imaging* 8, 585–597 (2022).")
DNCNN_LESSON = Lesson(
    assumes="Images like the training images, with noise like the training noise. The original DnCNN learns "
            "the *noise* (residual learning): it predicts noisy − clean and subtracts it. The shipped one reads "
            "the self-calibrated Wiener filter of the whole image as a second channel and learns the correction "
            "to add to it.",
    needs="Training pairs of noisy and clean images. The workbench ships weights trained on simulated "
          "HRTEM images (simulation-based denoising), so using them needs no training; training your own "
          "takes far longer, and a GPU does it many times faster than a CPU.",
    choose_when="HRTEM/STEM images close to the training simulations, when you want a fast result. For data "
                "unlike the simulations, train on your own pairs or use a self-supervised method, and check "
                "the result with the no-reference tests.",
    parameters="**Weights file** (shipped, or your own); **tile** size and **overlap** for large images.",
    reference="K. Zhang, W. Zuo, Y. Chen, D. Meng, L. Zhang, “Beyond a Gaussian denoiser: residual learning "
              "of deep CNN for image denoising”, *IEEE Trans. Image Process.* 26, 3142–3155 (2017); "
              "S. Mohan et al., “Deep denoising for scientific discovery: a case study in electron "
              "microscopy”, *IEEE Trans. Comput. Imaging* 8, 585–597 (2022).",
    caption="One training pair, made live by the simulator: the noisy input, the clean target, and the noise "
            "(input − target) that DnCNN learns to predict.",
    figure=_dncnn_figure,
)
UNET_LESSON = Lesson(
    assumes="As DnCNN: images and noise like those it was trained on. The UNet looks at the image at four "
            "resolutions, so each output pixel sees 116 px around it — several lattice periods. The shipped "
            "network also reads a prior: the self-calibrated Wiener filter of the whole image, which uses every "
            "period of the lattice in the field; the UNet corrects it where the structure does not repeat.",
    needs="Training pairs (shipped weights trained on simulated HRTEM pairs, as in Mohan et al. 2022). "
          "Using the shipped weights needs no training; training your own takes far longer, many times "
          "faster on a GPU than on a CPU.",
    choose_when="The best choice for HRTEM of nanoparticles at very low dose when the simulations match your "
                "microscope; the Compare page's 'What is the network looking at?' shows which input pixels "
                "each output pixel comes from.",
    parameters="**Weights file**; **tile** size (400 px, as Mohan et al.) and **overlap**.",
    reference="O. Ronneberger, P. Fischer, T. Brox, “U-Net: convolutional networks for biomedical image "
              "segmentation”, *MICCAI* 2015, LNCS 9351, 234–241; " + _MOHAN,
    caption="The same noisy patch at the four resolutions the UNet works at (here each is a 2×2 average of "
            "the previous one; the network pools learned features instead): the coarse levels see the "
            "lattice through the noise, the fine level places the columns precisely.",
    figure=_unet_figure,
)
_COST_HINT = ("Training takes most of the time: fewer steps, a time limit, fine-tuning the shipped weights "
              "(far fewer steps needed) or a GPU make it shorter.")


register(Method(
    name="dncnn",
    label="DnCNN",
    description="A 17-layer CNN trained on simulated noisy/clean HRTEM pairs that corrects the self-calibrated "
                "Wiener filter of the whole image; use the shipped weights at once, or train it on your own data.",
    kind="supervised",
    accepts=("image", "stack"),
    params=_common_params("dncnn"),
    run=lambda ds, p, ctx: _run_supervised(ds, p, ctx, "dncnn"),
    uses_torch=True,
    details="DnCNN (Zhang, Zuo, Chen, Meng & Zhang, IEEE TIP 2017): 17 layers of 3×3 convolutions, batch "
            "normalisation and ReLU (receptive field 35 px). The shipped network reads two channels — the noisy "
            "image and the self-calibrated Fourier Wiener filter of the whole frame (its prior: each lattice "
            "reflection averaged over the whole field) — and returns the prior plus a learned local correction. "
            "Trained on whole fields of multislice HRTEM images of Pt on CeO₂ (abTEM) at 0.1–20 e⁻/px with "
            "Poisson and Poisson–Gaussian noise (simulation-based denoising, Mohan et al., IEEE TCI 2022). "
            "Images are divided by their mean first, so any intensity scale works. Stacks are denoised frame by "
            "frame.",
    estimate_seconds=_estimate("dncnn"),
    filter_view=FilterViewSpec(),
    lesson=DNCNN_LESSON,
    cost_hint=_COST_HINT,
))

register(Method(
    name="unet",
    label="UNet",
    description="A 4-scale UNet (24 base channels) trained on multislice-simulated noisy/clean HRTEM pairs; "
                "sees 116 px around each pixel and corrects the self-calibrated Wiener filter of the whole image, "
                "which sees every lattice period of the field.",
    kind="supervised",
    accepts=("image", "stack"),
    params=_common_params("unet"),
    run=lambda ds, p, ctx: _run_supervised(ds, p, ctx, "unet"),
    uses_torch=True,
    details="UNet (Ronneberger, Fischer & Brox, MICCAI 2015) as used for HRTEM by Mohan et al. (IEEE TCI "
            "2022): an encoder–decoder over 4 resolutions with skip connections, replication padding and "
            "bilinear upsampling. The shipped network reads two channels: the noisy image and the "
            "self-calibrated Fourier Wiener filter of the whole frame (its prior channel, computed before "
            "tiling), and returns that prior plus a learned correction — the Wiener filter averages each "
            "lattice reflection over the whole field but smears what does not repeat (surfaces, vacuum, "
            "defects), which the UNet fixes locally. Trained on whole fields of multislice HRTEM images of a Pt "
            "nanoparticle on CeO₂ computed with abTEM (many defoci, thicknesses and small tilts, as Mohan et al. "
            "built theirs) with fresh Poisson and Poisson–Gaussian noise at 0.1–20 e⁻/px; large images run in "
            "overlapping 1024-px tiles (768 px above 16 million pixels).",
    estimate_seconds=_estimate("unet"),
    filter_view=FilterViewSpec(),
    lesson=UNET_LESSON,
    cost_hint=_COST_HINT,
))


# -- training ------------------------------------------------------------------------------
def started_from_card(name: str, converted: bool = False, weights: str | os.PathLike | None = None) -> dict:
    """What a weights card records of the weights a training run started from (the shipped ones by default)."""
    card = {"weights": Path(weights).name if weights else SHIPPED[name].name, "card": weights_card(name, weights)}
    if converted:
        card["converted"] = "bias-free: additive constants of the shipped weights dropped"
    return card


def train_network(
    plan: TrainingPlan,
    dataset: Dataset | None = None,
    *,
    clean: np.ndarray | None = None,
    out: str | os.PathLike | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    command: str | None = None,
    start_from: str | os.PathLike | None = None,
) -> TrainedNetwork:
    """Train a DnCNN or UNet and write its weights file with a JSON card beside it.

    Parameters
    ----------
    plan : TrainingPlan
    dataset : Dataset, optional
        Needed for ``source="frames"`` (a stack) and ``"pairs"``; not modified.
    clean : ndarray, optional
        Clean counterpart of ``dataset`` for ``"pairs"`` (default: its ground truth).
    out : path, optional
        Weights file to write; default a fresh file in a temporary folder of our own.
    progress, should_stop : callables
        As for every long job; a stop ends the run cleanly with the best model so far.
    checkpoint_dir, resume
        Best/last checkpoints, and continuing from the last one.
    command : str, optional
        The command line to record in the card.
    start_from : path, optional
        With ``plan.start_from_shipped``: fine-tune from this weights file instead of the shipped one.

    Returns
    -------
    TrainedNetwork
        ``path`` of the weights, the ``card`` (also written to ``<path>.json``) and the
        :class:`emcore.train.TrainResult` (``status`` "done", "stopped" or "diverged").
    """
    shipped = load_network(plan.model, start_from) if plan.start_from_shipped else None
    if shipped is not None:
        from dataclasses import replace

        if getattr(shipped, "prior", False) and not plan.prior:
            plan = replace(plan, prior="wiener")  # fine-tuning keeps the shipped network's prior channel
        # ... and its size: the UNet's scales and base channels, the DnCNN's depth and width.
        size = ("scales", "base") if plan.model == "unet" else ("depth", "width")
        plan = replace(plan, **{k: getattr(shipped, k) for k in size})
    return fit_network(plan, dataset, shipped=shipped, started_from=lambda c: started_from_card(plan.model, c, start_from),
                       clean=clean, out=out, progress=progress, should_stop=should_stop,
                       checkpoint_dir=checkpoint_dir, resume=resume, command=command)


def train_and_denoise(plan: TrainingPlan, dataset: Dataset, *, clean: np.ndarray | None = None,
                      progress: ProgressFn | None = None, should_stop: StopFn | None = None, tile: int = 400,
                      overlap: int = 50):
    """Train as :func:`train_network`, then denoise ``dataset`` with the new weights.

    Returns the :class:`~emcore.methods.registry.DenoiseResult`; its log says how training went and
    its artifacts hold the weights path (``"weights_path"``), the card and the training
    history (``"training"``). A stopped or diverged run still gives a result from the best
    weights reached.
    """
    from dataclasses import replace

    from emcore.methods.registry import denoise

    trained = train_network(plan, dataset, clean=clean, progress=progress, should_stop=should_stop)
    first = _trained_line(trained)
    r = trained.result
    res = denoise(dataset, plan.model, device=plan.device, seed=plan.seed, weights=str(trained.path), tile=tile,
                  overlap=overlap)
    res.artifacts.update(training=r.history, weights_path=str(trained.path), card=trained.card)
    return replace(res, log=(first, *res.log), params={**res.params, "weights": "trained in this session",
                                                     "steps_done": r.steps_done, "training_data": plan.source})
