"""Run the readers on a batch of files under an address-space limit; one JSON line per file.

Usage: ``python fuzz_runner.py CASES.json LIMIT_BYTES WARMUP_FILE``. The limit is set before
NumPy or any reader is imported, so an allocation a header tricked a reader into fails here
instead of swapping the machine. For each case ``load``, ``load_bytes`` and the CLI's
``info`` (``emcore.cli.main``, in this process) are tried; the outcome, the message and the
seconds each took are printed. A ``{"start": name}`` line precedes each case so that a
batch that hangs names the file it hung on.
"""

from __future__ import annotations

import contextlib
import io
import json
import resource
import sys
import time
import traceback
from pathlib import Path


def _outcome(fn):
    from emcore.errors import EmcoreError

    t = time.monotonic()
    try:
        value = fn()
        out = {"outcome": "ok", "value": value}
    except EmcoreError as exc:
        out = {"outcome": "error", "type": type(exc).__name__, "message": str(exc)}
    except BaseException:  # noqa: BLE001 — a traceback is exactly what the test looks for
        out = {"outcome": "crash", "message": traceback.format_exc()[-3000:]}
    out["seconds"] = round(time.monotonic() - t, 3)
    return out


def _cli(path: str):
    from emcore import cli

    err, std = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
        rc = cli.main(["info", path])
    return {"rc": rc, "stderr": err.getvalue()}


def main() -> int:
    cases_file, limit, warmup = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from emcore import io as eio

    eio.load(warmup)  # imports HyperSpy and its plugins once, outside any case's timing
    for case in json.loads(Path(cases_file).read_text()):
        print(json.dumps({"start": case["name"]}), flush=True)
        files = [Path(p) for p in case["files"]]
        res = {"name": case["name"], "load": _outcome(lambda: eio.load(files[0]).kind)}
        if case["upload"]:
            res["load_bytes"] = _outcome(lambda: eio.load_bytes([(p.name, p.read_bytes()) for p in files]).kind)
        res["cli"] = _outcome(lambda: _cli(str(files[0])))
        print(json.dumps(res), flush=True)
    print(json.dumps({"maxrss_kb": _peak_rss_kb()}), flush=True)
    return 0


def _peak_rss_kb() -> int:
    """This program's own peak resident memory. Not ``ru_maxrss``: Linux keeps in it the size
    of the process before ``exec`` (a copy of a large pytest process), which says nothing of
    what the readers allocated."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


if __name__ == "__main__":
    sys.exit(main())
