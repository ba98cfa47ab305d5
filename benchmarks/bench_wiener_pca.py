"""Time and score the Wiener filters and PCA: ``python benchmarks/bench_wiener_pca.py [--repeat N]``.

Timing cases (one untimed warm-up call, then the median of N runs):

- ``denoise_wiener`` FFT mode on a 2048×2048 and a 512×512 float32 image (target: 2048² in
  under 1 s on 2 cores), local mode on 2048×2048;
- ``denoise_pca`` (automatic component count) on a synthetic 128×128×1024 Poisson cube
  (three phases, 20 counts/pixel) and on the real ``core_shell.hdf5`` (64×64×992, from
  ``../shared/data``; skipped when that folder is absent).

Quality (PSNR in dB, data range of the ground truth): noisy vs Wiener (both modes) on a
synthetic 512×512 lattice with Gaussian noise, and noisy vs PCA on the synthetic cube.
Prints a table and one JSON line. The machine's load average is printed too: BLAS and FFT
threads share the cores with whatever else runs, and timings on a busy machine are not
comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from emcore.evaluate.reference import psnr  # noqa: E402
from emcore.methods.pca import denoise_pca  # noqa: E402
from emcore.methods.wiener import denoise_wiener  # noqa: E402
from emcore.sim.eds import three_phase_cube  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def lattice(n: int, period: float = 7.3, angle: float = 0.3, width: float = 1.2) -> np.ndarray:
    """Gaussian atom columns on a rotated square lattice (period not dividing the image)."""
    y, x = np.mgrid[:n, :n].astype(np.float64)
    c, s = np.cos(angle), np.sin(angle)
    u, v = (c * x + s * y) / period, (-s * x + c * y) / period
    du, dv = u - np.round(u), v - np.round(v)
    return (0.2 + np.exp(-((du**2 + dv**2) * period**2) / (2 * width**2))).astype(np.float32)


def timed(fn, repeat: int) -> dict:
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "first_call_s": first}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per case (default 5)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    rng = np.random.default_rng(0)

    big = (lattice(2048) + rng.normal(0, 0.3, (2048, 2048))).astype(np.float32)
    small = big[:512, :512].copy()
    clean_cube, noisy_cube = three_phase_cube(np.random.default_rng(1), h=128, w=128, e=1024)
    times: dict[str, dict] = {}
    extra: dict[str, str] = {}
    times["wiener fft 2048x2048"] = timed(lambda: denoise_wiener(big, mode="fft"), args.repeat)
    times["wiener fft 512x512"] = timed(lambda: denoise_wiener(small, mode="fft"), args.repeat)
    times["wiener local 2048x2048"] = timed(lambda: denoise_wiener(big, mode="local"), args.repeat)
    times["pca synthetic 128x128x1024"] = timed(lambda: denoise_pca(noisy_cube), args.repeat)
    core_shell = SHARED / "eds" / "core_shell.hdf5"
    if core_shell.is_file():
        import hyperspy.api as hs

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cs = hs.load(core_shell, reader="HSPY").data
        times["pca core_shell 64x64x992"] = timed(lambda: denoise_pca(cs), args.repeat)
        extra["core_shell auto components"] = str(denoise_pca(cs)[1].n_components)
    else:
        print(f"(core_shell.hdf5 not found under {SHARED}; that case is skipped)")

    quality: dict[str, float] = {}
    clean = lattice(512)
    noisy = (clean + np.random.default_rng(2).normal(0, 0.3, clean.shape)).astype(np.float32)
    quality["lattice 512², σ=0.3: noisy"] = psnr(noisy, clean)
    quality["lattice 512², σ=0.3: wiener fft"] = psnr(denoise_wiener(noisy, mode="fft"), clean)
    quality["lattice 512², σ=0.3: wiener local"] = psnr(denoise_wiener(noisy, mode="local"), clean)
    rec, info = denoise_pca(noisy_cube)
    quality["cube 128²×1024, 20 counts/px: noisy"] = psnr(noisy_cube, clean_cube)
    quality[f"cube 128²×1024, 20 counts/px: pca (auto n={info.n_components})"] = psnr(rec, clean_cube)

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"cores: {os.cpu_count()}, load average (1 min) after the runs: {load:.2f}")
    print(f"{'case':<30} {'median s':>9} {'min s':>8} {'first call s':>13}")
    for name, r in times.items():
        print(f"{name:<30} {r['median_s']:>9.3f} {r['min_s']:>8.3f} {r['first_call_s']:>13.3f}")
    print()
    print(f"{'quality case':<52} {'PSNR dB':>8}")
    for name, v in quality.items():
        print(f"{name:<52} {v:>8.2f}")
    for name, v in extra.items():
        print(f"{name}: {v}")
    print(
        json.dumps(
            {
                "benchmark": "wiener_pca",
                "repeat": args.repeat,
                "cpu_count": os.cpu_count(),
                "load_avg_1min": round(load, 2),
                "python": platform.python_version(),
                "numpy": np.__version__,
                "times": {k: {m: round(v, 4) for m, v in r.items()} for k, r in times.items()},
                "psnr_db": {k: round(v, 2) for k, v in quality.items()},
                **extra,
            },
            ensure_ascii=False,
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
