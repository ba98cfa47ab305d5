"""The single method registry and the one call that runs any method: :func:`denoise`.

A method is added in one place — a :class:`Method` entry passed to :func:`register` — that
declares its name, label, description, kind, the data kinds it accepts and its parameters.
The Denoise page builds its widgets from those declarations, the CLI accepts
``--set name=value`` for them, and one contract test runs over every entry.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np

from emcore.data.dataset import Dataset
from emcore.errors import EmcoreError, Stopped  # noqa: F401  (Stopped: re-exported)
from emcore.progress import ProgressFn, StopFn

MethodKind = Literal["classical", "supervised", "self-supervised"]
ParamType = Literal["float", "int", "bool", "choice", "path"]


@dataclass(frozen=True)
class Param:
    """A declared method parameter.

    ``default=None`` with ``auto=True`` means "estimated from the data unless given"; the
    value actually used is reported in :attr:`DenoiseResult.params`. A ``"path"`` parameter
    names a file (e.g. a weights file); ``None`` or an empty string means "the built-in
    default". The app fills it from an upload saved under a name of its own, never the
    uploaded name.
    """

    name: str
    type: ParamType
    default: Any
    help: str
    label: str = ""
    min: float | None = None
    max: float | None = None
    choices: tuple = ()
    auto: bool = False
    log: bool = False

    @property
    def title(self) -> str:
        return self.label or self.name.replace("_", " ").capitalize()

    def coerce(self, value: Any, method: str) -> Any:
        """Validate ``value`` (a Python value or a CLI string) and return it typed."""
        where = f"Parameter '{self.name}' of {method}"
        if self.type == "path":
            text = "" if value is None else str(value).strip()
            return text or None
        if value is None or (isinstance(value, str) and value.strip().lower() in ("auto", "none", "")):
            if self.auto:
                return None
            if value is None and self.default is None:
                return None
            raise EmcoreError(f"{where} needs a value; it cannot be estimated automatically.")
        try:
            if self.type == "bool":
                if isinstance(value, str):
                    low = value.strip().lower()
                    if low not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
                        raise ValueError(value)
                    value = low in ("true", "1", "yes", "on")
                v: Any = bool(value)
            elif self.type == "int":
                f = float(value)
                if not f.is_integer():
                    raise ValueError(value)
                v = int(f)
            elif self.type == "float":
                v = float(value)
                if not math.isfinite(v):
                    raise ValueError(value)
            else:
                v = str(value)
                if v not in self.choices:
                    raise EmcoreError(f"{where} must be one of {', '.join(map(str, self.choices))}, not {v!r}.")
        except (TypeError, ValueError):
            raise EmcoreError(f"{where} must be a{'n' if self.type == 'int' else ''} {self.type}, not {value!r}.") from None
        if self.type in ("int", "float"):
            if self.min is not None and v < self.min or self.max is not None and v > self.max:
                raise EmcoreError(f"{where} must lie between {self.min:g} and {self.max:g}; got {v:g}.")
        return v


@dataclass
class RunContext:
    """What a running method gets besides its data and parameters."""

    rng: np.random.Generator
    seed: int
    device: str
    progress: ProgressFn | None = None
    should_stop: StopFn | None = None
    log: list[str] = field(default_factory=list)
    resolved: dict[str, Any] = field(default_factory=dict)
    # What a learned method leaves for inspection (see DenoiseResult.artifacts).
    artifacts: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    """A registry entry.

    ``run(dataset, params, ctx)`` returns the denoised array, of the dataset's shape.
    """

    name: str
    label: str
    description: str
    kind: MethodKind
    accepts: tuple[str, ...]
    params: tuple[Param, ...]
    run: Callable[[Dataset, dict, RunContext], np.ndarray]
    uses_torch: bool = False
    details: str = ""
    # The smallest run that still exercises the whole method (tiny training budgets): used by
    # the contract test and quick benchmarks so learned methods finish in seconds.
    quick: dict = field(default_factory=dict)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise EmcoreError(
            f"{self.name} has no parameter '{name}'; its parameters are: "
            f"{', '.join(p.name for p in self.params) or 'none'}."
        )

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def to_dict(self) -> dict:
        return {
            "name": self.name, "label": self.label, "description": self.description, "kind": self.kind,
            "accepts": list(self.accepts),
            "params": [
                {"name": p.name, "type": p.type, "default": p.default, "min": p.min, "max": p.max,
                 "choices": list(p.choices), "auto": p.auto, "help": p.help}
                for p in self.params
            ],
        }


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in _REGISTRY:
        raise ValueError(f"method {method.name!r} registered twice")  # a bug, not user input
    _REGISTRY[method.name] = method
    return method


def methods() -> list[Method]:
    """Every registered method, in registration order."""
    return list(_REGISTRY.values())


def get_method(name: str) -> Method:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise EmcoreError(f"Unknown method '{name}'; the methods are: {', '.join(_REGISTRY)}.") from None


def methods_for(kind: str) -> list[Method]:
    return [m for m in methods() if kind in m.accepts]


@dataclass(frozen=True)
class DenoiseResult:
    """What :func:`denoise` returns."""

    data: np.ndarray
    method: str
    params: dict[str, Any]
    seconds: float
    device: str
    log: tuple[str, ...] = ()
    # Learned methods leave here what the "what is the network looking at?" view needs:
    #   "apply": callable(torch.Tensor) -> torch.Tensor, differentiable, deterministic, on
    #            the CPU, mapping input data in the dataset's units (an image (H, W), or a
    #            cube (H, W, E)) to the method's output of the same shape; it works on crops
    #            (any size at least "min_size") with the normalisation of the whole input
    #            fixed, so a pixel's filter can be taken on a window around it;
    #   "receptive_field": int, pixels the output at a pixel can depend on (side length);
    #   "min_size": int, the smallest crop side "apply" accepts;
    #   "training": list of dict, the training history (when the method trained).
    # Not part of to_dict(): these are live objects.
    artifacts: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"method": self.method, "params": self.params, "seconds": round(self.seconds, 4),
                "device": self.device, "shape": list(self.data.shape)}


def resolve_device(device: str, uses_torch: bool) -> str:
    if not uses_torch:
        return "cpu"
    if device not in ("auto", "cpu", "cuda", "mps"):
        raise EmcoreError(f"Unknown device '{device}'; use auto, cpu, cuda or mps.")
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise EmcoreError("CUDA was requested but no CUDA GPU is available here; use --device cpu or auto.")
    return device


def check_params(method: Method, params: dict[str, Any]) -> dict[str, Any]:
    """Defaults filled in, unknown names refused, values validated."""
    for k in params:
        method.param(k)
    return {p.name: p.coerce(params.get(p.name, p.default), method.name) for p in method.params}


def denoise(
    dataset: Dataset,
    method: str,
    *,
    progress: ProgressFn | None = None,
    should_stop: StopFn | None = None,
    seed: int = 0,
    device: str = "auto",
    **params,
) -> DenoiseResult:
    """Run a registered method on a dataset.

    Parameters
    ----------
    dataset : Dataset
        Left unchanged.
    method : str
        A registered name (``python -m emcore methods`` lists them).
    progress, should_stop : callables, optional
        Progress callback and stop request, as in ``shared/STYLE.md``.
    seed : int
        Seeds every random choice the method makes; same seed, same result.
    device : {"auto", "cpu", "cuda", "mps"}
        Where learned methods run; classical ones always run on the CPU.
    **params
        The method's declared parameters; ``None`` means "estimate" where allowed.

    Returns
    -------
    DenoiseResult
        Denoised float32 array of the dataset's shape, the parameters actually used
        (estimated values filled in), seconds, device and a log.
    """
    m = get_method(method)
    if dataset.kind not in m.accepts:
        others = ", ".join(x.name for x in methods_for(dataset.kind)) or "none yet"
        words = {"image": "an image", "stack": "a stack of images", "cube": "a spectrum image"}
        plural = {"image": "images", "stack": "stacks of images", "cube": "spectrum images"}
        raise EmcoreError(
            f"{m.label} works on {' or '.join(plural[k] for k in m.accepts)}, "
            f"but {dataset.name} is {words[dataset.kind]}; methods for {words[dataset.kind]}: {others}."
        )
    values = check_params(m, params)
    ctx = RunContext(rng=np.random.default_rng(seed), seed=seed, device=resolve_device(device, m.uses_torch),
                     progress=progress, should_stop=should_stop)
    t0 = time.perf_counter()
    out = m.run(dataset, dict(values), ctx)
    seconds = time.perf_counter() - t0
    out = np.asarray(out, dtype=np.float32)
    if out.shape != dataset.data.shape:  # a bug in the method, not user input
        raise RuntimeError(f"{m.name} returned shape {out.shape} for data of shape {dataset.data.shape}")
    if not np.all(np.isfinite(out)):
        raise EmcoreError(f"{m.label} produced NaN or infinite values on {dataset.name}; try other parameters.")
    used = {**values, **ctx.resolved}
    return DenoiseResult(data=out, method=m.name, params=used, seconds=seconds, device=ctx.device, log=tuple(ctx.log),
                         artifacts=dict(ctx.artifacts))
