"""No regression on real STEM images: the shipped networks before and after a change of weights.

Real images have no clean reference, so each result is judged by what it removed (the
residual, ``noisy − denoised``) against the noise estimated blind from the image
(:func:`emcore.noise.estimation.estimate_noise`): the pooled variance ratio (≈ 1 when only
noise was removed, > 1 when structure went too) and the residual's lag-1 correlations along rows
and columns (≈ 0 for white noise; structure left in the residual correlates). The 8-bit images
``si110_stem.png`` and ``au_grain_boundary_stem.png`` of ``../shared/data/hrem`` are not counts,
so count splitting does not apply to them. Also reported: the same numbers for BM3D and Wiener,
and the built-in phantom's PSNR (ground truth known) at 1 e⁻/px.

    .venv/bin/python benchmarks/bench_supervised_stem.py --old-unet runs/unet32_abtem_1ch.pt \\
        --old-dncnn runs/dncnn_sbd_1ch.pt
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emcore import Dataset, sim  # noqa: E402
from emcore.evaluate.reference import psnr  # noqa: E402
from emcore.evaluate.residuals import residual_checks  # noqa: E402
from emcore.methods.registry import denoise  # noqa: E402
from emcore.noise.estimation import estimate_noise  # noqa: E402
from emcore.noise.models import Poisson  # noqa: E402

HREM = ROOT.parent / "shared" / "data" / "hrem"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old-unet", help="weights of the UNet before the change")
    ap.add_argument("--old-dncnn", help="weights of the DnCNN before the change")
    args = ap.parse_args(argv)
    from PIL import Image

    runs = [("bm3d", {}), ("wiener", {}), ("unet", {}), ("dncnn", {})]
    if args.old_unet:
        runs.append(("unet", {"weights": args.old_unet}))
    if args.old_dncnn:
        runs.append(("dncnn", {"weights": args.old_dncnn}))
    rows = []
    for name in ("si110_stem.png", "au_grain_boundary_stem.png"):
        img = np.asarray(Image.open(HREM / name).convert("L"), np.float32)
        model = estimate_noise(img).model()
        for method, params in runs:
            out = denoise(Dataset(img, "image"), method, device="cpu", **params).data
            r = residual_checks(img, out, model)
            label = method + (" (before)" if params else "")
            rows.append({"image": name, "method": label, "variance_ratio": r.variance,
                         "lag1_row": r.autocorr_row, "lag1_col": r.autocorr_col})
            print(f"{name:<28} {label:<16} variance ratio {r.variance:6.3f}  lag-1 row {r.autocorr_row:+.3f} "
                  f"col {r.autocorr_col:+.3f}", flush=True)
    ds = sim.hrem_example(seed=0, dose=1.0, size=256)
    for method, params in runs:
        p = psnr(denoise(Dataset(ds.data, "image", noise=Poisson(1.0) if method == "bm3d" else None), method,
                         device="cpu", **params).data, ds.ground_truth)
        label = method + (" (before)" if params else "")
        rows.append({"image": "built-in phantom, 1 e/px", "method": label, "psnr": p})
        print(f"{'built-in phantom, 1 e/px':<28} {label:<16} PSNR {p:6.2f} dB", flush=True)
    print(json.dumps({"bench_supervised_stem": rows}, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
