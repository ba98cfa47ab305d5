"""The single method registry and the one call that runs any method: :func:`denoise`.

A method is added in one place — a :class:`Method` entry passed to :func:`register` — that
declares its name, label, description, kind, the data kinds it accepts, its parameters
(training knobs included), a cost estimate, whether the filter view applies and its lesson
for the Learn page. The Denoise and Learn pages build everything from those declarations, the
CLI accepts ``--set name=value`` for them, and one contract test runs over every entry; no page
or CLI code names a method.

One convention for values a method chooses itself: ``None``. A parameter with ``auto=True``
is then estimated from the data; one with ``preset=True`` takes the value of the method's
preset (:attr:`Method.preset_values` says which, so a form can show it).
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal

import numpy as np

from emcore.data.dataset import Dataset
from emcore.errors import EmcoreError, Stopped  # noqa: F401  (Stopped: re-exported)
from emcore.methods.lesson import Lesson
from emcore.progress import ProgressFn, StopFn

MethodKind = Literal["classical", "supervised", "self-supervised", "meta"]
ParamType = Literal["float", "int", "bool", "choice", "path"]


@dataclass(frozen=True)
class Param:
    """A declared method parameter.

    ``None`` is the one value meaning "the method chooses": with ``auto=True`` it is estimated
    from the data, with ``preset=True`` it is the value of the method's preset
    (:attr:`Method.preset_values`); the value actually used is reported in
    :attr:`DenoiseResult.params`. A ``"path"`` parameter names a file (e.g. a weights file);
    ``None`` or an empty string means "the built-in default" — unless ``required``: then it
    needs a value whenever it applies (see ``when``). The app fills it from an upload saved
    under a name of its own (``upload``), never the uploaded name.

    Attributes beyond the value's type and range say where the parameter shows: ``group``
    ("" for the main form, "training" or "advanced"); ``when``, pairs ``(other parameter,
    values)`` that must all hold for it to matter (the form hides it otherwise);
    ``choice_labels``, words for the choices; ``choice_kinds``, choices offered only for some
    data kinds; ``kinds``, the data kinds the parameter matters for (empty: all; the form hides
    it for the others); ``file_types``, the extensions an upload may have; ``flags``, further spellings
    of its option in ``python -m emcore train``.
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
    preset: bool = False
    required: bool = False
    group: str = ""
    when: tuple[tuple[str, tuple], ...] = ()
    choice_labels: dict = field(default_factory=dict)
    choice_kinds: dict = field(default_factory=dict)
    kinds: tuple[str, ...] = ()
    file_types: tuple[str, ...] = ()
    upload: Callable[[bytes, str, str], str] | None = None
    flags: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        return self.label or self.name.replace("_", " ").capitalize()

    def applies(self, values: dict[str, Any], kind: str | None = None) -> bool:
        """Whether this parameter matters, given the values of the others (see ``when``) and,
        when given, the data kind (see ``kinds``)."""
        if kind is not None and self.kinds and kind not in self.kinds:
            return False
        return all(values.get(name) in allowed for name, allowed in self.when)

    def choices_for(self, kind: str) -> tuple:
        """The choices offered for data of ``kind`` (see ``choice_kinds``)."""
        return tuple(c for c in self.choices if kind in self.choice_kinds.get(c, (kind,)))

    def coerce(self, value: Any, method: str) -> Any:
        """Validate ``value`` (a Python value or a CLI string) and return it typed."""
        where = f"Parameter '{self.name}' of {method}"
        if self.type == "path":
            text = "" if value is None else str(value).strip()
            return text or None
        if value is None or (isinstance(value, str) and value.strip().lower() in ("auto", "preset", "none", "")):
            if self.auto or self.preset:
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
    # Plain-JSON findings worth printing (e.g. Auto's ranking; see DenoiseResult.summary).
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class FilterViewSpec:
    """How "what is the network looking at?" (:mod:`emcore.evaluate.filter_view`) applies to a
    method: its results carry ``artifacts["apply"]`` (see :class:`DenoiseResult`).

    ``label`` names the method in lists of the methods the view works on (default: its
    label); ``note``, when given, is added to every filter's description (what the view
    follows for this method, where that needs saying).
    """

    label: str = ""
    note: str = ""


