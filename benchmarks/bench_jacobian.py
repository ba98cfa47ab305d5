"""Speed of the adaptive-filter ("what is the network looking at?") view, and Mohan et al.'s finding.

1. **Speed** (target: under 2 s per pixel on a 512×512 image, CPU). Seconds per
   :func:`emcore.evaluate.filter_view.pixel_filter` call — one forward and one backward pass on a window
   around the pixel — for a UNet-32 with 4 scales from ``models/`` (the bias-free shipped weights
   (``emcore.methods.supervised.SHIPPED_BIAS_FREE``) when present, else a random initialisation: the time is
   the same), and for every registered learned method (run with its ``quick`` settings: the
   time depends on the network, not on how well it is trained; spectrum-image methods on the
   128×128×1024 EDS example at the Fe Kα channel).
2. **Finding** (Mohan et al., IEEE TCI 2022, Sec. VI): on the built-in HRTEM example
   denoised by the shipped bias-free UNet (``--shipped standard``: the biased one), the filter is wide and flat in vacuum and, on the crystal,
   concentrates on the neighbouring atomic columns. Measured at pixels chosen from the
   ground truth (vacuum: flat truth over 31×31 px; crystal: pixels on the particle between
   columns and on them): the effective diameter (disc holding 90 % of Σ|w|) and the
   *column enrichment* — the share of the positive weight farther than 6 px from the pixel
   that lies on atomic columns (truth above its 80th percentile in the window), divided by
   the share of those pixels that are columns (1 = no preference, > 1 = on the columns).
   Also ``J x / output``: the share of the output the filter accounts for (1 for a bias-free
   network, whose output is exactly J x; a biased one sets part of its level with its own
   constants, which the filter does not show). ``--reference N`` runs the same on Mohan et
   al.'s own clean simulation N (``../shared/data/hrem``, Poisson noise at ``--dose``).
   Skipped, and said so, when the shipped UNet (or the reference image) is not there.

    .venv/bin/python benchmarks/bench_jacobian.py [--threads 2] [--pixels 7] [--no-methods] [--no-finding]
        [--shipped standard] [--weights W.pt] [--dose 10] [--reference 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from emcore import EmcoreError, sim  # noqa: E402
from emcore.evaluate.filter_view import pixel_filter, supported_methods  # noqa: E402
from emcore.methods.supervised import SHIPPED_BIAS_FREE, shipped_path  # noqa: E402

# The one-channel UNet-32 (the bias-free shipped weights): the timed wrapper feeds one channel,
# and the standard shipped UNet reads two (image and prior).
WEIGHTS = SHIPPED_BIAS_FREE["unet"]
HREM = Path(__file__).resolve().parents[2] / "shared" / "data" / "hrem"
TARGET_S = 2.0
RING_PX = 6  # weights closer than this to the pixel belong to its own column, not to neighbours
# What counts as reproducing the finding: the vacuum filter at least this much wider than the
# crystal filter, and the crystal filter's far weights this much more on columns than chance.
WIDER = 1.25
ENRICHED = 1.5


def _pixels(shape, n, rng):
    h, w = shape
    return [(int(r), int(c)) for r, c in zip(rng.integers(0, h, n), rng.integers(0, w, n))]


def _time_filters(artifacts, data, pixels, energy=None):
    times, shapes = [], []
    pixel_filter(artifacts, data, *pixels[0], energy=energy)  # warm-up (allocations, oneDNN kernels)
    for r, c in pixels:
        t0 = time.perf_counter()
        f = pixel_filter(artifacts, data, r, c, energy=energy)
        times.append(time.perf_counter() - t0)
        shapes.append(f.weights.shape)
    return times, shapes


def _unet_artifacts(image):
    """UNet-32, 4 scales, wrapped like the supervised methods do (whole-image mean fixed)."""
    from models import UNet

    if WEIGHTS.is_file():
        from emcore.train.weights import load_weights

        net, source = load_weights(UNet, WEIGHTS), f"shipped weights {WEIGHTS.name}"
    else:
        torch.manual_seed(0)
        net, source = UNet(base=32, scales=4), "random initialisation (no shipped weights yet)"
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    scale = float(np.mean(image)) or 1.0

    def apply(t):
        return net((t / scale)[None, None])[0, 0] * scale

    return {"apply": apply, "receptive_field": net.receptive_field(), "min_size": 8}, source


def speed(args, rows):
    ds = sim.hrem_example(seed=0, dose=1.0, size=512)
    pixels = _pixels(ds.data.shape, args.pixels, np.random.default_rng(1))
    art, source = _unet_artifacts(ds.data)
    times, shapes = _time_filters(art, ds.data, pixels)
    rows.append({"network": "UNet-32, 4 scales (models/)", "data": "512×512 image", "weights": source,
                 "median_s": statistics.median(times), "max_s": max(times), "window": f"{shapes[0][0]}×{shapes[0][1]}"})
    if args.no_methods:
        return
    from emcore.methods.registry import denoise, methods

    registered = {m.name: m for m in methods()}
    cube = None
    supported = [m.name for m in supported_methods()]
    runs = [(name, None) for name in supported]
    if "noise2sr" in registered and "mmse_samples" in registered["noise2sr"].quick:
        # Noise2SR's network function averages its sub-samplings (MMSE): time it also with the
        # preset's own count, since that is what the view differentiates after a normal run.
        runs.insert(supported.index("noise2sr") + 1, ("noise2sr", "preset"))
    for name, variant in runs:
        m = registered.get(name)
        if m is None:
            rows.append({"network": name, "data": "-", "weights": "not registered", "median_s": None})
            continue
        quick = dict(m.quick)
        if variant == "preset":
            quick.pop("mmse_samples")
        data_ds, energy, label = ds, None, "512×512 image"
        if "image" not in m.accepts:
            if cube is None:
                cube = sim.eds_example(seed=0)
            from emcore.spectral import line_channels

            lo, hi = line_channels("Fe_Ka", cube.calibration, cube.data.shape[2])
            data_ds, energy, label = cube, (lo + hi - 1) // 2, "128×128×1024 cube, Fe Kα"
        try:
            res = denoise(data_ds, name, device="cpu", **quick)
        except EmcoreError as err:
            rows.append({"network": name, "data": label, "weights": f"not run: {err}", "median_s": None})
            continue
        px = _pixels(data_ds.data.shape[:2], args.pixels, np.random.default_rng(2))
        times, shapes = _time_filters(res.artifacts, data_ds.data, px, energy=energy)
        how = "quick run" if quick else "defaults"
        if name == "noise2sr":
            how += f", MMSE over {res.params.get('mmse_samples')} sub-samplings"
            if callable(res.artifacts.get("filter_apply")):
                how += " (the view follows fewer: see filter_note)"
        rows.append({"network": name, "data": label, "weights": how,
                     "median_s": statistics.median(times), "max_s": max(times),
                     "window": f"{shapes[0][0]}×{shapes[0][1]}"})


def _reference() -> float:
    """Median seconds of one UNet-32 forward pass on 128×128 (no gradient): how fast this machine is now."""
    from models import UNet

    torch.manual_seed(0)
    net = UNet(base=32, scales=4).eval()
    x = torch.rand(1, 1, 128, 128)
    times = []
    with torch.no_grad():
        for i in range(6):
            t0 = time.perf_counter()
            net(x)
            if i:
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _local_std(a, size):
    from scipy import ndimage as ndi

    m = ndi.uniform_filter(a, size)
    return np.sqrt(np.maximum(ndi.uniform_filter(a * a, size) - m * m, 0))


def finding(args):
    """Vacuum vs crystal filters of the shipped UNet on the built-in HRTEM example."""
    from emcore.methods.registry import denoise

    info = sim.EXAMPLES["hrem"]
    dose = float(args.dose or info.dose_default)
    if args.reference:
        # Mohan et al.'s own clean simulations, with Poisson noise at the dose.
        import tifffile

        from emcore import Dataset
        from emcore.noise.models import Poisson

        path = HREM / f"ptceo2_sim_clean_{args.reference}.tif"
        if not path.is_file():
            return {"run": False, "why": f"{path} is not there (see ../shared/data/MANIFEST.md)"}
        clean = tifffile.imread(path).astype(np.float32)
        noise = Poisson(dose)
        ds = Dataset(noise.sample(clean, np.random.default_rng(0)), "image", ground_truth=clean, name=path.name)
    else:
        ds = sim.hrem_example(seed=0, dose=dose)
    try:
        res = denoise(ds, "unet", device="cpu", shipped=args.shipped,
                      **({"weights": args.weights} if args.weights else {}))
    except EmcoreError as err:
        return {"run": False, "why": str(err)}
    gt = ds.ground_truth.astype(np.float64)
    std = _local_std(gt, 31)
    rng = np.random.default_rng(3)
    h, w = gt.shape
    margin = 40
    inner = np.zeros_like(gt, bool)
    inner[margin:h - margin, margin:w - margin] = True
    vac = np.argwhere(inner & (std < 1e-4 * gt.mean()))
    crys = np.argwhere(inner & (std > np.percentile(std, 90)))
    picks = {"vacuum": vac[rng.choice(len(vac), min(args.pixels, len(vac)), replace=False)] if len(vac) else [],
             "crystal": crys[rng.choice(len(crys), min(args.pixels, len(crys)), replace=False)] if len(crys) else []}
    out = {"run": True, "dose": dose, "weights": args.weights or f"shipped {shipped_path('unet', args.shipped).name}",
           "image": ds.name if args.reference else "built-in HRTEM example"}
    diameters: dict[str, np.ndarray] = {}
    for region, pts in picks.items():
        stats = []
        for r, c in pts:
            f = pixel_filter(res.artifacts, ds.data, int(r), int(c))
            r0, r1, c0, c1 = f.extent
            truth = gt[r0:r1, c0:c1]
            yy, xx = np.mgrid[r0:r1, c0:c1]
            far = np.hypot(yy - r, xx - c) > RING_PX
            pos = np.clip(f.weights, 0, None) * far
            columns = truth > np.percentile(truth, 80)
            share = float(pos[columns].sum() / pos.sum()) if pos.sum() > 0 else float("nan")
            base = float(columns[far].mean()) if region == "crystal" else 0.0  # vacuum has no columns
            stats.append({"pixel": (int(r), int(c)), "diameter_px": f.effective_diameter, "area90": f.area90,
                          "participation": f.participation, "weight_sum": f.weight_sum,
                          # How much of the output the filter accounts for (1 for a bias-free network).
                          "explained": f.linear_estimate / f.output if f.output else float("nan"),
                          "column_enrichment": share / base if base > 0 else float("nan")})
        out[region] = {k: float(np.nanmedian([s[k] for s in stats])) for k in
                       ("diameter_px", "area90", "participation", "weight_sum", "explained", "column_enrichment")} if stats else {}
        out[region]["n"] = len(stats)
        diameters[region] = np.array([s["diameter_px"] for s in stats])
    v, c = out.get("vacuum", {}), out.get("crystal", {})
    if len(diameters.get("vacuum", ())) and len(diameters.get("crystal", ())):
        # How sure the diameter ratio is: the pixels of each region resampled with replacement.
        boot = np.random.default_rng(4)
        ratios = [np.median(boot.choice(diameters["vacuum"], len(diameters["vacuum"])))
                  / np.median(boot.choice(diameters["crystal"], len(diameters["crystal"]))) for _ in range(2000)]
        out["diameter_ratio_95"] = [float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))]
    out["reproduced"] = bool(v and c and v["diameter_px"] > WIDER * c["diameter_px"]
                             and c["column_enrichment"] > ENRICHED)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pixels", type=int, default=7)
    ap.add_argument("--no-methods", action="store_true", help="time only the UNet-32 from models/")
    ap.add_argument("--no-finding", action="store_true", help="skip the vacuum/crystal check")
    ap.add_argument("--dose", type=float, help="dose of the example for the finding, e⁻/px (default: the example's)")
    ap.add_argument("--reference", type=int, choices=[1, 2, 3, 4],
                    help="run the finding on Mohan et al.'s clean simulation N (../shared/data/hrem) instead")
    ap.add_argument("--shipped", choices=["bias-free", "standard"], default="bias-free",
                    help="which shipped UNet the finding uses (default: the bias-free one, whose output is exactly "
                         "its filter, as in Mohan et al.)")
    ap.add_argument("--weights", help="UNet weights for the finding instead of the shipped ones")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows: list[dict] = []
    load = os.getloadavg()[0]
    speed(args, rows)
    ref = _reference()
    print(f"Adaptive filter, seconds per pixel on the CPU ({args.threads} threads, {os.cpu_count()} cores, load average "
          f"{load:.1f} at start; target < {TARGET_S:g} s). Machine reference: one UNet-32 forward pass on 128×128 "
          f"took {ref:.3f} s here (median of 5).")
    print(f"{'network':<30}{'data':<28}{'median s':>10}{'max s':>8}  {'window':<10}weights")
    for r in rows:
        med = f"{r['median_s']:.3f}" if r.get("median_s") is not None else "-"
        mx = f"{r['max_s']:.3f}" if r.get("max_s") is not None else "-"
        print(f"{r['network']:<30}{r['data']:<28}{med:>10}{mx:>8}  {r.get('window', '-'):<10}{r['weights']}")
    result = {"threads": args.threads, "pixels": args.pixels, "load_average": load, "unet_forward_128_s": ref,
              "speed": rows}
    if not args.no_finding:
        fnd = finding(args)
        result["finding"] = fnd
        if not fnd["run"]:
            print(f"Finding (vacuum vs crystal): not run — {fnd['why']}")
        else:
            print(f"Finding on the {fnd['image']} at {fnd['dose']:g} e⁻/px, UNet {fnd['weights']} "
                  f"(medians over the pixels):")
            for region in ("vacuum", "crystal"):
                s = fnd[region]
                if s.get("n"):
                    print(f"  {region:<8} n={s['n']}  effective diameter {s['diameter_px']:.1f} px, "
                          f"{s['participation']:.0f} px taking part, weight sum {s['weight_sum']:.2f}, "
                          f"J x / output {s['explained']:.2f}"
                          + (f", column enrichment {s['column_enrichment']:.2f}" if region == "crystal" else ""))
            v, c = fnd["vacuum"], fnd["crystal"]
            if v.get("n") and c.get("n"):
                lo, hi = fnd.get("diameter_ratio_95", (float("nan"), float("nan")))
                print(f"  vacuum / crystal: diameter {v['diameter_px'] / c['diameter_px']:.2f}× "
                      f"(95 % bootstrap interval {lo:.2f}–{hi:.2f}), "
                      f"pixels taking part {v['participation'] / c['participation']:.2f}×")
            print(f"  reproduced (vacuum diameter > {WIDER:g}× crystal, crystal column enrichment > {ENRICHED:g}): "
                  f"{fnd['reproduced']}")
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
