"""``python -m emcore bench``: every registered method on the standard cases.

Cases: the built-in simulated examples (with ground truth) and the clean simulated Pt/CeO2
HRTEM images of ``../shared/data/hrem`` with Poisson–Gaussian noise (a = 0.05, b = 0.02, the
setting of Tian et al. 2024). PSNR/SSIM use the data range of the ground truth. Methods run
with their defaults (noise estimated blindly where they need it) except where a case says
otherwise; ``--quick`` uses small crops so the whole table takes about a minute on 2 cores.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import IO, Iterator

import numpy as np

from emcore.data.dataset import Dataset
from emcore.errors import EmcoreError
from emcore.noise.models import PoissonGaussian

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _ptceo2_cases(quick: bool) -> Iterator[tuple[str, Dataset]]:
    import tifffile

    files = sorted((SHARED / "hrem").glob("ptceo2_sim_clean_*.tif"))
    for f in files[:1] if quick else files:
        clean = tifffile.imread(f).astype(np.float32)
        if quick:
            h, w = clean.shape
            clean = clean[h // 2 - 128:h // 2 + 128, w // 2 - 128:w // 2 + 128]
        noise = PoissonGaussian(0.05, 0.02)
        noisy = noise.sample(clean, np.random.default_rng(0))
        # The noise model is *not* attached: the methods must estimate it blindly.
        yield f"{f.stem} PG(0.05,0.02)", Dataset(noisy, "image", ground_truth=clean, name=f.name)


def cases(quick: bool = False) -> Iterator[tuple[str, Dataset]]:
    from emcore import sim

    size = 256 if quick else 512
    yield f"sim HRTEM {size}² 1 e/px", sim.hrem_example(seed=1, dose=1.0, size=size)
    ds = sim.hrem_example(seed=2, dose=1.0, size=size, noise=PoissonGaussian(0.05, 0.02))
    yield f"sim HRTEM {size}² PG(0.05,0.02) blind", replace(ds, noise=None)
    yield "sim movie 6×128²", sim.movie_example(seed=3, frames=6, size=128, dose=2.0)
    yield f"sim EDS {64 if quick else 128}² 20 counts/px", sim.eds_example(
        seed=4, counts_per_pixel=20.0, size=64 if quick else 128, channels=512 if quick else 1024)
    if (SHARED / "hrem").is_dir():
        yield from _ptceo2_cases(quick)


# Parameters the bench sets on top of the defaults, per (method, kind): BM3D on a full cube
# is one BM3D per channel (minutes), so the bench bins the energy axis.
OVERRIDES = {("bm3d", "cube"): {"bin_energy": 8}}


def run_bench(quick: bool = False, methods: list[str] | None = None, out: IO[str] | None = None) -> list[dict]:
    """Run the table; print it to ``out`` and return the rows."""
    from emcore.evaluate.reference import psnr, ssim
    from emcore.methods.registry import denoise, get_method, methods_for

    if methods:
        for name in methods:
            get_method(name)
    rows = []
    axis = {"image": 0, "stack": 0, "cube": 2}

    def emit(line: str) -> None:
        if out is not None:
            print(line, file=out, flush=True)

    emit(f"{'case':<44} {'method':<10} {'PSNR dB':>8} {'SSIM':>6} {'seconds':>8}")
    for case, ds in cases(quick):
        gt = ds.ground_truth
        rows.append({"case": case, "method": "noisy input", "psnr": psnr(ds.data, gt),
                     "ssim": ssim(ds.data, gt, axis=axis[ds.kind]), "seconds": 0.0})
        emit(f"{case:<44} {'(noisy)':<10} {rows[-1]['psnr']:8.2f} {rows[-1]['ssim']:6.3f} {'':>8}")
        for m in methods_for(ds.kind):
            if methods and m.name not in methods:
                continue
            params = OVERRIDES.get((m.name, ds.kind), {})
            try:
                t0 = time.perf_counter()
                res = denoise(ds, m.name, **params)
                secs = time.perf_counter() - t0
            except EmcoreError as err:
                emit(f"{case:<44} {m.name:<10} failed: {err}")
                continue
            row = {"case": case, "method": m.name, "psnr": psnr(res.data, gt),
                   "ssim": ssim(res.data, gt, axis=axis[ds.kind]), "seconds": secs,
                   "params": {k: v for k, v in res.params.items() if v is not None}}
            rows.append(row)
            emit(f"{case:<44} {m.name:<10} {row['psnr']:8.2f} {row['ssim']:6.3f} {secs:8.2f}")
    emit(json.dumps({"bench": rows}, default=float))
    return rows
