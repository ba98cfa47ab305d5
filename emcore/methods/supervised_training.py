"""Training the supervised networks (``dncnn``, ``unet``): the training parameters of their
registry entries, :class:`TrainingPlan` and :func:`fit_network`.

Three sources of training pairs: ``"simulated"`` pairs made on the fly by :mod:`emcore.sim`
(simulation-based denoising, Mohan et al. 2022), the cached abTEM multislice set
(``"physics"``), ``"frames"`` — Noise2Noise from two registered frames of the user's stack
(Lehtinen et al., ICML 2018) — and ``"pairs"`` — the user's noisy and clean images.

The same :class:`emcore.methods.registry.Param` declarations drive the Denoise page's "Train
now" form, ``--set`` of ``python -m emcore denoise`` and the options of ``python -m emcore
train``; :meth:`TrainingPlan.from_params` turns their values into a plan. Loading the shipped
weights (to fine-tune from them) is :mod:`emcore.methods.supervised`'s business: it passes
them in.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np

from emcore.data.dataset import Dataset
from emcore.errors import EmcoreError
from emcore.methods.registry import Param
from emcore.progress import ProgressFn, StopFn
from emcore.train.config import TrainConfig

MODEL_CLASS = {"dncnn": "DnCNN", "unet": "UNet"}
SOURCES = ("simulated", "physics", "frames", "pairs")

_TRAIN = (("weights_source", ("train",)),)
_SIMULATED = (("weights_source", ("train",)), ("training_data", ("simulated", "physics")))


def training_params(name: str) -> tuple[Param, ...]:
    """The "Train now" parameters of network ``name``: where the pairs come from and the budget."""
    return (
        Param("training_data", "choice", "simulated", choices=SOURCES, label="Training data", group="training",
              when=_TRAIN, flags=("--source",), choice_kinds={"frames": ("stack",)},
              choice_labels={"simulated": "Simulated HRTEM pairs (no data needed)",
                             "physics": "The abTEM multislice set (a simulated .npz set)",
                             "frames": "Noise2Noise: pairs of registered frames of this stack",
                             "pairs": "Noisy/clean pairs: this dataset and its clean version"},
              help="simulated: phantoms made on the fly; physics: the cached abTEM multislice set (cache); frames: "
                   "Noise2Noise from the frames of a stack; pairs: the data and its clean version (clean)."),
        Param("clean", "path", None, label="Clean version of the data", group="training",
              when=_TRAIN + (("training_data", ("pairs",)),), flags=("--clean",),
              help="The clean counterpart of the data (same shape), for noisy/clean pairs; empty: the "
                   "dataset's ground truth."),
        Param("cache", "path", None, label="abTEM set (.npz)", group="training", file_types=("npz",),
              when=_TRAIN + (("training_data", ("physics",)),),
              help="The abTEM multislice set (.npz) made by the workbench's abTEM script; empty: the set cached "
                   "on this machine, if any."),
        Param("steps", "int", 300, min=1, max=200_000, label="Training steps", group="training", when=_TRAIN,
              help=f"Optimiser steps. How many a {MODEL_CLASS[name]} does a second depends on the machine and on "
                   "what else runs on it (a GPU does many times more than a CPU); the estimate beside Run is "
                   "for this machine, and the time left while it trains is measured."),
        Param("max_minutes", "float", None, min=0.01, max=24 * 60, label="Time limit (min)", group="training",
              when=_TRAIN, help="Stop training after this many minutes and keep the best model so far; "
                                "empty: no limit."),
        Param("batch_size", "int", 4, min=1, max=256, label="Batch size", group="training", when=_TRAIN,
              flags=("--batch",), help="Patches per step."),
        Param("patch_size", "int", 128, min=16, max=1024, label="Patch (px)", group="training", when=_TRAIN,
              flags=("--patch",), help="Side of the training patches in pixels."),
        Param("lr", "float", 1e-3, min=1e-7, max=1.0, log=True, label="Learning rate", group="training",
              when=_TRAIN, help="Peak learning rate (Adam, cosine schedule after a short warm-up)."),
        Param("dose_min", "float", 0.3, min=0.01, max=1e4, label="Dose min (e⁻/px, simulated)", group="training",
              when=_SIMULATED, help="Lowest dose of the simulated noisy images."),
        Param("dose_max", "float", 20.0, min=0.01, max=1e4, label="Dose max (e⁻/px, simulated)", group="training",
              when=_SIMULATED, help="Highest dose of the simulated noisy images."),
        Param("noise", "choice", "mixed", choices=("mixed", "poisson", "poisson_gaussian"), label="Noise (simulated)",
              group="training", when=_SIMULATED, help="Noise model of the simulated noisy images."),
        Param("finetune", "bool", False, label="Start from the shipped weights (fine-tune)", group="training",
              when=_TRAIN, help="Fine-tuning the shipped network on your data needs far fewer steps than "
                                "training from scratch (same architecture only)."),
    )


@dataclass(frozen=True)
class TrainingPlan(TrainConfig):
    """How to train a supervised network (validated on construction).

    The training loop's settings (steps, time limit, batch, patch, learning rate, seed,
    device, validation interval, …) are those of :class:`emcore.train.config.TrainConfig`,
    inherited; :meth:`loop_config` gives the loop its part.

    Parameters
    ----------
    warmup_steps : int or None
        Linear warm-up of the learning rate; None: 5 % of the steps, at most 200.
    model : {"dncnn", "unet"}
    source : {"simulated", "physics", "frames", "pairs"}
        HRTEM phantoms simulated on the fly; the cached abTEM multislice set
        (:mod:`emcore.train.physics_set`, made by ``benchmarks/make_abtem_set.py``) at ``cache``;
        Noise2Noise from the frames of the dataset (a stack); or the dataset and its clean
        counterpart (the ground truth, or a clean file).
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
    val_patches : int
        Validation patches of the simulated sources.
    cache : str or None
        The abTEM set for ``source="physics"``.
    prior : {None, "wiener"}
        Give the network a prior channel (:mod:`emcore.methods.prior`): it reads the noisy
        image and the self-calibrated Wiener filter of the whole frame, and learns a correction
        of the latter. Trained on whole fields of the abTEM set (``source="physics"``,
        :class:`emcore.train.prior_fields.PriorFields`). Starting from shipped weights without
        a prior channel, the new channel's input weights and the correction head start at zero,
        so training starts from the prior itself and the shipped network's features. Every source
        supplies it: whole simulated fields (:class:`emcore.train.prior_fields.PriorFields`) or the
        prior of each whole frame of the user's data.
    field_size : int
        Side of the whole fields the prior is computed on (prior networks).
    """

    warmup_steps: int | None = None
    model: str = "unet"
    source: str = "simulated"
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
    val_patches: int = 8
    cache: str | None = None
    prior: str | None = None
    field_size: int = 512

    def __post_init__(self):
        if self.model not in MODEL_CLASS:
            raise EmcoreError(f"Unknown network '{self.model}'; train dncnn or unet.")
        if self.source not in SOURCES:
            raise EmcoreError(f"Unknown training data '{self.source}'; use one of {', '.join(SOURCES)}.")
        if self.freeze_norm and not self.bias_free:
            raise EmcoreError("Freezing the normalisation statistics is for bias-free networks; add --bias-free.")
        if self.prior not in (None, "wiener"):
            raise EmcoreError(f"Unknown prior channel {self.prior!r}; use 'wiener' or none.")
        if self.prior and self.source in ("simulated", "physics") and self.patch_size > self.field_size:
            raise EmcoreError(f"The {self.patch_size}-px patch is larger than the {self.field_size}-px fields.")
        self.loop_config()  # validates the loop's settings

    def loop_config(self) -> TrainConfig:
        """The training loop's settings: the inherited ones, with the warm-up filled in, validation at
        least at the end, and patches allowed to shrink to 16 px (or the patch, if smaller)."""
        loop = {f.name: getattr(self, f.name) for f in fields(TrainConfig)}
        steps = self.steps
        warmup = self.warmup_steps if self.warmup_steps is not None else min(200, steps // 20 if steps else 0)
        loop.update(warmup_steps=warmup, val_every=min(self.val_every, steps or self.val_every),
                    min_patch=min(self.min_patch, self.patch_size))
        return TrainConfig(**loop)

    @classmethod
    def from_params(cls, model: str, params: dict[str, Any], **settings) -> "TrainingPlan":
        """The plan for the values of :func:`training_params`; ``settings`` are further fields
        (seed, device, architecture, …; ``max_seconds`` instead of the minutes)."""
        lo, hi = sorted((float(params["dose_min"]), float(params["dose_max"])))
        minutes = params["max_minutes"]
        steps = int(params["steps"])
        settings.setdefault("val_every", max(10, min(100, steps // 5)))
        settings.setdefault("max_seconds", None if minutes is None else 60.0 * float(minutes))
        return cls(model=model, source=params["training_data"], steps=steps, batch_size=int(params["batch_size"]), patch_size=int(params["patch_size"]), lr=float(params["lr"]),
                   dose_min=lo, dose_max=hi, noise=params["noise"], start_from_shipped=bool(params["finetune"]),
                   cache=params["cache"], **settings)

    def build(self):
        import models

        try:
            prior = {"in_channels": 2, "prior": True} if self.prior else {}
            if self.model == "dncnn":
                return models.DnCNN(depth=self.depth, width=self.width, bias=not self.bias_free,
                                    **({"residual": False, **prior} if prior else {}))
            return models.UNet(scales=self.scales, base=self.base, bias=not self.bias_free, **prior)
        except ValueError as err:
            raise EmcoreError(f"This {MODEL_CLASS[self.model]} cannot be built: {str(err).rstrip('.')}.") from None


@dataclass
class TrainedNetwork:
    """What :func:`fit_network` returns: the weights file, its card and the training result."""

    path: Path
    card: dict
    result: Any  # emcore.train.TrainResult


def _source_for(plan: TrainingPlan, dataset: Dataset | None, clean: np.ndarray | None):
    from emcore.train.pairs import FramePairs, ImagePairs
    from emcore.train.simulated import SimulatedPairs

    prior_fn = None
    if plan.prior:
        from emcore.methods.prior import wiener_prior

        def prior_fn(frame):
            return wiener_prior(frame)[0]
    if plan.prior and plan.source in ("physics", "simulated"):
        from emcore.train.physics_set import DEFAULT_CACHE
        from emcore.train.prior_fields import PriorFields

        fields = dict(prior_fn=prior_fn, dose_range=(plan.dose_min, plan.dose_max), noise=plan.noise,
                      field_size=plan.field_size, n_val=plan.val_patches)
        if plan.source == "simulated":
            src = PriorFields(make_clean=_phantom_field, pool=16, **fields)
            return src, (f"emcore.sim HRTEM phantoms, whole {plan.field_size}-px fields with their self-calibrated "
                         f"Wiener prior, {plan.dose_min:g}–{plan.dose_max:g} e⁻/px, {plan.noise} noise")
        path = plan.cache or DEFAULT_CACHE
        src = PriorFields(path=path, **fields)
        return src, (f"abTEM multislice Pt/CeO2 set {Path(path).name}, whole fields up to {plan.field_size} px with "
                     f"their self-calibrated Wiener prior, {plan.dose_min:g}–{plan.dose_max:g} e⁻/px, {plan.noise} noise")
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
        src = FramePairs(dataset.data, prior_fn=prior_fn)
        what = f"Noise2Noise pairs of registered frames of {dataset.name}"
    else:
        clean = dataset.ground_truth if clean is None else clean
        if clean is None:
            raise EmcoreError(f"Training on pairs needs a clean version of {dataset.name}; it has none. "
                              "Load one, or use Noise2Noise (stacks) or simulated images.")
        src = ImagePairs(dataset.data, clean, prior_fn=prior_fn)
        what = f"noisy/clean pairs of {dataset.name}"
    if src.max_patch < plan.patch_size:
        raise EmcoreError(f"{dataset.name} ({src.max_patch} px across after registration) is smaller than the "
                          f"training patch ({plan.patch_size} px); choose a patch of at most {src.max_patch} px.")
    return src, what


def _phantom_field(rng: np.random.Generator, side: int) -> np.ndarray:
    """A clean HRTEM phantom field of the workbench's simulator at a random pixel size."""
    import math

    from emcore.sim.hrem import hrem_phantom

    pixel = float(math.exp(rng.uniform(math.log(0.0045), math.log(0.02))))
    return hrem_phantom((side, side), rng=rng, pixel_size_nm=pixel)


