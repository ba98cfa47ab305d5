"""The batch manifest: one row per input file, written next to the results as
``manifest.csv`` and ``manifest.json``, rewritten atomically as files finish.

A re-run of the same batch reads it back and skips every file whose row says ``done`` with
the same method, parameters and seed and whose output is still on disk: resuming after a
crash or Ctrl-C costs nothing for the finished files.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable

COLUMNS = ("name", "status", "input", "output", "method", "params", "requested", "seed", "seconds",
           "total_seconds", "device", "score", "score_kind", "score_value", "error", "preview", "worker")
JSON_NAME, CSV_NAME = "manifest.json", "manifest.csv"


def _plain(v: Any) -> Any:
    """JSON-safe values (numpy scalars, NaN) for the manifest."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, "item") and callable(v.item):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return str(v)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class Manifest:
    """Rows keyed by input path; :meth:`write` replaces both files atomically.

    ``min_interval`` seconds at least between two writes from :meth:`record` (a crash loses at
    most that much: those files are simply redone); :meth:`write` always writes.
    """

    def __init__(self, folder: str | os.PathLike, *, min_interval: float = 0.5):
        self.folder = Path(folder)
        self.rows: dict[str, dict] = {}
        self.min_interval = float(min_interval)
        self._last = 0.0
        self.note = ""
        path = self.folder / JSON_NAME
        if path.is_file():
            try:
                rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
                self.rows = {str(r["input"]): dict(r) for r in rows}
            except (OSError, ValueError, KeyError, TypeError):
                self.note = f"The manifest in {self.folder} could not be read, so every file is done again."

    def finished(self, input: str, output: str, method: str, requested: dict, seed: int) -> bool:
        """Whether ``input`` is already done with these settings and its output is on disk."""
        row = self.rows.get(input)
        return bool(row and row.get("status") == "done" and row.get("output") == output
                    and row.get("method") == method and row.get("requested") == _plain(requested)
                    and row.get("seed") == seed and Path(output).is_file())

    def output_of(self, input: str) -> str | None:
        row = self.rows.get(input)
        return str(row["output"]) if row and row.get("output") else None

    def record(self, row: dict) -> None:
        self.rows[str(row["input"])] = _plain(row)
        if time.monotonic() - self._last >= self.min_interval:
            self.write()

    def write(self) -> None:
        rows = list(self.rows.values())
        _atomic_write(self.folder / JSON_NAME, json.dumps({"columns": list(COLUMNS), "rows": rows}, indent=1))
        _atomic_write(self.folder / CSV_NAME, to_csv(rows))
        self._last = time.monotonic()


def to_csv(rows: Iterable[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: json.dumps(r.get(k), sort_keys=True) if isinstance(r.get(k), dict) else
                    ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})
    return buf.getvalue()


def read_rows(folder: str | os.PathLike) -> list[dict]:
    """The rows of the manifest in ``folder`` (empty when there is none yet)."""
    path = Path(folder) / JSON_NAME
    try:
        return list(json.loads(path.read_text(encoding="utf-8"))["rows"])
    except (OSError, ValueError, KeyError, TypeError):
        return []
