"""Time the simulated examples: ``python benchmarks/bench_simulate.py [--repeat N]``.

Cases: the 512×512 HRTEM phantom, the 128×128×1024 EDS example (with Poisson sampling and
HAADF) and the 10×256×256 movie. Each case runs once untimed first (imports — exspy takes a
few seconds — and cached line tables), then N timed runs with different seeds; the median
is reported as a table and as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from emcore import sim  # noqa: E402

CASES = {
    "hrem_phantom 512x512": lambda seed: sim.hrem_phantom((512, 512), rng=np.random.default_rng(seed)),
    "eds_example 128x128x1024": lambda seed: sim.eds_example(seed=seed),
    "movie_example 10x256x256": lambda seed: sim.movie_example(seed=seed),
}


def run(repeat: int) -> dict:
    results = {}
    for name, fn in CASES.items():
        t0 = time.perf_counter()
        fn(0)
        first = time.perf_counter() - t0
        times = []
        for seed in range(1, repeat + 1):
            t0 = time.perf_counter()
            fn(seed)
            times.append(time.perf_counter() - t0)
        results[name] = {"median_s": statistics.median(times), "min_s": min(times), "first_call_s": first}
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per case (default 5)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    results = run(args.repeat)
    print(f"{'case':<28} {'median s':>9} {'min s':>8} {'first call s':>13}")
    for name, r in results.items():
        print(f"{name:<28} {r['median_s']:>9.3f} {r['min_s']:>8.3f} {r['first_call_s']:>13.3f}")
    print(
        json.dumps(
            {
                "benchmark": "simulate",
                "repeat": args.repeat,
                "cpu_count": os.cpu_count(),
                "python": platform.python_version(),
                "numpy": np.__version__,
                "results": {k: {m: round(v, 4) for m, v in r.items()} for k, r in results.items()},
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
