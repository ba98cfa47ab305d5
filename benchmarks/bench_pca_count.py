"""PCA's component count chosen on the data (self-calibration), measured against the truth.

On simulated EDS spectrum images (``emcore.sim.eds_example``, 3–200 counts per pixel, fixed
seeds) the true PSNR of every count 1..50 is computed with the ground truth; the count
chosen by count splitting (``denoise(ds, "pca")``, seed 0), by the J-invariant loss (the same
cube given as floats of unknown origin) and by the scree rule (Gavish–Donoho threshold capped
by the elbow, ``denoise_pca(cube)``, what "auto" meant before) are compared with the best.

``--split-fractions`` repeats the count-split choice over five splits for each fraction p of
the counts that PCA sees (the basis of ``pca._SPLIT_P``). ``--timing`` times a 64×64×1024 cube.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_pca_count.py [--split-fractions 0.5 0.9] [--timing]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import emcore.methods.pca as pca  # noqa: E402
from emcore import sim  # noqa: E402
from emcore.evaluate.count_split import counts_of  # noqa: E402
from emcore.evaluate.reference import psnr  # noqa: E402
from emcore.methods.registry import denoise  # noqa: E402

# (size, channels, counts per pixel, seed)
CASES = [(48, 256, 10, 8), (48, 256, 50, 9), (64, 1024, 10, 9), (64, 1024, 50, 1), (64, 512, 5, 1), (64, 512, 5, 2),
         (64, 1024, 20, 3), (32, 512, 30, 4), (64, 1024, 100, 5), (96, 512, 20, 6), (64, 256, 3, 7), (48, 1024, 200, 10)]


def true_psnr(ds, n_max=50) -> np.ndarray:
    """True PSNR of the rank-n reconstruction, n = 1..n_max, from one decomposition."""
    mat = pca._Scaled(ds.data, True)
    mat.decompose()
    return np.array([psnr(mat.reconstruct(n), ds.ground_truth) for n in range(1, n_max + 1)])


def choices(fractions) -> None:
    rows = {"count-split": [], "J-invariant": [], "scree": []}
    sweep = {p: [] for p in fractions}
    for size, ch, dose, seed in CASES:
        ds = sim.eds_example(seed=seed, counts_per_pixel=dose, size=size, channels=ch)
        ps = true_psnr(ds)
        best = int(ps.argmax()) + 1
        picks = {"count-split": denoise(ds, "pca").params["n_components"],
                 "J-invariant": denoise(replace(ds, is_counts=False, noise=None), "pca").params["n_components"],
                 "scree": pca.denoise_pca(ds.data)[1].n_components}
        line = f"  {size}×{size}×{ch}, {dose:>3} counts/px, seed {seed:>2}: best {best:>2} ({ps.max():.2f} dB)"
        for name, n in picks.items():
            rows[name].append(ps[n - 1] - ps.max())
            line += f"; {name} {n:>2} ({rows[name][-1]:+.2f})"
        kept = pca._SPLIT_P
        for p in fractions:
            pca._SPLIT_P = p
            sweep[p] += [ps[pca.calibrate_pca(ds.data, counts=counts_of(ds), seed=s).best["n_components"] - 1]
                         - ps.max() for s in range(5)]
        pca._SPLIT_P = kept
        print(line, flush=True)
    print("\nPSNR of the chosen count − PSNR of the best count (dB), over the cases:")
    for name, v in rows.items():
        print(f"  {name:<12} mean {statistics.mean(v):+.2f}, worst {min(v):+.2f}, within 0.5 dB in "
              f"{sum(x >= -0.5 for x in v)} of {len(v)}")
    for p, v in sweep.items():
        print(f"  count-split p = {p:<4} (5 splits each) mean {statistics.mean(v):+.2f}, worst {min(v):+.2f}, "
              f"within 0.5 dB in {sum(x >= -0.5 for x in v)} of {len(v)}")


def timing(repeats=3) -> None:
    ds = sim.eds_example(seed=9, counts_per_pixel=50, size=64, channels=1024)
    for name, d, kw in (("given count (5)", ds, {"n_components": 5}), ("count-split", ds, {}),
                        ("J-invariant", replace(ds, is_counts=False, noise=None), {})):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            res = denoise(d, "pca", **kw)
            times.append(time.perf_counter() - t0)
        print(f"  64×64×1024, {name:<16}: median {statistics.median(times):.2f} s of {repeats} "
              f"(min {min(times):.2f}), {res.params['n_components']} components")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split-fractions", type=float, nargs="*", default=[])
    ap.add_argument("--timing", action="store_true")
    args = ap.parse_args(argv)
    choices(args.split_fractions)
    if args.timing:
        print("\nTime of denoise(ds, 'pca'):")
        timing()
    return 0


if __name__ == "__main__":
    sys.exit(main())
