"""The training-curve figure: log scale only when every loss is above zero, validation PSNR on its
own axis at the steps where it was measured (no staircase)."""

from __future__ import annotations

import math

from pages.figures import loss_figure


def _live(values, psnr_every=5):
    """Job progress points as the job manager keeps them: validation values repeat between checks."""
    rows, val = [], None
    for i, v in enumerate(values, 1):
        if i % psnr_every == 0:
            val = 10.0 + i / 10
        rows.append({"step": i, "elapsed": i * 0.1, "loss_train": v, "val_loss": None if val is None else v,
                     "val_psnr": val, "input_psnr": 12.0})
    return rows


def test_negative_loss_gets_a_linear_scale_and_a_note():
    fig, note = loss_figure(_live([-0.5 - i / 100 for i in range(20)]), log=True)
    assert fig.layout.yaxis.type == "linear" and "Linear scale" in note
    (train,) = [t for t in fig.data if t.name == "training loss"]
    assert len(train.y) == 20 and all(math.isfinite(y) for y in train.y)


def test_positive_loss_keeps_the_log_scale_asked_for():
    fig, note = loss_figure(_live([1.0 / (i + 1) for i in range(20)]), log=True)
    assert fig.layout.yaxis.type == "log" and note is None
    fig, _ = loss_figure(_live([1.0 / (i + 1) for i in range(20)]), log=False)
    assert fig.layout.yaxis.type == "linear"


def test_validation_psnr_has_its_own_axis_and_no_staircase():
    fig, _ = loss_figure(_live([1.0] * 20, psnr_every=5), log=True)
    (psnr,) = [t for t in fig.data if t.name == "validation PSNR (dB)"]
    assert psnr.yaxis == "y2" and list(psnr.x) == [5, 10, 15, 20]  # where it was measured, once each
    assert fig.layout.yaxis2.title.text == "validation PSNR (dB)"
    assert any("noisy input 12.0 dB" in (a.text or "") for a in fig.layout.annotations)


def test_finished_history_and_nothing_to_draw():
    hist = [{"step": 10, "train_loss": 0.2, "val_loss": 0.1, "val_psnr": 20.0, "lr": 1e-3, "seconds": 1.0},
            {"step": 20, "train_loss": 0.1, "val_loss": 0.05, "val_psnr": 22.0, "lr": 1e-3, "seconds": 2.0}]
    fig, _ = loss_figure(hist)
    assert {t.name for t in fig.data} == {"training loss", "validation loss", "validation PSNR (dB)"}
    assert loss_figure([]) == (None, None)
