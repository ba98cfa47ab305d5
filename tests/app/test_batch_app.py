"""The Batch page as a person uses it: upload two files, run a method on a local Dask cluster in
the background, see the thumbnails and scores, download everything as one .zip."""

from __future__ import annotations

import io as _io
import zipfile
from pathlib import Path

import numpy as np

from tests.app.apptest import finished_job, open_app


def _npy_bytes(a) -> bytes:
    buf = _io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def test_batch_page_runs_two_uploads_and_offers_one_zip():
    at = open_app(180)
    at.switch_page("pages/batch.py").run()
    assert not at.exception, [e.value for e in at.exception]
    rng = np.random.default_rng(0)
    files = [("first scan.npy", _npy_bytes(rng.poisson(4.0, (48, 48)).astype(np.float32)), "application/octet-stream"),
             ("../second.npy", _npy_bytes(rng.poisson(9.0, (40, 56)).astype(np.float32)), "application/octet-stream")]
    at.file_uploader(key="batch_files").set_value(files).run()
    at.selectbox(key="batch_method").set_value("wiener").run()
    at.number_input(key="batch_workers").set_value(1)
    next(b for b in at.button if b.label == "Run the batch").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert not [e.value for e in at.error]
    job = finished_job(at, timeout=240)
    assert job.state == "done", job.error
    assert job.result.done == 2 and job.result.failed == 0
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("2 done, 0 failed" in s.value for s in at.subheader)
    captions = " ".join(c.value for c in at.caption)
    assert "residual variance" in captions or "count-split gain" in captions
    assert any(b.label.startswith("Download the results") for b in at.get("download_button"))
    with zipfile.ZipFile(at.session_state["batch_run"]["zip"]) as zf:
        names = zf.namelist()
    assert "manifest.csv" in names and "manifest.json" in names
    # named after the uploads' names, reduced to letters, digits, _ and - (no path from "../second.npy")
    assert sorted(n for n in names if n.startswith("results/")) == ["results/first_scan_wiener.tif",
                                                                   "results/second_wiener.tif"]
    assert len([n for n in names if n.startswith("previews/")]) == 2
    assert Path(at.session_state["batch_run"]["out"]).is_dir()


def test_batch_page_refuses_a_zip_bomb_with_a_sentence():
    at = open_app(180)
    at.switch_page("pages/batch.py").run()
    buf = _io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.npy", b"\0" * (32 << 20))
    at.file_uploader(key="batch_files").set_value([("bomb.zip", buf.getvalue(), "application/zip")]).run()
    next(b for b in at.button if b.label == "Run the batch").click().run()
    assert not at.exception
    assert any("zip bomb" in e.value for e in at.error)
    assert "batch_run" not in at.session_state
