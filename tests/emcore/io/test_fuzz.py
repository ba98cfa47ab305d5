"""Every reader on malformed and hostile files: one sentence or a clean load, fast, bounded.

The files (see :mod:`tests.emcore.io.adversarial`) cover every supported extension: empty,
random bytes, truncated real files, lying headers, external links / virtual datasets /
external storage, pickles, odd dtypes and shapes, NaN/Inf, FIFOs and devices. They are read
in one subprocess under an address-space limit (``RLIMIT_AS``) and a timeout, through
:func:`emcore.io.load`, :func:`emcore.io.load_bytes` and the CLI's ``info``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA
from tests.emcore.io.adversarial import cases, template_hspy

ROOT = Path(__file__).resolve().parents[3]
RUNNER = Path(__file__).with_name("fuzz_runner.py")
#: Address space for the reading process: Python + NumPy + HyperSpy + dask use ~1.3 GB of
#: it (mostly reserved, not resident); a reader tricked into allocating more fails here.
ADDRESS_SPACE = 3 * 1024**3
#: Seconds any one answer may take (imports excluded: the runner warms up first).
PER_CASE_S = 5.0
BATCH_TIMEOUT_S = 240

CASES = [c for c in cases() if not c.shared or SHARED_DATA.is_dir()]
BY_NAME = {c.name: c for c in CASES}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    files = root / "files"
    files.mkdir()
    specs = []
    for case in CASES:
        d = files / case.name.replace(".", "_")
        d.mkdir()
        paths = case.build(d)
        specs.append({"name": case.name, "files": [str(p) for p in paths], "upload": case.upload})
    (root / "cases.json").write_text(json.dumps(specs))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "EMCORE_MAX_BYTES": ""}
    proc = subprocess.run(
        [sys.executable, str(RUNNER), str(root / "cases.json"), str(ADDRESS_SPACE), str(template_hspy(files))],
        capture_output=True, text=True, timeout=BATCH_TIMEOUT_S, cwd=ROOT, env=env,
    )  # fmt: skip
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    done = {r["name"]: r for r in lines if "name" in r}
    started = [r["start"] for r in lines if "start" in r]
    assert proc.returncode == 0, f"runner failed at {started[-1:]}: {proc.stderr[-3000:]}"
    rss = [r["maxrss_kb"] for r in lines if "maxrss_kb" in r]
    if os.environ.get("EMCORE_FUZZ_DUMP"):  # to read every sentence: EMCORE_FUZZ_DUMP=file pytest ...
        Path(os.environ["EMCORE_FUZZ_DUMP"]).write_text(json.dumps(done, indent=1, ensure_ascii=False))
    return {"cases": done, "maxrss_kb": rss[0] if rss else None}


def test_there_are_enough_cases_over_every_extension():
    from tests.emcore.io.adversarial import EXTENSIONS

    assert len(CASES) >= 40
    covered = {Path(c.name).suffix for c in CASES}
    assert set(EXTENSIONS) <= covered


def _one_sentence(msg: str) -> bool:
    return "\n" not in msg.strip() and "Traceback" not in msg and len(msg) < 700


@pytest.mark.parametrize("name", list(BY_NAME))
def test_each_file_is_answered_in_one_sentence(results, name):
    case = BY_NAME[name]
    res = results["cases"][name]
    modes = ["load", "cli"] + (["load_bytes"] if case.upload else [])
    for mode in modes:
        out = res[mode]
        assert out["outcome"] != "crash", f"{mode}: {out['message']}"
        assert out["seconds"] < PER_CASE_S, f"{mode} took {out['seconds']} s"
        if mode == "cli":
            rc, err = out["value"]["rc"], out["value"]["stderr"]
            if case.expect == "load":
                assert rc == 0, err
            else:
                assert rc == 2 and err.startswith("error: ") and _one_sentence(err), err
            continue
        if case.expect == "load":
            assert out["outcome"] == "ok", f"{mode}: {out.get('message')}"
            continue
        assert out["outcome"] == "error", f"{mode} loaded {out.get('value')!r} instead of refusing"
        msg = out["message"]
        assert _one_sentence(msg), msg
        assert "ran out of memory" not in msg, msg  # refused from the header, never by the allocator
        if case.match:
            assert re.search(case.match, msg), f"{mode}: {msg!r} does not match {case.match!r}"


def test_the_batch_stayed_small(results):
    # Every lying header is refused before anything big is allocated (imports included).
    assert results["maxrss_kb"] is not None and results["maxrss_kb"] < 1_000_000
