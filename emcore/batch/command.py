"""``python -m emcore batch``: the command-line face of :func:`emcore.batch.run_batch`.

Kept beside the batch code so that :mod:`emcore.cli` only registers it. Sentences go to
stderr (progress, notes, each failed file), one JSON summary to stdout. Exit status 2 when
nothing could run (bad arguments, no files, every file failed), 130 after a Ctrl-C stop (run
the same command again to resume), 0 otherwise — failed files are in the manifest.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time

from emcore.args import parse_sets, seed
from emcore.errors import Stopped


def add_parser(sub) -> argparse.ArgumentParser:
    """Add the ``batch`` sub-command to ``sub`` (an ``add_subparsers()`` object)."""
    b = sub.add_parser(
        "batch",
        help="denoise many files (files, folders, globs) on Dask; results and a manifest in --out",
        description="One Dask task per file, on a local cluster of --workers processes or on a running "
        "'dask scheduler' (--scheduler ADDRESS). Results go to OUT/<stem>_<method><format>, before/after "
        "thumbnails to OUT/previews, and a manifest (CSV and JSON) records every file: parameters used, seed, "
        "seconds, device, a no-reference score, or the sentence saying why it failed. Running the same "
        "command again skips the files already done.",
    )
    b.add_argument("inputs", nargs="+", metavar="INPUT", help="data files, folders (their data files) or glob patterns")
    b.add_argument("--method", required=True)
    b.add_argument("--out", required=True, help="output folder (created if needed)")
    b.add_argument("--set", action="append", metavar="NAME=VALUE", help="a method parameter (repeatable); 'auto' to estimate")
    b.add_argument("--format", default=".tif", choices=[".tif", ".tiff", ".hspy", ".npy"], help="format of the results")
    b.add_argument("--workers", type=int, default=None, help="worker processes of the local cluster (default: cores, at most 4)")
    b.add_argument("--memory-limit", default=None, help="memory per local worker, e.g. 4GB (default: shared out)")
    b.add_argument("--scheduler", default=None, metavar="ADDRESS", help="a running Dask scheduler, e.g. tcp://host:8786")
    b.add_argument("--seed", type=seed, default=0, help="0 to 2⁶³ − 1")
    b.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    b.add_argument("--kind", choices=["image", "stack", "cube"], help="how to read ambiguous 3-D files")
    b.add_argument("--no-score", dest="score", action="store_false", help="skip the no-reference score (count splitting re-runs the method)")
    b.add_argument("--stream", choices=["auto", "always", "never"], default="auto",
                   help="denoise a file piece by piece, reading and writing it in pieces (a stack frame by frame with "
                        "wiener, unet or dncnn; a spectrum image by out-of-core PCA): auto when it is over a "
                        "worker's memory cap (default), always, never")
    b.set_defaults(func=run_command)
    return b


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "ETA —"
    return f"ETA {seconds:.0f} s" if seconds < 120 else f"ETA {seconds / 60:.0f} min"


def run_command(args) -> int:
    from emcore.batch.run import run_batch

    tty = sys.stderr.isatty()
    last = [0.0]

    def say(text: str) -> None:
        print(("\n" if tty and last[0] else "") + text, file=sys.stderr, flush=True)

    def progress(p) -> None:
        now = time.monotonic()
        if not tty and now - last[0] < 2.0 and p.step < p.total:
            return
        last[0] = now
        line = f"  {p.message}; {_eta(p.eta)}"
        print(f"\r{line:<100}" if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)

    stop: list[int] = []

    def ask_stop(signum, frame):
        if stop:
            raise KeyboardInterrupt
        stop.append(signum)
        say("  stopping: running files are cancelled, finished ones kept (again to abort)…")

    old = {s: signal.signal(s, ask_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = run_batch(args.inputs, args.method, args.out, params=parse_sets(args.set), fmt=args.format,
                            seed=args.seed, device=args.device, workers=args.workers, scheduler=args.scheduler,
                            memory_limit=args.memory_limit, score=args.score, kind=args.kind, stream=args.stream,
                            progress=progress,
                            should_stop=lambda: bool(stop), say=say)
    except Stopped as err:
        say(f"{err} The manifest in {args.out} lists what is done.")
        return 130
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if tty:
        print(file=sys.stderr)
    for row in summary.rows:
        if row.get("status") != "done":
            print(f"failed: {row['name']}: {row.get('error')}", file=sys.stderr)
    print(json.dumps({"done": summary.done, "failed": summary.failed, "skipped": summary.skipped,
                      "workers": summary.workers, "seconds": round(summary.seconds, 2),
                      "manifest": str(summary.manifest), "out": str(summary.out_dir)}))
    if not summary.anything_ran:
        print(f"error: none of the {summary.failed} files could be denoised; the manifest says why for each.",
              file=sys.stderr)
        return 2
    return 0
