"""Batch throughput on Dask: ``python benchmarks/bench_batch.py [--n 200] [--methods wiener unet]``.

Figures (not timed tests):

1. files per minute for N simulated 512×512 HRTEM images (``emcore.sim.example("hrem")``)
   with each method, on a local cluster of 1 and of 2 worker processes (one thread each),
   and the 2/1 ratio. Clusters are started and warmed (imports, shipped weights) before the
   clock starts, and the no-reference score is off (``--no-score``): this is denoising
   throughput; the score's cost is the method's again for count data;
2. the scheduler's overhead per file: the same N files through a task that does nothing,
   on 2 workers (submit, schedule, return a manifest row, write the manifest);
3. the same batch through ``--scheduler``: a separately started ``dask scheduler`` and two
   ``dask worker`` processes (``--nthreads 1``), as on a cluster of machines;
4. peak RSS of the driver for 50 and 500 files through the no-op task, each in a fresh
   process: flat (± 10 %) means the driver's memory does not grow with the number of files.

Prints a table and one JSON line. The machine's load average is printed: on shared cores
the absolute numbers move with whatever else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from emcore import io, sim  # noqa: E402
from emcore.batch import run_batch  # noqa: E402
from emcore.batch.run import connect  # noqa: E402
from emcore.batch.task import failed_row  # noqa: E402


def noop(task):
    """A task that does nothing but return its manifest row (scheduler overhead)."""
    row = failed_row(task, "")
    row["status"] = "done"
    return row


def make_files(folder: Path, n: int, size: int = 512) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        io.save(sim.example("hrem", seed=i, size=size), folder / f"hrem_{i:04d}.npy")


def warm(client, method: str) -> None:
    def _warm(m=method):
        from emcore import sim as _sim
        from emcore.methods.registry import denoise as _denoise

        _denoise(_sim.example("hrem", seed=0, size=64), m)  # imports, and the shipped weights once
    client.run(_warm)


def timed(inputs: list[str], method: str, out: Path, scheduler: str, task_fn=None, warmup: int = 0) -> float:
    if warmup:  # every worker once through the whole path (reader, writer, weights), untimed
        run_batch(inputs[:warmup], method, out.with_name(out.name + "_warm"), scheduler=scheduler, score=False, fmt=".npy")
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    kw = {"task_fn": task_fn} if task_fn else {}
    s = run_batch(inputs, method, out, scheduler=scheduler, score=False, fmt=".npy", **kw)
    dt = time.perf_counter() - t0
    assert s.failed == 0 and s.done == len(inputs), s.rows[:2]
    return dt


def _files_for(method: str, files: list[str], n_learned: int) -> list[str]:
    from emcore.methods.registry import get_method

    return files if get_method(method).kind == "classical" else files[:n_learned]


def local_runs(files: list[str], methods: list[str], tmp: Path, n_learned: int) -> dict:
    res = {}
    for workers in (1, 2):
        client, cluster = connect(None, workers)
        try:
            for m in methods:
                warm(client, m)
                mine = _files_for(m, files, n_learned)
                dt = timed(mine, m, tmp / f"out_{m}_{workers}", cluster.scheduler_address, warmup=2 * workers)
                res[(m, workers)] = len(mine) / dt * 60.0
                print(f"  {m:<7} {workers} worker(s): {res[(m, workers)]:7.1f} files/min ({dt:.1f} s)", flush=True)
            if workers == 2:
                dt = timed(files, "wiener", tmp / "out_noop", cluster.scheduler_address, task_fn=noop)
                res["overhead_ms"] = dt / len(files) * 1000.0
                print(f"  scheduler overhead: {res['overhead_ms']:.1f} ms per file", flush=True)
        finally:
            client.close()
            cluster.close()
    return res


def external_runs(files: list[str], methods: list[str], tmp: Path, n_learned: int) -> dict:
    exe = Path(sys.executable).with_name("dask")
    sched_file = tmp / "scheduler.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([str(exe), "scheduler", "--port", "0", "--dashboard-address", ":0",
                               "--scheduler-file", str(sched_file)], env=env, stderr=subprocess.DEVNULL)]
    try:
        for _ in range(300):
            if sched_file.is_file():
                break
            time.sleep(0.1)
        for _ in range(2):
            procs.append(subprocess.Popen([str(exe), "worker", "--scheduler-file", str(sched_file), "--nthreads", "1",
                                           "--nworkers", "1"], env=env, stderr=subprocess.DEVNULL))
        address = json.loads(sched_file.read_text())["address"]
        from distributed import Client

        with Client(address, timeout=30) as client:
            client.wait_for_workers(2, timeout=120)
            res = {}
            for m in methods:
                warm(client, m)
                mine = _files_for(m, files, n_learned)
                dt = timed(mine, m, tmp / f"ext_{m}", address, warmup=4)
                res[m] = len(mine) / dt * 60.0
                print(f"  {m:<7} --scheduler {address} (2 dask workers): {res[m]:7.1f} files/min", flush=True)
        return res
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def driver_rss(n: int, tmp: Path) -> float:
    """Peak RSS (MiB) of a fresh driver process running ``n`` tiny files through the no-op task."""
    code = (f"import sys, resource; sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / 'benchmarks')!r})\n"
            "from bench_batch import _rss_child\n"
            f"_rss_child({n}, {str(tmp)!r})\n")
    script = tmp / f"rss_{n}.py"
    script.write_text("if __name__ == '__main__':\n" + "".join("    " + line + "\n" for line in code.splitlines()))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=1200)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return float(out.stdout.strip().splitlines()[-1])


def _rss_child(n: int, tmp: str) -> None:
    import numpy as np

    folder = Path(tmp) / f"tiny_{n}"
    folder.mkdir(exist_ok=True)
    for i in range(n):
        np.save(folder / f"t_{i:04d}.npy", np.zeros((16, 16), np.float32))
    s = run_batch([str(folder)], "wiener", Path(tmp) / f"rss_out_{n}", workers=2, score=False, task_fn=noop)
    assert s.done == n
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="simulated 512² images")
    ap.add_argument("--n-learned", type=int, default=None, help="images for learned methods (default: --n)")
    ap.add_argument("--methods", nargs="+", default=["wiener", "unet"])
    ap.add_argument("--skip-external", action="store_true")
    ap.add_argument("--skip-rss", action="store_true")
    args = ap.parse_args()
    n_learned = args.n_learned or args.n
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; N = {args.n} "
          f"({n_learned} for learned methods)", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        make_files(tmp / "in", args.n)
        files = sorted(str(p) for p in (tmp / "in").glob("*.npy"))
        res = local_runs(files, args.methods, tmp, n_learned)
        ratios = {m: res[(m, 2)] / res[(m, 1)] for m in args.methods}
        for m, r in ratios.items():
            print(f"  {m}: 2 workers / 1 worker = {r:.2f}×")
        ext = {} if args.skip_external else external_runs(files, args.methods, tmp, n_learned)
        rss = {} if args.skip_rss else {n: driver_rss(n, tmp) for n in (50, 500)}
        if rss:
            print(f"  driver peak RSS: 50 files {rss[50]:.0f} MiB, 500 files {rss[500]:.0f} MiB "
                  f"({(rss[500] / rss[50] - 1) * 100:+.1f} %)")
        print(json.dumps({"n": args.n, "n_learned": n_learned, "files_per_min": {f"{k[0]}_{k[1]}": round(v, 1) for k, v in res.items()
                                                          if isinstance(k, tuple)},
                          "ratio_2_over_1": {m: round(r, 2) for m, r in ratios.items()},
                          "overhead_ms_per_file": round(res["overhead_ms"], 1),
                          "external_files_per_min": {m: round(v, 1) for m, v in ext.items()},
                          "driver_rss_mib": {str(k): round(v, 0) for k, v in rss.items()},
                          "load_average": round(os.getloadavg()[0], 1)}))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