def fit_network(
    plan: TrainingPlan,
    dataset: Dataset | None = None,
    *,
    shipped=None,
    started_from: Callable[[bool], dict] | None = None,
    clean: np.ndarray | None = None,
    out: str | Path | None = None,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    command: str | None = None,
) -> TrainedNetwork:
    """Train a DnCNN or UNet and write its weights file with a JSON card beside it.

    ``shipped`` is the shipped network to start from when ``plan.start_from_shipped``, and
    ``started_from(converted)`` what the card records of it;
    :func:`emcore.methods.supervised.train_network` passes both. The other arguments are those of
    that function.
    """
    from emcore.train.loop import train
    from emcore.train.losses import MSELoss
    from emcore.train.weights import save_weights

    source, what = _source_for(plan, dataset, clean)
    model = plan.build()
    card_start = None
    if plan.start_from_shipped:
        theirs, ours = shipped.config(), model.config()
        drop_constants = theirs != ours and {**theirs, "bias": False} == ours  # biased -> bias-free
        widen = theirs != ours and {**theirs, "in_channels": 2, "prior": True,
                                    **({"residual": False} if plan.model == "dncnn" else {})} == ours
        if widen:
            from models.dncnn import add_prior_channel

            add_prior_channel(model, shipped)
        elif theirs != ours and not drop_constants:
            raise EmcoreError(f"The shipped {MODEL_CLASS[plan.model]} has {theirs}; fine-tuning needs the "
                              "same architecture — set it, or train from scratch.")
        if drop_constants:
            from models.dncnn import load_without_constants

            load_without_constants(model, shipped)
        elif not widen:
            model.load_state_dict(shipped.state_dict())
        card_start = started_from(drop_constants) if started_from is not None else None
        if widen and card_start is not None:
            card_start["converted"] = ("prior channel added: its input weights and the correction head start at "
                                       "zero, so the network starts by returning the Wiener prior")
    if plan.freeze_norm:
        from models.dncnn import freeze_bias_free_norms

        freeze_bias_free_norms(model)
    result = train(model, source, MSELoss(), plan.loop_config(), progress=progress, should_stop=should_stop,
                   checkpoint_dir=checkpoint_dir, resume=resume)
    best_psnr = max((h["val_psnr"] for h in result.history if h.get("val_psnr") is not None), default=None)
    card = {
        "command": command, "model": plan.model, "config": model.config(), "plan": asdict(plan),
        "steps": result.steps_done, "status": result.status, "message": result.message,
        "dose_range": [plan.dose_min, plan.dose_max] if plan.source in ("simulated", "physics") else None,
        "noise": plan.noise if plan.source in ("simulated", "physics") else None, "seed": plan.seed,
        "batch": result.batch_size, "patch": result.patch_size, "lr": plan.lr,
        "validation_psnr_db": best_psnr, "validation_input_psnr_db": result.input_psnr,
        "warning": result.warning, "device": result.device, "seconds": round(result.seconds, 1),
        "data": what, "input_normalisation": "divide by the image mean (emcore.train.simulated.normalise)",
        "started_from": card_start,
        "prior": plan.prior,
    }
    if plan.source == "physics" and getattr(source, "meta", None):
        from emcore.train.physics_set import data_set_card

        card["data_set"] = data_set_card(source.meta, len(source))
    path = Path(out) if out else Path(tempfile.mkdtemp(prefix="emcore-weights-")) / f"{plan.model}.pt"
    save_weights(model.cpu(), path, card)
    Path(str(path) + ".json").write_text(json.dumps(card, indent=2, default=float))
    return TrainedNetwork(path=path, card=card, result=result)
