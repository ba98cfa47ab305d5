"""Weights files: a trained model as a plain dictionary with a JSON card beside it.

:func:`save_weights` / :func:`load_weights` write and read a trained model as a plain
dictionary that ``torch.load(..., weights_only=True)`` reads (no pickled code); the card
(``<file>.json``) records how the weights were made.
"""

from __future__ import annotations

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
    if not path.is_file():
        raise EmcoreError(f"The {what} file {path} does not exist.")
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
    return data


def _describe(name: str | None, config: dict | None) -> str:
    name = name or "model"
    art = "an" if name[:1].lower() in "aeio" else "a"
    if not config:
        return f"{art} {name}"
    return f"{art} {name} with " + ", ".join(f"{k} {v}" for k, v in config.items())


def _plain(x: Any) -> Any:
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return x


def _check_architecture(model: nn.Module, name: str | None, config: dict | None, path: Path) -> None:
    mine, my_cfg = type(model).__name__, _model_config(model)
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
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensor(s) such as '{missing[0]}'")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensor(s) such as '{unexpected[0]}'")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} of another shape, such as '{k}' {tuple(state[k].shape)} instead of "
                         f"{tuple(own[k].shape)}")
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
        When the file is missing, unreadable, or not a weights file of this workbench.
    """
    return _read_dict(Path(path), WEIGHTS_FORMAT, "weights file")


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
    name, config = data.get("model"), data.get("config") or {}
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
        except (TypeError, ValueError) as err:  # unknown keys, or values out of the model's ranges
            raise EmcoreError(
                f"{path.name} holds weights for {_describe(name, config)}, which this model cannot be built "
                f"from ({err}); choose the matching model or weights file."
            ) from None
    _check_architecture(model, name, config or None, path)
    _load_state(model, data["state_dict"], path)
    model.eval()
    return model
