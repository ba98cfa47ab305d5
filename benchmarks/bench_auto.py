"""Self-calibration and Auto, measured against the truth (issue: "Which method, which settings?").

Part A — on the reference Pt/CeO2 multislice images (``../shared/data/hrem``, never used to
choose the calibration grid, which came from the workbench's own phantoms), central crops:
Poisson–Gaussian noise (a = 0.05, b = 0.02, as stored) and Poisson at 1 e⁻/px (raw counts).
Blind Wiener (self-calibrated), the old blind default (window 5, measured noise floor), the
best Wiener setting chosen with the ground truth (window × noise-floor multiple) and the
best Gaussian blur (σ chosen with the ground truth); BM3D blind against BM3D given the true
noise model.

Part B — Auto on ten simulated cases (images at several doses, Poisson–Gaussian, stacks,
spectrum images): whether its pick is within 0.5 dB of the best candidate's true PSNR, and
the Spearman correlation of its ranking with the true-PSNR ranking.

Part C — Auto's wall time on a 512² image against the budget it was given.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_auto.py [--parts A B C] [--crop 512] [--images 1 2 3 4]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emcore import Dataset, sim  # noqa: E402
from emcore.evaluate.reference import psnr  # noqa: E402
from emcore.methods.auto import rank  # noqa: E402
from emcore.methods.registry import denoise  # noqa: E402
from emcore.methods.wiener import denoise_wiener, estimate_noise_variance  # noqa: E402
from emcore.noise.models import Poisson, PoissonGaussian  # noqa: E402

HREM = ROOT.parent / "shared" / "data" / "hrem"


def part_a(images, crop, seed, with_bm3d=True):
    import tifffile

    rows = []
    for i in images:
        clean0 = tifffile.imread(HREM / f"ptceo2_sim_clean_{i}.tif").astype(np.float32)
        if crop:
            h, w = clean0.shape
            c = crop // 2
            clean0 = clean0[h // 2 - c:h // 2 + c, w // 2 - c:w // 2 + c]
        unit = (clean0 / clean0.mean()).astype(np.float32)
        for setting, clean, noise, counts in (("PG a=0.05 b=0.02", clean0, PoissonGaussian(0.05, 0.02), False),
                                             ("Poisson 1 e/px", unit, Poisson(1.0), True)):
            noisy = noise.sample(clean, np.random.default_rng(seed + i))
            blind = Dataset(noisy, "image", is_counts=counts, name=f"crop {i}")  # no noise model given
            r = {"image": i, "noise": setting, "noisy": psnr(noisy, clean)}
            r["blur_best"] = max(psnr(ndi.gaussian_filter(noisy, s), clean) for s in np.arange(0.5, 8.01, 0.25))
            nv = estimate_noise_variance(noisy)
            r["wiener_old_default"] = psnr(denoise_wiener(noisy, window=5, noise_power=nv), clean)
            t0 = time.perf_counter()
            res = denoise(blind, "wiener")
            r["wiener_auto"], r["wiener_auto_s"] = psnr(res.data, clean), time.perf_counter() - t0
            r["wiener_auto_choice"] = f"w{res.params['window']} x{res.artifacts['calibration']['best']['scale']:g}"
            r["wiener_oracle"] = max(psnr(denoise_wiener(noisy, window=w, noise_power=nv * s), clean)
                                     for w in (3, 5, 7, 9, 15, 21) for s in (0.5, 1, 1.5, 2, 2.5, 3, 4, 6))
            if with_bm3d:
                r["bm3d_true"] = psnr(denoise(Dataset(noisy, "image", noise=noise), "bm3d").data, clean)
                r["bm3d_blind"] = psnr(denoise(Dataset(noisy, "image"), "bm3d").data, clean)
            rows.append(r)
            print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
    print("\nPart A medians (dB):")
    for setting in sorted({r["noise"] for r in rows}):
        sel = [r for r in rows if r["noise"] == setting]
        med = {k: statistics.median(r[k] for r in sel) for k in sel[0] if isinstance(sel[0][k], float)}
        print(f"  {setting}: " + ", ".join(f"{k} {v:.2f}" for k, v in med.items()))
        print(f"    auto Wiener − best blur {med['wiener_auto'] - med['blur_best']:+.2f}; auto − oracle Wiener "
              f"{med['wiener_auto'] - med['wiener_oracle']:+.2f}"
              + (f"; BM3D blind − true {med['bm3d_blind'] - med['bm3d_true']:+.2f}" if "bm3d_true" in med else ""))
    return rows


def cases(seed):
    yield "HRTEM 0.5 e/px", sim.example("hrem", seed=seed, dose=0.5, size=256)
    yield "HRTEM 1 e/px", sim.example("hrem", seed=seed + 1, dose=1.0, size=256)
    yield "HRTEM 2 e/px", sim.example("hrem", seed=seed + 2, dose=2.0, size=256)
    yield "HRTEM 5 e/px", sim.example("hrem", seed=seed + 3, dose=5.0, size=256)
    yield "HRTEM 20 e/px", sim.example("hrem", seed=seed + 4, dose=20.0, size=256)
    yield "HRTEM PG 0.05/0.02 (blind)", _blind(sim.hrem_example(seed=seed + 5, size=256, noise=PoissonGaussian(0.05, 0.02)))
    yield "movie 2 e/px", sim.example("movie", seed=seed + 6, dose=2.0, size=96)
    yield "movie 10 e/px", sim.example("movie", seed=seed + 7, dose=10.0, size=96)
    yield "EDS 10 counts/px", sim.eds_example(seed=seed + 8, counts_per_pixel=10.0, size=48, channels=256)
    yield "EDS 50 counts/px", sim.eds_example(seed=seed + 9, counts_per_pixel=50.0, size=48, channels=256)


def _blind(ds):
    from dataclasses import replace

    return replace(ds, noise=None)


def part_b(budget, seed):
    from scipy.stats import spearmanr

    hits, rhos = 0, []
    for name, ds in cases(seed):
        t0 = time.perf_counter()
        out = rank(ds, budget, seed=seed)
        rk = out["ranking"]
        truth = [r["psnr"] for r in rk]
        ok = truth[0] >= max(truth) - 0.5
        hits += ok
        rho = spearmanr([-r["score"] for r in rk], truth).statistic if len(rk) > 2 else float("nan")
        rhos.append(rho)
        print(f"  {name:<28} {out['criterion']:<12} pick {rk[0]['method']:<8} {truth[0]:6.2f} dB, best "
              f"{max(truth):6.2f} dB ({'ok' if ok else 'MISS'}); Spearman {rho:+.2f}; "
              f"{len(rk)} methods, {time.perf_counter() - t0:.0f} s", flush=True)
    finite = [r for r in rhos if r == r]
    print(f"Part B: pick within 0.5 dB of the best in {hits} of 10 cases; median Spearman "
          f"{statistics.median(finite):+.2f} (range {min(finite):+.2f} to {max(finite):+.2f})")


def part_c(budget, seed):
    ds = sim.example("hrem", seed=seed, dose=1.0, size=512)
    t0 = time.perf_counter()
    out = rank(ds, budget, seed=seed)
    wall = time.perf_counter() - t0
    print(f"Part C: Auto on a 512² image with a {budget:g} s budget took {wall:.1f} s ({100 * wall / budget:.0f} % of "
          f"it); ran {', '.join(r['method'] for r in out['ranking'])}; skipped {', '.join(out['skipped']) or 'none'}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", nargs="*", default=["A", "B", "C"])
    ap.add_argument("--images", type=int, nargs="*", default=[1, 2, 3, 4])
    ap.add_argument("--crop", type=int, default=512)
    ap.add_argument("--budget", type=float, default=60.0)
    ap.add_argument("--no-bm3d", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if "A" in args.parts:
        part_a(args.images, args.crop, args.seed, with_bm3d=not args.no_bm3d)
    if "B" in args.parts:
        print("\nPart B:")
        part_b(args.budget, args.seed)
    if "C" in args.parts:
        part_c(args.budget, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
