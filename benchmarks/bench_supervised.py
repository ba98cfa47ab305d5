"""Generalisation of the shipped supervised networks to the reference Pt/CeO2 images.

The clean multislice simulations ``../shared/data/hrem/ptceo2_sim_clean_{1..4}.tif`` (never
used for training) get three kinds of noise, as in the issue:

* Poisson at 0.45 e⁻/px and at 1 e⁻/px (the image is scaled to a mean of 1 first, so the
  mean count per pixel is the dose);
* Poisson–Gaussian with a = 0.05, b = 0.02 on the image as stored (Tian et al. 2024).

Each noisy image is denoised by VST+BM3D given the true noise model (the strongest classical
baseline), the shipped DnCNN and the shipped UNet (or weights given with ``--unet`` /
``--dncnn``). PSNR uses the data range of the clean image. Prints a table, the per-setting
medians and the gain of UNet over BM3D, and a JSON line.

    .venv/bin/python benchmarks/bench_supervised.py [--images 1 2 3 4] [--crop 0] [--unet W.pt]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emcore import Dataset  # noqa: E402
from emcore.evaluate.reference import psnr  # noqa: E402
from emcore.methods.registry import denoise  # noqa: E402
from emcore.noise.models import Poisson, PoissonGaussian  # noqa: E402

HREM = ROOT.parent / "shared" / "data" / "hrem"


def settings(clean: np.ndarray):
    unit = (clean / clean.mean()).astype(np.float32)
    yield "Poisson 0.45 e/px", unit, Poisson(0.45)
    yield "Poisson 1 e/px", unit, Poisson(1.0)
    yield "PG a=0.05 b=0.02", clean, PoissonGaussian(0.05, 0.02)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, nargs="*", default=[1, 2, 3, 4])
    ap.add_argument("--crop", type=int, default=0, help="centre crop side (0: whole image)")
    ap.add_argument("--methods", nargs="*", default=["bm3d", "dncnn", "unet"])
    ap.add_argument("--unet", help="UNet weights (default: shipped)")
    ap.add_argument("--dncnn", help="DnCNN weights (default: shipped)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import tifffile

    rows = []
    print(f"{'image':<22} {'noise':<18} {'method':<8} {'PSNR dB':>8} {'seconds':>8}", flush=True)
    for i in args.images:
        path = HREM / f"ptceo2_sim_clean_{i}.tif"
        clean0 = tifffile.imread(path).astype(np.float32)
        if args.crop:
            h, w = clean0.shape
            c = args.crop // 2
            clean0 = clean0[h // 2 - c:h // 2 + c, w // 2 - c:w // 2 + c]
        for setting, clean, noise in settings(clean0):
            noisy = noise.sample(clean, np.random.default_rng(args.seed + i))
            rows.append({"image": path.stem, "noise": setting, "method": "noisy", "psnr": psnr(noisy, clean), "seconds": 0.0})
            for m in args.methods:
                params = {}
                if m in ("unet", "dncnn") and getattr(args, m):
                    params["weights"] = getattr(args, m)
                ds = Dataset(noisy, "image", ground_truth=clean, noise=noise if m == "bm3d" else None, name=path.name)
                t0 = time.perf_counter()
                res = denoise(ds, m, device="cpu", **params)
                rows.append({"image": path.stem, "noise": setting, "method": m, "psnr": psnr(res.data, clean),
                             "seconds": time.perf_counter() - t0})
            for r in rows[-1 - len(args.methods):]:
                print(f"{r['image']:<22} {r['noise']:<18} {r['method']:<8} {r['psnr']:8.2f} {r['seconds']:8.2f}", flush=True)
    print("\nmedian PSNR over images (dB)")
    summary = {}
    for setting in dict.fromkeys(r["noise"] for r in rows):
        med = {m: statistics.median(r["psnr"] for r in rows if r["noise"] == setting and r["method"] == m)
               for m in ["noisy", *args.methods]}
        summary[setting] = med
        gain = f"  UNet − BM3D {med['unet'] - med['bm3d']:+.2f} dB" if {"unet", "bm3d"} <= set(med) else ""
        print(f"  {setting:<18} " + "  ".join(f"{m} {v:6.2f}" for m, v in med.items()) + gain)
    print(json.dumps({"bench_supervised": rows, "medians": summary}, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
