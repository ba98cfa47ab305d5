"""Supervised networks: ``dncnn`` and ``unet`` registry entries, and training them.

Inference uses the weights shipped in ``emcore/weights`` (trained on simulated HRTEM pairs
by ``benchmarks/train_shipped_weights.sh``: DnCNN on the workbench's phantoms, UNet on the
abTEM multislice set of ``benchmarks/make_abtem_set.py``; their JSON cards say how) or a weights file the
user trained — in the app, from the CLI (``python -m emcore train``) or with
:func:`train_network`. Images are divided by their mean before the network and multiplied
back after (:func:`emcore.train.simulated.normalise`), as in training, so one set of weights serves data
on any intensity scale. Large images go through :func:`emcore.methods.tiling.tiled_apply`
(400-px tiles every 350 px by default, after Mohan et al. 2022).

:func:`train_network` is the one entry point for the three ways of training these models:
``"simulated"`` pairs made on the fly by :mod:`emcore.sim` (simulation-based
denoising, Mohan et al. 2022), ``"frames"`` — Noise2Noise from two registered frames of the
user's stack (Lehtinen et al., ICML 2018) — and ``"pairs"`` — the user's noisy and clean
images.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emcore.data.dataset import Dataset
from emcore.errors import EmcoreError
from emcore.methods.registry import Method, Param, RunContext, register
from emcore.progress import ProgressFn, StopFn

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
# The UNet trained on the abTEM multislice set generalised better to the reference Pt/CeO2
# images than the one trained on the phantoms (benchmarks/bench_supervised.py; see the card).
SHIPPED = {"dncnn": WEIGHTS_DIR / "dncnn_sbd.pt", "unet": WEIGHTS_DIR / "unet32_abtem.pt"}
# Bias-free weights (benchmarks/train_bias_free_unet.py): the output is exactly the filter the
# Jacobian view shows, f(x) = J(x) x; chosen with the parameter shipped="bias-free".
SHIPPED_BIAS_FREE = {"unet": WEIGHTS_DIR / "unet32_bf.pt"}
VARIANTS = ("standard", "bias-free")


def shipped_path(name: str, variant: str = "standard") -> Path:
    """The shipped weights file of network ``name``: ``"standard"`` or ``"bias-free"`` (UNet)."""
    return SHIPPED_BIAS_FREE[name] if variant == "bias-free" and name in SHIPPED_BIAS_FREE else SHIPPED[name]
MODEL_CLASS = {"dncnn": "DnCNN", "unet": "UNet"}
SOURCES = ("simulated", "physics", "frames", "pairs")

_CACHE: dict[tuple, Any] = {}
_CACHE_LOCK = threading.Lock()


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
            "benchmarks/train_shipped_weights.sh makes them, or train some with "
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


def _multiple(model) -> int:
    scales = getattr(model, "scales", None)
    return 2 ** (scales - 1) if scales else 1


def _run_supervised(ds: Dataset, params: dict, ctx: RunContext, name: str) -> np.ndarray:
    import torch

    from emcore.methods.tiling import tiled_apply
    from emcore.train.simulated import normalise

    weights = params.get("weights") or shipped_path(name, params.get("shipped", "standard"))
    net = load_network(name, weights)
    device = torch.device(ctx.device)
    model = net if device.type == "cpu" else _device_copy(net, device)
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
    asked = int(params["tile"])
    tile = -(-asked // mult) * mult
    step = min(tile, max(-(-tile // 2), asked // 2, asked - int(params["overlap"])))
    frames = ds.data if ds.kind == "stack" else ds.data[None]
    out = np.empty(frames.shape, np.float32)
    scales = []
    for i, frame in enumerate(frames):
        x, scale = normalise(frame)
        scales.append(scale)
        y = tiled_apply(model, x, tile=tile, step=step, batch=4 if device.type == "cpu" else 16, device=device,
                        multiple=mult, progress=_frame_progress(ctx.progress, i, len(frames)),
                        should_stop=ctx.should_stop)
        out[i] = y * scale
    ctx.log.append(f"Inference in {tile}-px tiles every {step} px, each frame divided by its mean first.")
    scale0 = scales[0]

    def apply(t, _m=net, _s=scale0):
        # The same normalisation as the whole frame (fixed), so a crop gives the same output
        # pixels away from its border; a differentiable function of the input.
        return _m((t / _s)[None, None])[0, 0] * _s

    ctx.artifacts.update(apply=apply, receptive_field=int(net.receptive_field()), min_size=mult,
                         network=MODEL_CLASS[name])
    return out if ds.kind == "stack" else out[0]


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
    variants = (Param("shipped", "choice", "standard", choices=VARIANTS, label="Shipped weights",
                      help="standard: the better denoiser (trained on multislice images). bias-free: no additive "
                           "constant anywhere, so the output is exactly the filter that 'what is the network "
                           "looking at?' shows, f(x) = J(x) x (Mohan et al. 2020); trained on the workbench's "
                           "phantoms, last at 0.2–3 e⁻/px, so it is for low-dose data: at ~20 e⁻/px it denoises "
                           "far worse than the standard weights. A weights file, when given, is used instead."),) \
        if name in SHIPPED_BIAS_FREE else ()
    return variants + (
        Param("weights", "path", None, label="Weights file",
              help=f"A weights file trained for this {MODEL_CLASS[name]} (python -m emcore train {name}, or the "
                   "Train tab of the Denoise page); empty: the weights shipped with the workbench."),
        Param("tile", "int", 400, min=32, max=4096, label="Tile (px)",
              help="Side of the tiles the image is cut into (memory stays bounded; Mohan et al. 2022 found "
                   "400-px tiles better than whole images for large UNets)."),
        Param("overlap", "int", 50, min=0, max=2048, label="Tile overlap (px)",
              help="Overlap between neighbouring tiles, blended smoothly (at most half the tile)."),
    )


register(Method(
    name="dncnn",
    label="DnCNN",
    description="A 17-layer residual CNN trained on simulated noisy/clean HRTEM pairs; gives a result in "
                "seconds with the shipped weights, or train it on your own data.",
    kind="supervised",
    accepts=("image", "stack"),
    params=_common_params("dncnn"),
    run=lambda ds, p, ctx: _run_supervised(ds, p, ctx, "dncnn"),
    uses_torch=True,
    details="DnCNN (Zhang, Zuo, Chen, Meng & Zhang, IEEE TIP 2017) learns the noise with 17 layers of 3×3 "
            "convolutions, batch normalisation and ReLU (receptive field 35 px). The shipped weights were "
            "trained on HRTEM phantoms simulated by the workbench at 0.3–20 e⁻/px with Poisson and "
            "Poisson–Gaussian noise (simulation-based denoising, Mohan et al., IEEE TCI 2022). Images are "
            "divided by their mean first, so any intensity scale works. Stacks are denoised frame by frame.",
))

register(Method(
    name="unet",
    label="UNet",
    description="A 4-scale UNet (32 base channels) trained on multislice-simulated noisy/clean HRTEM "
                "pairs; sees 116 px around each pixel, enough for several lattice periods.",
    kind="supervised",
    accepts=("image", "stack"),
    params=_common_params("unet"),
    run=lambda ds, p, ctx: _run_supervised(ds, p, ctx, "unet"),
    uses_torch=True,
    details="UNet (Ronneberger, Fischer & Brox, MICCAI 2015) as used for HRTEM by Mohan et al. (IEEE TCI "
            "2022): an encoder–decoder over 4 resolutions with skip connections, replication padding and "
            "bilinear upsampling. The shipped weights were trained on multislice HRTEM images of a Pt "
            "nanoparticle on CeO₂ computed with abTEM (many defoci, thicknesses and small tilts, as Mohan et "
            "al. built theirs) with fresh Poisson and Poisson–Gaussian noise at 0.3–20 e⁻/px; large images "
            "run in overlapping 400-px tiles.",
))


# -- training ------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingPlan:
    """How to train a supervised network (validated on construction).

    Parameters
    ----------
    model : {"dncnn", "unet"}
    source : {"simulated", "physics", "frames", "pairs"}
        HRTEM phantoms simulated on the fly; the cached abTEM multislice set
        (:mod:`emcore.train.physics_set`, made by ``benchmarks/make_abtem_set.py``) at ``cache``;
        Noise2Noise from the frames of the dataset (a stack); or the dataset and its clean
        counterpart (the ground truth, or a clean file).
    steps, max_seconds, batch_size, patch_size, lr, seed, device
        Training budget and settings (see :class:`emcore.train.config.TrainConfig`).
    dose_min, dose_max, noise
        Simulated pairs only: dose range (e⁻/px) and noise model.
    scales, base, depth, width, bias_free
        Architecture (UNet: scales, base; DnCNN: depth, width).
    start_from_shipped : bool
        Fine-tune from the shipped weights (same architecture only) instead of from scratch.
        With ``bias_free`` and shipped weights that have biases, the bias-free network starts
        from their convolution weights and normalisation scales and variances, with every
        additive constant (convolution and batch-norm biases, running means) dropped.
    freeze_norm : bool
        Bias-free networks only: their normalisations divide by the running standard deviation
        in training too, instead of by the batch's (see
        :class:`models.dncnn.BiasFreeBatchNorm2d`). With batches of a few patches at doses from
        0.3 to 20 e⁻/px, the batch statistics swing from step to step and the network met at
        inference (running statistics) is not the one trained; frozen, it is.
    """

    model: str = "unet"
    source: str = "simulated"
    steps: int = 500
    max_seconds: float | None = None
    batch_size: int = 4
    patch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    dose_min: float = 0.3
    dose_max: float = 20.0
    noise: str = "mixed"
    scales: int = 4
    base: int = 32
    depth: int = 17
    width: int = 64
    bias_free: bool = False
    start_from_shipped: bool = False
    freeze_norm: bool = False
    val_every: int = 100
    val_patches: int = 8
    cache: str | None = None

    def __post_init__(self):
        if self.model not in MODEL_CLASS:
            raise EmcoreError(f"Unknown network '{self.model}'; train dncnn or unet.")
        if self.source not in SOURCES:
            raise EmcoreError(f"Unknown training data '{self.source}'; use one of {', '.join(SOURCES)}.")
        if self.freeze_norm and not self.bias_free:
            raise EmcoreError("Freezing the normalisation statistics is for bias-free networks; add --bias-free.")

    def build(self):
        import models

        try:
            if self.model == "dncnn":
                return models.DnCNN(depth=self.depth, width=self.width, bias=not self.bias_free)
            return models.UNet(scales=self.scales, base=self.base, bias=not self.bias_free)
        except ValueError as err:
            raise EmcoreError(f"This {MODEL_CLASS[self.model]} cannot be built: {err}.") from None


def started_from_card(name: str, converted: bool = False) -> dict:
    """What a weights card records of the shipped weights a training run started from."""
    card = {"weights": SHIPPED[name].name, "card": weights_card(name)}
    if converted:
        card["converted"] = "bias-free: additive constants of the shipped weights dropped"
    return card


@dataclass
class TrainedNetwork:
    """What :func:`train_network` returns: the weights file, its card and the training result."""

    path: Path
    card: dict
    result: Any  # emcore.train.TrainResult


def _source_for(plan: TrainingPlan, dataset: Dataset | None, clean: np.ndarray | None):
    from emcore.train.pairs import FramePairs, ImagePairs
    from emcore.train.simulated import SimulatedPairs

    if plan.source == "physics":
        from emcore.train.physics_set import DEFAULT_CACHE, CachedPairs

        path = plan.cache or DEFAULT_CACHE
        src = CachedPairs(path=path, dose_range=(plan.dose_min, plan.dose_max), noise=plan.noise, n_val=plan.val_patches)
        return src, (f"abTEM multislice Pt/CeO2 set {Path(path).name}, {plan.dose_min:g}–{plan.dose_max:g} e⁻/px, "
                     f"{plan.noise} noise")
    if plan.source == "simulated":
        return SimulatedPairs(dose_range=(plan.dose_min, plan.dose_max), noise=plan.noise, n_val=plan.val_patches), \
            f"emcore.sim HRTEM phantoms, {plan.dose_min:g}–{plan.dose_max:g} e⁻/px, {plan.noise} noise"
    if dataset is None:
        raise EmcoreError("Load a dataset first: training on your own data needs one (or train on simulated images).")
    if dataset.kind == "cube":
        raise EmcoreError(f"{MODEL_CLASS[plan.model]} is trained on images; {dataset.name} is a spectrum image — "
                          "use dcae3d (self-supervised, no clean data needed) or pca for spectrum images.")
    if plan.source == "frames":
        if dataset.kind != "stack":
            raise EmcoreError(f"Noise2Noise needs a stack of frames of the same area; {dataset.name} is a single image. "
                              "Train on simulated images, or on noisy/clean pairs.")
        src = FramePairs(dataset.data)
        what = f"Noise2Noise pairs of registered frames of {dataset.name}"
    else:
        clean = dataset.ground_truth if clean is None else clean
        if clean is None:
            raise EmcoreError(f"Training on pairs needs a clean version of {dataset.name}; it has none. "
                              "Load one, or use Noise2Noise (stacks) or simulated images.")
        src = ImagePairs(dataset.data, clean)
        what = f"noisy/clean pairs of {dataset.name}"
    if src.max_patch < plan.patch_size:
        raise EmcoreError(f"{dataset.name} ({src.max_patch} px across after registration) is smaller than the "
                          f"training patch ({plan.patch_size} px); choose a patch of at most {src.max_patch} px.")
    return src, what


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

    Returns
    -------
    TrainedNetwork
        ``path`` of the weights, the ``card`` (also written to ``<path>.json``) and the
        :class:`emcore.train.TrainResult` (``status`` "done", "stopped" or "diverged").
    """
    from emcore.train.config import TrainConfig
    from emcore.train.loop import train
    from emcore.train.losses import MSELoss
    from emcore.train.weights import save_weights

    source, what = _source_for(plan, dataset, clean)
    model = plan.build()
    started_from = None
    if plan.start_from_shipped:
        shipped = load_network(plan.model)
        theirs, ours = shipped.config(), model.config()
        drop_constants = theirs != ours and {**theirs, "bias": False} == ours  # biased -> bias-free
        if theirs != ours and not drop_constants:
            raise EmcoreError(f"The shipped {MODEL_CLASS[plan.model]} has {theirs}; fine-tuning needs the "
                              "same architecture — set it, or train from scratch.")
        if drop_constants:
            from models.dncnn import load_without_constants

            load_without_constants(model, shipped)
        else:
            model.load_state_dict(shipped.state_dict())
        started_from = started_from_card(plan.model, converted=drop_constants)
    if plan.freeze_norm:
        from models.dncnn import freeze_bias_free_norms

        freeze_bias_free_norms(model)
    config = TrainConfig(steps=plan.steps, max_seconds=plan.max_seconds, batch_size=plan.batch_size,
                         patch_size=plan.patch_size, lr=plan.lr, schedule="cosine",
                         warmup_steps=min(200, plan.steps // 20 if plan.steps else 0),
                         val_every=min(plan.val_every, plan.steps or plan.val_every), seed=plan.seed,
                         device=plan.device, min_patch=min(16, plan.patch_size))
    result = train(model, source, MSELoss(), config, progress=progress, should_stop=should_stop,
                   checkpoint_dir=checkpoint_dir, resume=resume)
    best_psnr = max((h["val_psnr"] for h in result.history if h.get("val_psnr") is not None), default=None)
    card = {
        "command": command, "model": plan.model, "config": model.config(), "plan": asdict(plan),
        "steps": result.steps_done, "status": result.status, "message": result.message,
        "dose_range": [plan.dose_min, plan.dose_max] if plan.source in ("simulated", "physics") else None,
        "noise": plan.noise if plan.source in ("simulated", "physics") else None, "seed": plan.seed,
        "batch": result.batch_size, "patch": result.patch_size, "lr": plan.lr,
        "validation_psnr_db": best_psnr, "device": result.device, "seconds": round(result.seconds, 1),
        "data": what, "input_normalisation": "divide by the image mean (emcore.train.simulated.normalise)",
        "started_from": started_from,
    }
    path = Path(out) if out else Path(tempfile.mkdtemp(prefix="emcore-weights-")) / f"{plan.model}.pt"
    save_weights(model.cpu(), path, card)
    Path(str(path) + ".json").write_text(json.dumps(card, indent=2, default=float))
    return TrainedNetwork(path=path, card=card, result=result)


def train_and_denoise(plan: TrainingPlan, dataset: Dataset, *, clean: np.ndarray | None = None,
                      progress: ProgressFn | None = None, should_stop: StopFn | None = None, tile: int = 400,
                      overlap: int = 50):
    """Train as :func:`train_network`, then denoise ``dataset`` with the new weights.

    Returns the :class:`~emcore.methods.registry.DenoiseResult`; its log says how training went and
    its artifacts hold the weights path (``"weights_path"``), the card and the training
    history (``"training"``). A stopped or diverged run still gives a result from the best
    weights reached.
    """
    from emcore.methods.registry import denoise

    trained = train_network(plan, dataset, clean=clean, progress=progress, should_stop=should_stop)
    r = trained.result
    if r.status == "diverged" and r.best_step == 0:
        raise EmcoreError(f"Training diverged before any usable model: {r.message} Lower the learning rate.")
    res = denoise(dataset, plan.model, device=plan.device, seed=plan.seed, weights=str(trained.path), tile=tile,
                  overlap=overlap)
    res.artifacts.update(training=r.history, weights_path=str(trained.path), card=trained.card)
    first = f"Trained {MODEL_CLASS[plan.model]} on {trained.card['data']}: {r.message}"
    from dataclasses import replace

    return replace(res, log=(first, *res.log), params={**res.params, "weights": "trained in this session",
                                                     "training_steps": r.steps_done, "training_source": plan.source})
