"""Weights files from outside: every malformed file gets one sentence, from the library and the CLI.

The files are made from the shipped DnCNN weights with one field spoiled each, plus files
that are not weights at all (truncated, random bytes, a pickle that would run code).
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from emcore import Dataset, EmcoreError
from emcore.cli import main
from emcore.methods.registry import denoise
from emcore.methods.supervised import SHIPPED, save_uploaded_weights
from emcore.train.weights import read_weights

NOT_OURS = "is not a weights file saved by this workbench (it could not be read safely"


class _RunsCode:
    """Unpickling this would create a folder: the proof that pickled code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _spoil(tmp_path, name: str, **fields) -> str:
    data = torch.load(SHIPPED["dncnn"], map_location="cpu", weights_only=True)
    data.update(fields)
    path = tmp_path / name
    torch.save(data, path)
    return str(path)


def _state(**changes):
    state = dict(torch.load(SHIPPED["dncnn"], map_location="cpu", weights_only=True)["state_dict"])
    state.update(changes)
    return state


FIRST = "body.0.weight"


def _malformed(tmp_path, case: str) -> tuple[str, str]:
    """(path of a malformed weights file, a piece of the sentence it must get)."""
    shipped = torch.load(SHIPPED["dncnn"], map_location="cpu", weights_only=True)
    assert FIRST in shipped["state_dict"]
    if case == "config_list":
        return _spoil(tmp_path, "w.pt", config=[1, 2]), "its model settings are a list instead of a table"
    if case == "config_str":
        return _spoil(tmp_path, "w.pt", config="depth 17"), "its model settings are the text 'depth 17'"
    if case == "config_none":
        return _spoil(tmp_path, "w.pt", config=None), "its model settings are empty instead of a table"
    if case == "config_nan":
        return (_spoil(tmp_path, "w.pt", config={**shipped["config"], "width": float("nan")}),
                "its model setting 'width' is the number nan, not a plain finite value")
    if case == "wrong_shape":
        return (_spoil(tmp_path, "w.pt", state_dict=_state(**{FIRST: torch.zeros(3)})),
                f"does not fit this DnCNN: 1 of another shape, such as '{FIRST}' (3,) instead of (64, 2, 3, 3)")
    if case == "not_a_tensor":
        return (_spoil(tmp_path, "w.pt", state_dict=_state(**{FIRST: "weights"})),
                f"its weights '{FIRST}' are the text 'weights', not a tensor of real numbers")
    if case == "integer_tensor":
        return (_spoil(tmp_path, "w.pt", state_dict=_state(**{FIRST: torch.zeros(64, 2, 3, 3, dtype=torch.int32)})),
                f"1 of another number type, such as '{FIRST}' int32 instead of float32")
    if case == "nan_tensor":
        return (_spoil(tmp_path, "w.pt", state_dict=_state(**{FIRST: torch.full((64, 1, 3, 3), float("nan"))})),
                f"holds NaN or infinite values in '{FIRST}'")
    if case == "psnr_text":
        return (_spoil(tmp_path, "w.pt", card={**shipped["card"], "validation_psnr_db": "high"}),
                "its card gives the validation PSNR as the text 'high', not a finite number of dB")
    if case == "psnr_nan":
        return (_spoil(tmp_path, "w.pt", card={**shipped["card"], "validation_psnr_db": float("nan")}),
                "its card gives the validation PSNR as the number nan")
    if case == "card_list":
        return _spoil(tmp_path, "w.pt", card=["steps", 4]), "its model card is a list instead of a table"
    if case == "truncated":
        raw = SHIPPED["dncnn"].read_bytes()
        (tmp_path / "w.pt").write_bytes(raw[: len(raw) // 2])
        return str(tmp_path / "w.pt"), NOT_OURS
    if case == "random_bytes":
        (tmp_path / "w.pt").write_bytes(np.random.default_rng(0).bytes(4096))
        return str(tmp_path / "w.pt"), NOT_OURS
    if case == "pickled_code":
        (tmp_path / "w.pt").write_bytes(pickle.dumps({"format": "emcore-weights-1",
                                                      "hook": _RunsCode(tmp_path / "code_ran")}))
        return str(tmp_path / "w.pt"), NOT_OURS
    if case == "folder":
        (tmp_path / "w.pt").mkdir()
        return str(tmp_path / "w.pt"), "is a folder"
    raise AssertionError(case)


CASES = ["config_list", "config_str", "config_none", "config_nan", "wrong_shape", "not_a_tensor", "integer_tensor",
         "nan_tensor", "psnr_text", "psnr_nan", "card_list", "truncated", "random_bytes", "pickled_code", "folder"]


def _one_sentence(text: str) -> None:
    assert "\n" not in text.strip() and "Traceback" not in text and text.strip().endswith(".")


@pytest.mark.parametrize("case", CASES)
def test_malformed_weights_get_one_sentence_from_the_library(tmp_path, case):
    path, needle = _malformed(tmp_path, case)
    ds = Dataset(data=np.random.default_rng(0).random((32, 32)).astype(np.float32), kind="image", name="img")
    with pytest.raises(EmcoreError) as err:
        denoise(ds, "dncnn", weights=path, device="cpu")
    assert needle in str(err.value)
    _one_sentence(str(err.value))
    assert not (tmp_path / "code_ran").exists()


@pytest.mark.parametrize("case", ["config_list", "psnr_text", "wrong_shape", "pickled_code"])
def test_malformed_upload_is_refused_with_the_uploaded_name(tmp_path, case):
    path, needle = _malformed(tmp_path, case)
    data = open(path, "rb").read()
    (tmp_path / "uploads").mkdir()
    with pytest.raises(EmcoreError, match="my weights.pt") as err:
        save_uploaded_weights("dncnn", data, "my weights.pt", tmp_path / "uploads")
    assert needle.replace("w.pt", "my weights.pt") in str(err.value)
    _one_sentence(str(err.value))
    assert list((tmp_path / "uploads").iterdir()) == []  # a refused upload is not kept


@pytest.mark.parametrize("case", CASES)
def test_malformed_weights_exit_2_with_one_line_from_the_cli(tmp_path, capsys, case):
    path, needle = _malformed(tmp_path, case)
    src = tmp_path / "img.npy"
    np.save(src, np.random.default_rng(0).random((32, 32)).astype(np.float32))
    code = main(["denoise", str(src), "--method", "dncnn", "--out", str(tmp_path / "out.npy"),
                 "--device", "cpu", "--set", f"weights={path}"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and needle in err and len(err.strip().splitlines()) == 1
    _one_sentence(err)
    assert not (tmp_path / "out.npy").exists()


def test_the_shipped_weights_pass_every_check():
    for path in SHIPPED.values():
        data = read_weights(path)
        assert isinstance(data["config"], dict) and isinstance(data["card"]["validation_psnr_db"], float)