EstimateFn = Callable[[tuple, str, dict], "float | None"]


@dataclass(frozen=True)
class Method:
    """A registry entry: everything the app, the CLI and the Learn page need about a method.

    ``run(dataset, params, ctx)`` returns the denoised array, of the dataset's shape.
    ``estimate_seconds(shape, kind, params)`` says roughly how long a run takes on this
    machine (``None``: cannot tell); ``params`` holds every parameter, defaults filled in.
    ``filter_view`` is set when the results carry a network the filter view can follow (the
    method then uses torch). ``lesson`` is its section of the Learn page. ``preset_values``
    maps the parameter values to the values the preset gives the ``preset=True`` parameters.
    ``cost_hint`` is what to try when a run would be long.
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
    estimate_seconds: EstimateFn | None = None
    filter_view: FilterViewSpec | None = None
    lesson: Lesson | None = None
    preset_values: Callable[[dict], dict] | None = None
    cost_hint: str = ""

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

    def from_preset(self, values: dict[str, Any]) -> dict[str, Any]:
        """The values the preset chosen in ``values`` gives the ``preset=True`` parameters."""
        if self.preset_values is None:
            return {}
        return dict(self.preset_values({**self.defaults(), **values}))

    def estimate(self, shape: tuple, kind: str, params: dict[str, Any] | None = None) -> float | None:
        """Rough seconds a run takes on data of ``shape`` and ``kind`` here, or None."""
        if self.estimate_seconds is None:
            return None
        secs = self.estimate_seconds(tuple(int(s) for s in shape), kind, check_params(self, dict(params or {})))
        return None if secs is None else float(secs)

    def to_dict(self) -> dict:
        return {
            "name": self.name, "label": self.label, "description": self.description, "kind": self.kind,
            "accepts": list(self.accepts), "uses_torch": self.uses_torch,
            "filter_view": self.filter_view is not None, "lesson": self.lesson is not None,
            "params": [
                {"name": p.name, "type": p.type, "default": p.default, "min": p.min, "max": p.max,
                 "choices": list(p.choices), "auto": p.auto, "preset": p.preset, "group": p.group,
                 "label": p.title, "help": p.help}
                for p in self.params
            ],
        }


_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in _REGISTRY:
        raise ValueError(f"method {method.name!r} registered twice")  # a bug, not user input
    _REGISTRY[method.name] = method
    return method


def unregister(name: str) -> Method:
    """Remove a method (tests that register one of their own)."""
    return _REGISTRY.pop(name)


@contextmanager
def registered(method: Method) -> Iterator[Method]:
    """``with registered(Method(...)):`` — the method is in the registry inside the block only."""
    register(method)
    try:
        yield method
    finally:
        unregister(method.name)


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
    # Plain-JSON findings of the run that the CLI prints with it (Auto's ranking, for one).
    summary: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"method": self.method, "params": self.params, "seconds": round(self.seconds, 4), **self.summary,
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
    """Defaults filled in, unknown names refused, values validated, required values present."""
    for k in params:
        method.param(k)
    values = {p.name: p.coerce(params.get(p.name, p.default), method.name) for p in method.params}
    for p in method.params:
        if p.required and values[p.name] is None and p.applies(values):
            because = " and ".join(f"{method.param(n).title} is {values[n]!r}" for n, _ in p.when)
            raise EmcoreError(f"{method.label} needs a {p.title.lower()} ({p.name}) when {because}: give one, "
                              f"or choose otherwise.")
    return values


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
                         artifacts=dict(ctx.artifacts), summary=dict(ctx.summary))
