"""Big data with bounded memory: peak RSS of each case in a fresh process.

Parts (each case runs in its own ``python`` process, which reports its peak resident memory,
``VmHWM`` of ``/proc/self/status``, after the work; the input is made by another process first,
so making it does not count):

``frames``  a stack of N simulated 2048² frames (``.npy``) through the batch task with
            ``stream="always"`` (frame by frame) and, for comparison, ``"never"`` (whole stack):
            what one Dask worker does for that file (:func:`emcore.batch.task.run_file`).
``cube``    an EDS spectrum image of ``--size``² × ``--channels`` made block by block with
            :func:`emcore.sim.eds_large.eds_blocks` into ``runs/`` (8 GiB at the defaults, written
            uncompressed), then: opened lazily and binned 2×2 with an energy crop, written block by
            block; out-of-core PCA through the batch task (``stream="auto"``: the cube is over the
            worker's cap). The files are deleted at the end unless ``--keep``. With ``--cli``:
            ``python -m emcore batch BIG --method pca`` instead, the peak RSS of each of its
            processes (driver, nanny, worker) polled with psutil.
``tiled``   ``denoise(ds, "unet")`` / ``"dncnn"`` on one ``--side``² image with the shipped
            weights: peak RSS of the whole call, and of the prior channel (the self-calibrated
            Wiener filter of the whole frame) alone when the network has one. The image is made
            before the peak is reset (``/proc/self/clear_refs``), so the figures are what the
            denoising adds to a process holding the image.
``prior``   the prior channel alone (:func:`emcore.methods.prior.wiener_prior`) on one ``--side``² image.

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_bigdata.py frames --frames 10 50 100 --method wiener
    nice -n 10 .venv/bin/python benchmarks/bench_bigdata.py cube [--cli]
    nice -n 10 .venv/bin/python benchmarks/bench_bigdata.py tiled --side 8192 --methods unet dncnn
    nice -n 10 .venv/bin/python benchmarks/bench_bigdata.py prior --side 8192
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "bench_bigdata"


def vm(key: str = "VmHWM") -> float:
    """A memory figure of this process from /proc/self/status, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    """Start VmHWM again from the current RSS (Linux ≥ 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def in_fresh_process(case: dict) -> dict:
    """Run ``case`` in a new interpreter; its JSON line back."""
    r = subprocess.run([sys.executable, __file__, "_case", json.dumps(case)], capture_output=True, text=True,
                       cwd=ROOT, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode or not lines:
        raise SystemExit(f"case {case} failed:\n{r.stderr[-3000:]}")
    return json.loads(lines[-1])


# ------------------------------------------------------------------------------- cases
def case_make_stack(c: dict) -> dict:
    """N frames of a 2048² lattice image (a 512² HRTEM phantom tiled 4×4) at 2 e/px, Poisson."""
    from emcore import sim
    from emcore.io.lazy import write_blocks

    clean = sim.example("hrem", seed=0, size=512).ground_truth
    clean = np.tile(clean / clean.mean() * 2.0, (c["side"] // 512, c["side"] // 512)).astype(np.float32)
    write_blocks(c["path"], (c["frames"], c["side"], c["side"]),
                 lambda s, e: np.stack([np.random.default_rng([7, i]).poisson(clean).astype(np.float32)
                                        for i in range(s, e)]), kind="stack")
    return {"bytes": Path(c["path"]).stat().st_size}


def case_run_file(c: dict) -> dict:
    """What a Dask worker does for one file (emcore.batch.task.run_file), in this process."""
    from emcore.batch.task import FileTask, run_file

    reset_peak()
    t0 = time.perf_counter()
    row = run_file(FileTask(input=c["input"], name=Path(c["input"]).name, output=c["output"],
                            preview=str(Path(c["output"]).with_suffix(".png")), method=c["method"],
                            params=c.get("params", {}), seed=0, device="cpu", score=False,
                            stream=c["stream"]))
    return {"status": row["status"], "error": row["error"], "seconds": round(time.perf_counter() - t0, 1),
            "params": {k: v for k, v in row["params"].items() if k in ("window", "noise_power", "n_components")},
            "pieces": row.get("pieces", ""), "peak_mib": round(vm(), 1)}


def case_make_cube(c: dict) -> dict:
    from emcore.io.lazy import write_blocks
    from emcore.sim.eds_large import eds_blocks

    t0 = time.perf_counter()
    cube = eds_blocks(c["size"], c["channels"], counts_per_pixel=c["dose"], seed=0)
    write_blocks(c["path"], cube.shape, cube.make, kind="cube", rows=c["rows"], calibration=cube.calibration,
                 name="simulated EDS (Fe/Pt particles), made in blocks", is_counts=True, noise=cube.noise,
                 haadf=cube.haadf)
    return {"shape": list(cube.shape), "bytes": Path(c["path"]).stat().st_size,
            "seconds": round(time.perf_counter() - t0, 1), "peak_mib": round(vm(), 1)}


def case_bin_crop(c: dict) -> dict:
    """Open lazily, bin 2×2, crop the energy range, write the reduced cube block by block."""
    from emcore.io.lazy import open_lazy, write_blocks

    reset_peak()
    t0 = time.perf_counter()
    with open_lazy(c["input"], bin_spatial=2, energy_range=(0.2, 10.0)) as lz:
        opened = round(vm(), 1)
        spectrum = np.zeros(lz.shape[2])

        def block(s, e):
            b = lz.block(s, e)
            spectrum[:] += b.sum(axis=(0, 1), dtype=np.float64)
            return b

        write_blocks(c["output"], lz.shape, block, kind="cube", rows=32, calibration=lz.calibration,
                     is_counts=bool(lz.is_counts), haadf=lz.haadf)
        shape = list(lz.shape)
    return {"shape": shape, "seconds": round(time.perf_counter() - t0, 1), "peak_after_open_mib": opened,
            "peak_mib": round(vm(), 1), "counts_per_pixel": round(float(spectrum.sum()) / (shape[0] * shape[1]), 2),
            "bytes": Path(c["output"]).stat().st_size}


def case_tiled(c: dict) -> dict:
    import torch

    from emcore import sim
    from emcore.data.dataset import Dataset
    from emcore.methods.registry import denoise
    from emcore.methods.supervised import load_network, shipped_path

    torch.set_num_threads(int(c.get("threads", 2)))
    side = c["side"]
    clean = sim.example("hrem", seed=0, size=512).ground_truth
    clean = np.tile(clean / clean.mean() * 5.0, (side // 512, side // 512)).astype(np.float32)
    ds = Dataset(np.random.default_rng(0).poisson(clean).astype(np.float32), "image", name=f"{side}² lattice")
    del clean
    weights = shipped_path(c["method"], "standard")
    net = load_network(c["method"], weights)
    out = {"weights": Path(weights).name, "prior": bool(getattr(net, "prior", False)),
           "image_mib": round(ds.data.nbytes / 2**20, 1), "rss_before_mib": round(vm("VmRSS"), 1)}
    if c.get("prior_alone") or out["prior"]:
        from emcore.methods.prior import wiener_prior

        reset_peak()
        t0 = time.perf_counter()
        p, _ = wiener_prior(ds.data)
        out.update(prior_seconds=round(time.perf_counter() - t0, 1), prior_peak_mib=round(vm(), 1))
        del p
    reset_peak()
    phases = _watch_phases() if c.get("phases") else None
    t0 = time.perf_counter()
    res = denoise(ds, c["method"], device="cpu")
    out.update(seconds=round(time.perf_counter() - t0, 1), peak_mib=round(vm(), 1),
               tile=res.params.get("tile"), overlap=res.params.get("overlap"))
    if phases is not None:
        out["phases"] = phases()
    return out


def _watch_phases():
    """Where the memory of a supervised run goes: the library's steps are wrapped (in this
    process only) to name the phase, and a thread samples VmRSS every 20 ms; returns a function
    giving the highest RSS seen in each phase, in MiB."""
    import threading

    import emcore.methods.prior as prior
    import emcore.methods.tiling as tiling
    import emcore.train.simulated as simulated

    phase, peaks, running = ["denoise: before the first step"], {}, [True]

    def wrap(mod, name, label):
        orig = getattr(mod, name)

        def inner(*args, **kwargs):
            phase[0] = label
            try:
                return orig(*args, **kwargs)
            finally:
                phase[0] = f"denoise: after {label}"
        setattr(mod, name, inner)

    wrap(simulated, "normalise", "normalise (x / mean)")
    wrap(prior, "wiener_prior", "wiener_prior (the prior channel)")
    wrap(prior, "network_input", "network_input (2-channel stack)")
    wrap(tiling, "tiled_apply", "tiled_apply (padding, tiles, blended output)")

    def sample():
        while running[0]:
            rss = vm("VmRSS")
            peaks[phase[0]] = max(peaks.get(phase[0], 0.0), rss)
            time.sleep(0.02)

    t = threading.Thread(target=sample, daemon=True)
    t.start()

    def stop():
        running[0] = False
        t.join()
        return {k: round(v, 1) for k, v in peaks.items()}

    return stop


def case_prior(c: dict) -> dict:
    """The prior channel alone: emcore.methods.prior.wiener_prior of one whole side² image."""
    from emcore import sim
    from emcore.methods.prior import wiener_prior

    side = c["side"]
    clean = sim.example("hrem", seed=0, size=512).ground_truth
    image = np.random.default_rng(0).poisson(np.tile(clean / clean.mean() * 5.0, (side // 512, side // 512)))
    image = image.astype(np.float32)
    before = vm("VmRSS")
    reset_peak()
    t0 = time.perf_counter()
    _, chosen = wiener_prior(image)
    return {"seconds": round(time.perf_counter() - t0, 1), "peak_mib": round(vm(), 1),
            "rss_before_mib": round(before, 1), "window": chosen.get("window")}


CASES = {"prior": case_prior, "make_stack": case_make_stack, "run_file": case_run_file, "make_cube": case_make_cube,
         "bin_crop": case_bin_crop, "tiled": case_tiled}


# ------------------------------------------------------------------------------- parts
def part_frames(a) -> None:
    RUNS.mkdir(parents=True, exist_ok=True)
    for n in a.frames:
        stack = RUNS / f"stack_{n}.npy"
        if not stack.exists():
            in_fresh_process({"case": "make_stack", "path": str(stack), "frames": n, "side": a.side})
        for stream in a.stream:
            r = in_fresh_process({"case": "run_file", "input": str(stack), "output": str(RUNS / f"out_{n}_{stream}.npy"),
                                  "method": a.method, "stream": stream})
            print(f"frames {n:4d} × {a.side}², {a.method:6s} stream={stream:6s} peak RSS {r['peak_mib']:8.1f} MiB "
                  f"in {r['seconds']:7.1f} s  {r['status']} {r['params']} {r['pieces']} {r['error']}", flush=True)
            for ext in (".npy", ".png"):
                (RUNS / f"out_{n}_{stream}{ext}").unlink(missing_ok=True)
        if not a.keep:
            stack.unlink(missing_ok=True)


def part_cube(a) -> None:
    RUNS.mkdir(parents=True, exist_ok=True)
    big = RUNS / "big_eds.hspy"
    try:
        if not big.exists():
            r = in_fresh_process({"case": "make_cube", "path": str(big), "size": a.size, "channels": a.channels,
                                  "dose": a.dose, "rows": 16})
            print(f"made {r['shape']} in {r['seconds']} s: {r['bytes'] / 1e9:.2f} GB on disk "
                  f"({r['bytes'] / 2**30:.2f} GiB), peak RSS {r['peak_mib']} MiB", flush=True)
        if a.cli:
            cli_pca(big)
            return
        r = in_fresh_process({"case": "bin_crop", "input": str(big), "output": str(RUNS / "big_binned.hspy")})
        print(f"lazy open + bin 2×2 + energy 0.2–10 keV -> {r['shape']} written block by block in {r['seconds']} s: "
              f"peak RSS {r['peak_mib']} MiB (after opening: {r['peak_after_open_mib']} MiB); "
              f"{r['counts_per_pixel']} counts per binned pixel", flush=True)
        (RUNS / "big_binned.hspy").unlink(missing_ok=True)
        r = in_fresh_process({"case": "run_file", "input": str(big), "output": str(RUNS / "big_pca.hspy"),
                              "method": "pca", "stream": "auto"})
        size = (RUNS / "big_pca.hspy").stat().st_size if (RUNS / "big_pca.hspy").exists() else 0
        print(f"out-of-core PCA (batch task, stream=auto): {r['status']} {r['params']} in {r['seconds']} s, "
              f"peak RSS {r['peak_mib']} MiB; result {size / 1e9:.2f} GB {r['pieces']} {r['error']}", flush=True)
    finally:
        if not a.keep:
            shutil.rmtree(RUNS, ignore_errors=True)


def cli_pca(big: Path) -> None:
    """``python -m emcore batch BIG --method pca`` on a local cluster of one worker: the peak RSS
    of every process of the run (driver, nanny, worker), polled every 0.2 s with psutil."""
    import psutil

    out = RUNS / "cli_out"
    cmd = [sys.executable, "-m", "emcore", "batch", str(big), "--method", "pca", "--out", str(out), "--workers", "1",
           "--format", ".hspy", "--no-score"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})
    peaks: dict[int, tuple[str, float]] = {}
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            for p in [root] + root.children(recursive=True):
                try:
                    rss = p.memory_info().rss / 2**20
                    name = " ".join(p.cmdline()[1:3])[:60]
                except psutil.Error:
                    continue
                if rss > peaks.get(p.pid, ("", 0.0))[1]:
                    peaks[p.pid] = (name, rss)
        except psutil.Error:
            pass
        time.sleep(0.2)
    stdout, stderr = proc.communicate()
    print(f"$ {' '.join(['python'] + cmd[1:])}\n  exit {proc.returncode} in {time.perf_counter() - t0:.0f} s; "
          f"stdout: {stdout.strip()}")
    for line in stderr.splitlines():
        if "dashboard" in line.lower() or "failed" in line:
            print("  stderr: " + line.strip())
    for pid, (name, rss) in sorted(peaks.items(), key=lambda kv: -kv[1][1]):
        print(f"  peak RSS {rss:8.1f} MiB  pid {pid}  {name}")
    rows = json.loads((out / "manifest.json").read_text())["rows"] if (out / "manifest.json").exists() else []
    for r in rows:
        print(f"  manifest: {r['name']} {r['status']} {r.get('pieces', '')} params {r['params']} {r['error']}")


def part_tiled(a) -> None:
    for m in a.methods:
        r = in_fresh_process({"case": "tiled", "method": m, "side": a.side, "threads": a.threads,
                              "prior_alone": a.prior_alone, "phases": a.phases})
        prior = (f"; prior channel alone: peak {r['prior_peak_mib']} MiB in {r['prior_seconds']} s"
                 if "prior_peak_mib" in r else "")
        print(f"{m} ({r['weights']}, prior={r['prior']}) on {a.side}² ({r['image_mib']} MiB image, process at "
              f"{r['rss_before_mib']} MiB before): peak RSS {r['peak_mib']} MiB in {r['seconds']} s, tile "
              f"{r['tile']}/{r['overlap']}{prior}", flush=True)
        for name, mib in r.get("phases", {}).items():
            print(f"    highest RSS during {name}: {mib} MiB")


def part_prior(a) -> None:
    r = in_fresh_process({"case": "prior", "side": a.side})
    print(f"wiener_prior on {a.side}² (process at {r['rss_before_mib']} MiB before): peak RSS {r['peak_mib']} MiB "
          f"in {r['seconds']} s, window {r['window']}", flush=True)


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "_case":
        c = json.loads(sys.argv[2])
        print(json.dumps(CASES[c["case"]](c)))
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="part", required=True)
    f = sub.add_parser("frames")
    f.add_argument("--frames", type=int, nargs="+", default=[10, 50, 100])
    f.add_argument("--side", type=int, default=2048)
    f.add_argument("--method", default="wiener")
    f.add_argument("--stream", nargs="+", default=["always", "never"])
    f.add_argument("--keep", action="store_true")
    c = sub.add_parser("cube")
    c.add_argument("--size", type=int, default=2048)
    c.add_argument("--channels", type=int, default=512)
    c.add_argument("--dose", type=float, default=50.0)
    c.add_argument("--keep", action="store_true")
    c.add_argument("--cli", action="store_true", help="run 'python -m emcore batch BIG --method pca' instead")
    t = sub.add_parser("tiled")
    t.add_argument("--side", type=int, default=8192)
    t.add_argument("--methods", nargs="+", default=["unet", "dncnn"])
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--phases", action="store_true", help="also the highest RSS in each step of the run")
    t.add_argument("--prior-alone", action="store_true",
                   help="also measure the prior channel (wiener_prior of the whole image) alone, with or without a prior")
    p = sub.add_parser("prior")
    p.add_argument("--side", type=int, default=8192)
    a = ap.parse_args()
    {"frames": part_frames, "cube": part_cube, "tiled": part_tiled, "prior": part_prior}[a.part](a)


if __name__ == "__main__":
    main()
