"""Generalisation of the shipped supervised networks to the reference Pt/CeO2 images.

The clean multislice simulations ``../shared/data/hrem/ptceo2_sim_clean_{1..4}.tif`` (never
used for training) get three kinds of noise, as in the issue:

* Poisson at 0.45 e⁻/px and at 1 e⁻/px (the image is scaled to a mean of 1 first, so the
  mean count per pixel is the dose);
* Poisson–Gaussian with a = 0.05, b = 0.02 on the image as stored (Tian et al. 2024).

Each noisy image is denoised by VST+BM3D given the true noise model (the strongest classical
baseline), the best Gaussian blur (σ chosen with the ground truth, 0.5–8 px), the
self-calibrated Wiener filter (blind; the supervised networks' prior channel), the shipped
DnCNN and the shipped UNet (or weights given with ``--unet`` / ``--dncnn``). PSNR uses the data
range of the clean image; SSIM is :func:`emcore.evaluate.reference.ssim`. Prints a table, the
per-setting medians and the gains of each network over BM3D, the blur and Wiener, and a JSON line.

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
from emcore.evaluate.reference import psnr, ssim  # noqa: E402
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
    ap.add_argument("--methods", nargs="*", default=["bm3d", "blur", "wiener", "dncnn", "unet"])
    ap.add_argument("--unet", help="UNet weights (default: shipped)")
    ap.add_argument("--dncnn", help="DnCNN weights (default: shipped)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    import tifffile

    rows = []
    print(f"{'image':<22} {'noise':<18} {'method':<8} {'PSNR dB':>8} {'SSIM':>6} {'seconds':>8}", flush=True)
    for i in args.images:
        path = HREM / f"ptceo2_sim_clean_{i}.tif"
        clean0 = tifffile.imread(path).astype(np.float32)
        if args.crop:
            h, w = clean0.shape
            c = args.crop // 2
            clean0 = clean0[h // 2 - c:h // 2 + c, w // 2 - c:w // 2 + c]
        for setting, clean, noise in settings(clean0):
            noisy = noise.sample(clean, np.random.default_rng(args.seed + i))
            rows.append({"image": path.stem, "noise": setting, "method": "noisy", "psnr": psnr(noisy, clean),
                         "ssim": ssim(noisy, clean), "seconds": 0.0})
            for m in args.methods:
                t0 = time.perf_counter()
                if m == "blur":
                    from scipy import ndimage as ndi

                    out = max((ndi.gaussian_filter(noisy, s) for s in np.arange(0.5, 8.01, 0.25)),
                              key=lambda b: psnr(b, clean))
                else:
                    params = {}
                    if m in ("unet", "dncnn") and getattr(args, m):
                        params["weights"] = getattr(args, m)
                    ds = Dataset(noisy, "image", ground_truth=clean, noise=noise if m == "bm3d" else None,
                                 name=path.name)
                    out = denoise(ds, m, device="cpu", **params).data
                rows.append({"image": path.stem, "noise": setting, "method": m, "psnr": psnr(out, clean),
                             "ssim": ssim(out, clean), "seconds": time.perf_counter() - t0})
            for r in rows[-1 - len(args.methods):]:
                print(f"{r['image']:<22} {r['noise']:<18} {r['method']:<8} {r['psnr']:8.2f} {r['ssim']:6.3f} "
                      f"{r['seconds']:8.2f}", flush=True)
    print("\nmedian PSNR over images (dB)")
    summary = {}
    for setting in dict.fromkeys(r["noise"] for r in rows):
        med = {m: statistics.median(r["psnr"] for r in rows if r["noise"] == setting and r["method"] == m)
               for m in ["noisy", *args.methods]}
        med_ssim = {m: statistics.median(r["ssim"] for r in rows if r["noise"] == setting and r["method"] == m)
                    for m in ["noisy", *args.methods]}
        summary[setting] = {"psnr": med, "ssim": med_ssim}
        print(f"  {setting:<18} " + "  ".join(f"{m} {v:6.2f} ({med_ssim[m]:.3f})" for m, v in med.items()))
        for net in ("unet", "dncnn"):
            if net in med:
                print(f"  {'':<18} {net} − " + "  ".join(f"{b} {med[net] - med[b]:+.2f} dB"
                                                       for b in ("bm3d", "blur", "wiener") if b in med))
        # Median over images of the per-image gain (the figure)
        for net in ("unet", "dncnn"):
            if {net, "bm3d"} <= set(med):
                per = [next(r["psnr"] for r in rows if r["noise"] == setting and r["image"] == im and r["method"] == net)
                       - next(r["psnr"] for r in rows if r["noise"] == setting and r["image"] == im and r["method"] == "bm3d")
                       for im in dict.fromkeys(r["image"] for r in rows)]
                print(f"  {'':<18} {net} − bm3d per image: " + " ".join(f"{g:+.2f}" for g in per))
    print(json.dumps({"bench_supervised": rows, "medians": summary}, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
