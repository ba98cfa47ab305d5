"""Weights files: a trained model as a plain dictionary with a JSON card beside it.

:func:`save_weights` / :func:`load_weights` write and read a trained model as a plain
dictionary that ``torch.load(..., weights_only=True)`` reads (no pickled code); the card
(``<file>.json``) records how the weights were made.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from emcore.errors import EmcoreError

WEIGHTS_FORMAT = "emcore-weights-1"


def _cpu_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _model_config(model: nn.Module) -> dict | None:
    cfg = getattr(model, "config", None)
    if callable(cfg):
        return dict(cfg())
    return None


def _atomic_save(obj: Any, path: Path) -> None:
    # Write then rename: a job killed mid-write never leaves a truncated checkpoint.
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


# ------------------------------------------------------------------------ weights


def _read_dict(path: Path, fmt: str, what: str) -> dict:
    path = Path(path)
    if path.is_dir():
        raise EmcoreError(f"{path} is a folder, not a {what}; give the path of the file itself.")
    if not path.is_file():
        raise EmcoreError(f"The {what} {path} does not exist.")
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols of foreign files; such files get our sentence.
            warnings.simplefilter("ignore", UserWarning)
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's problem
        raise EmcoreError(
            f"{path.name} is not a {what} saved by this workbench (it could not be read safely: "
            f"{type(err).__name__}); choose another file."
        ) from None
    if not isinstance(data, dict) or data.get("format") != fmt or not isinstance(data.get("state_dict"), dict):
        raise EmcoreError(f"{path.name} is not a {what} saved by this workbench; choose another file.")
    _check_tensors(data["state_dict"], path, what)
    return data


# Everything below a weights file's "format" comes from an untrusted file: each field is
# checked here, so that a damaged or hand-made file gets a sentence, never a traceback later.
_MAX_DEPTH = 32


def _what_it_is(x: Any) -> str:
    """How a microscopist would call the Python value ``x`` found in a file."""
    if x is None:
        return "empty"
    if isinstance(x, bool):
        return f"the truth value {x}"
    if isinstance(x, (int, float)):
        return f"the number {_short(x)}"
    if isinstance(x, str):
        return f"the text {_short(x)!r}"
    if isinstance(x, (list, tuple)):
        return "a list"
    if isinstance(x, dict):
        return "a table"
    if isinstance(x, Tensor):
        return "a tensor"
    return f"a {type(x).__name__}"


def _short(x: Any, n: int = 40) -> str:
    text = " ".join(str(x).split())  # one line, whatever the file holds
    return text if len(text) <= n else text[: n - 1] + "…"


def _is_plain(x: Any, finite: bool, depth: int = 0) -> bool:
    """True for JSON-like values: None, bool, int, str, float (finite if asked), lists, str-keyed dicts."""
    if depth > _MAX_DEPTH:
        return False
    if x is None or isinstance(x, (bool, int, str)):
        return True
    if isinstance(x, float):
        return math.isfinite(x) or not finite
    if isinstance(x, (list, tuple)):
        return all(_is_plain(v, finite, depth + 1) for v in x)
    if isinstance(x, dict):
        return all(isinstance(k, str) and _is_plain(v, finite, depth + 1) for k, v in x.items())
    return False


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_tensors(state: dict, path: Path, what: str) -> None:
    for k, v in state.items():
        if not isinstance(k, str):
            raise EmcoreError(f"{path.name} is not a usable {what}: one of its weights is named by "
                              f"{_what_it_is(k)} instead of a layer name; choose another file.")
        if not isinstance(v, Tensor) or v.layout != torch.strided or v.is_complex():
            raise EmcoreError(
                f"{path.name} is not a usable {what}: its weights '{_short(k)}' are {_what_it_is(v)}, not a "
                "tensor of real numbers; choose another file."
            )


def _check_weights_fields(data: dict, path: Path) -> None:
    """Refuse a weights file whose model name, settings or card are not what save_weights writes."""
    bad = f"{path.name} is not a usable weights file:"
    name = data.get("model")
    if not isinstance(name, str) or not name.isidentifier() or len(name) > 64:
        raise EmcoreError(f"{bad} its model name is {_what_it_is(name)}, not the name of a network; "
                          "choose another file.")
    config = data.get("config")
    if not isinstance(config, dict):
        raise EmcoreError(f"{bad} its model settings are {_what_it_is(config)} instead of a table of names and "
                          "values; choose another file.")
    for k, v in config.items():
        if not isinstance(k, str) or not k.isidentifier():
            raise EmcoreError(f"{bad} its model settings hold {_what_it_is(k)} where a setting name belongs; "
                              "choose another file.")
        if not _is_plain(v, finite=True):
            raise EmcoreError(f"{bad} its model setting '{k}' is {_what_it_is(v)}, not a plain finite value; "
                              "choose another file.")
    card = data.get("card")
    if not isinstance(card, dict) or not _is_plain(card, finite=False):
        raise EmcoreError(f"{bad} its model card is {_what_it_is(card)} instead of a table of plain names and "
                          "values; choose another file.")
    # The card fields the workbench reads and shows (emcore.methods.supervised).
    psnr = card.get("validation_psnr_db")
    if psnr is not None and not _is_number(psnr):
        raise EmcoreError(f"{bad} its card gives the validation PSNR as {_what_it_is(psnr)}, not a finite number "
                          "of dB; choose another file.")
    steps = card.get("steps")
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 0):
        raise EmcoreError(f"{bad} its card gives the training steps as {_what_it_is(steps)}, not a whole number "
                          "of zero or more; choose another file.")
    for key in ("data", "model", "status", "message"):
        if card.get(key) is not None and not isinstance(card[key], str):
            raise EmcoreError(f"{bad} its card gives '{key}' as {_what_it_is(card[key])}, not as text; "
                              "choose another file.")


def _check_finite(model_name: str, state: dict, path: Path) -> None:
    for k, v in state.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise EmcoreError(
                f"{path.name} holds NaN or infinite values in '{_short(k)}', so this {model_name} would give no "
                "image; choose weights from a training that did not diverge."
            )


def _describe(name: str | None, config: dict | None) -> str:
    name = _short(name, 64) if isinstance(name, str) and name else "model"
    art = "an" if name[:1].lower() in "aeio" else "a"
    if not config or not isinstance(config, dict):
        return f"{art} {name}"
    return f"{art} {name} with " + ", ".join(f"{_short(k)} {_short(v)}" for k, v in config.items())


def _plain(x: Any) -> Any:
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return x


def _check_architecture(model: nn.Module, name: str | None, config: dict | None, path: Path) -> None:
    mine, my_cfg = type(model).__name__, _model_config(model)
    if config is not None and my_cfg is not None and name == mine:
        # Files written before an argument was added lack it: it had its default then.
        import inspect

        defaults = {n: p.default for n, p in inspect.signature(type(model).__init__).parameters.items()
                    if p.default is not inspect.Parameter.empty}
        config = {**{k: v for k, v in defaults.items() if k in my_cfg}, **config}
    same = name == mine and (config is None or my_cfg is None or _plain(config) == _plain(my_cfg))
    if not same:
        raise EmcoreError(
            f"{Path(path).name} holds weights for {_describe(name, config)}, not for {_describe(mine, my_cfg)}; "
            "choose the matching model or weights file."
        )


def _load_state(model: nn.Module, state: dict, path: Path) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    # load_state_dict would silently cast integers into float weights (or the reverse).
    kind = [k for k in own if k in state and k not in wrong
            and own[k].is_floating_point() != state[k].is_floating_point()]
    if missing or unexpected or wrong or kind:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensor(s) such as '{missing[0]}'")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s) such as '{_short(unexpected[0])}'")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} of another shape, such as '{k}' {tuple(state[k].shape)} instead of "
                         f"{tuple(own[k].shape)}")
        if kind:
            k = kind[0]
            parts.append(f"{len(kind)} of another number type, such as '{k}' {str(state[k].dtype)[6:]} instead of "
                         f"{str(own[k].dtype)[6:]}")
        raise EmcoreError(
            f"{Path(path).name} does not fit this {type(model).__name__}: {'; '.join(parts)}; "
            "choose the weights trained for this architecture."
        )
    model.load_state_dict(state)


def save_weights(model: nn.Module, path: str | os.PathLike, card: dict | None = None) -> Path:
    """Save a trained model as a weights file.

    Parameters
    ----------
    model : torch.nn.Module
        If it has ``config()`` (a dict of plain values rebuilding it: ``type(model)(**config)``)
        that is stored too, so :func:`load_weights` can rebuild the model.
    path : path
    card : dict, optional
        A model card of plain values (str, numbers, bools, None, lists, dicts): what it was
        trained on, method, noise, date, metrics...

    Returns
    -------
    Path
        The file written: a dict ``{"format": "emcore-weights-1", "model": class name,
        "config": model.config() or {}, "state_dict": CPU tensors, "card": card}`` saved with
        ``torch.save`` and readable with ``torch.load(path, weights_only=True)``.
    """
    path = Path(path)
    data = {
        "format": WEIGHTS_FORMAT,
        "model": type(model).__name__,
        "config": _model_config(model) or {},
        "state_dict": _cpu_state(model),
        "card": dict(card or {}),
    }
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_save(data, path)
    return path


def read_weights(path: str | os.PathLike) -> dict:
    """Read a weights file safely (``weights_only=True``) without building a model.

    Returns
    -------
    dict
        ``format``, ``model``, ``config``, ``state_dict``, ``card``.

    Raises
    ------
    EmcoreError
        When the file is missing, a folder, unreadable, or not a weights file of this
        workbench: every field is checked (model name, settings, tensors, and the card fields
        the workbench reads: ``validation_psnr_db``, ``steps``, ``data``...).
    """
    path = Path(path)
    data = _read_dict(path, WEIGHTS_FORMAT, "weights file")
    _check_weights_fields(data, path)
    return data


def load_weights(model_factory_or_module: nn.Module | Callable[..., nn.Module], path: str | os.PathLike) -> nn.Module:
    """Load a weights file into a model.

    Parameters
    ----------
    model_factory_or_module : torch.nn.Module or callable
        A model to fill (its class and ``config()`` must match the file), or a class /
        factory called as ``factory(**config)`` with the stored configuration.
    path : path
        A file written by :func:`save_weights`. Read with ``weights_only=True``: a file
        holding pickled code is refused, never run.

    Returns
    -------
    torch.nn.Module
        The model, on the CPU for a factory (a given module keeps its device), in eval mode.
        The model card is available from :func:`read_weights`.

    Raises
    ------
    EmcoreError
        Naming the file, when it is not a weights file of this workbench or holds weights for
        another architecture ("... holds weights for a UNet with base 64, not for a DnCNN ...").
    """
    path = Path(path)
    data = read_weights(path)
    name, config = data["model"], data["config"]
    target = model_factory_or_module
    if isinstance(target, nn.Module):
        model = target
    else:
        if isinstance(target, type) and target.__name__ != name:
            raise EmcoreError(
                f"{path.name} holds weights for {_describe(name, config)}, not for a {target.__name__}; "
                "choose the matching model or weights file."
            )
        try:
            model = target(**config)
        except (TypeError, ValueError, OverflowError) as err:  # unknown keys, or values out of the model's ranges
            raise EmcoreError(
                f"{path.name} holds weights for {_describe(name, config)}, which this model cannot be built "
                f"from ({_short(err, 200).rstrip('.')}); choose the matching model or weights file."
            ) from None
    _check_architecture(model, name, config or None, path)
    _check_finite(type(model).__name__, data["state_dict"], path)
    _load_state(model, data["state_dict"], path)
    model.eval()
    return model
