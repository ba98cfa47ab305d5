"""Seconds to denoise one image with the shipped supervised networks on this machine's CPU.

Issue target: a whole 1024² image through the shipped UNet in <= 3 s on 2 CPU cores. Each case
is timed ``--repeats`` times after one warm-up, interleaved (case A, case B, A, B, ...) so a
change in the machine's load hits every case alike; the medians are printed, with the load
average before and after (run it on a quiet machine and say so).

Cases (``--cases``):

* ``denoise`` — what a user gets: ``denoise(ds, NAME, device="cpu")`` with the defaults
  (prior channel, folded batch norms, no copies around the UNet's convolutions, heap
  allocation, tiles fitted to the image), run again right after the same call (untimed), so
  within ``KEEP_SECONDS`` of the last inference: the frames of a stack, the files of a batch,
  a user's next run.
* ``cold`` — the same after the kept heap was released (``release_heap()``, untimed): the
  first image after ``KEEP_SECONDS`` of idleness, which faults its activations in afresh.
* ``denoise400`` — the same with the former default tiles (400 px, overlap 50).
* ``old`` — the previous code path on the same network input: the network as loaded (batch
  norms separate), 400-px tiles every 350 px in batches of 4, glibc's default allocation
  (the kept heap released first, untimed).
* ``prior`` — the prior channel alone (the Fourier Wiener filter of the whole image).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_inference.py --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", type=int, default=1024)
    ap.add_argument("--methods", nargs="*", default=["unet"], choices=["unet", "dncnn"])
    ap.add_argument("--cases", nargs="*", default=["denoise", "cold", "denoise400", "old", "prior"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from emcore import Dataset
    from emcore.methods.fast_inference import release_heap
    from emcore.methods.prior import network_input, wiener_prior
    from emcore.methods.registry import denoise
    from emcore.methods.supervised import load_network, shipped_path
    from emcore.methods.tiling import tiled_apply
    from emcore.sim.hrem import hrem_phantom

    rng = np.random.default_rng(0)
    base = hrem_phantom((512, 512), rng=np.random.default_rng(0))  # one phantom tiled to the side
    reps = -(-args.side // 512)
    img = np.tile(base, (reps, reps))[: args.side, : args.side]
    noisy = rng.poisson(5.0 * img / img.mean()).astype(np.float32)
    ds = Dataset(noisy, kind="image")
    print(f"{args.side}² image, {args.threads} torch threads, load average before: {os.getloadavg()}", flush=True)

    def old(name: str) -> None:
        net = load_network(name, shipped_path(name, "standard")).eval()
        m = float(noisy.mean())
        x = network_input(noisy, wiener_prior(noisy)[0], m) if net.prior else noisy / m
        mult = 2 ** (net.scales - 1) if getattr(net, "scales", None) else 1
        tiled_apply(net, x, tile=400, step=350, batch=4, multiple=mult, channels=bool(net.prior))

    cases, untimed_before = {}, {}
    for name in args.methods:
        if "denoise" in args.cases:
            cases[f"{name} denoise (defaults), run again"] = lambda n=name: denoise(ds, n, device="cpu", seed=0)
            untimed_before[f"{name} denoise (defaults), run again"] = lambda n=name: denoise(
                ds, n, device="cpu", seed=0)
        if "cold" in args.cases:
            cases[f"{name} denoise (defaults), heap released before"] = lambda n=name: denoise(
                ds, n, device="cpu", seed=0)
            untimed_before[f"{name} denoise (defaults), heap released before"] = release_heap
        if "denoise400" in args.cases:
            cases[f"{name} denoise tile=400 overlap=50"] = lambda n=name: denoise(
                ds, n, device="cpu", seed=0, tile=400, overlap=50)
        if "old" in args.cases:
            cases[f"{name} previous path (400-px tiles, BN separate, default malloc)"] = lambda n=name: old(n)
            untimed_before[f"{name} previous path (400-px tiles, BN separate, default malloc)"] = release_heap
    if "prior" in args.cases:
        cases["prior channel alone (wiener_prior)"] = lambda: wiener_prior(noisy)
    times = {k: [] for k in cases}
    for f in cases.values():
        f()  # warm-up
    for _ in range(args.repeats):
        for k, f in cases.items():
            untimed_before.get(k, lambda: None)()
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    for k, ts in times.items():
        print(f"{k}: median {statistics.median(ts):.2f} s (min {min(ts):.2f}, max {max(ts):.2f}, n={len(ts)})")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
