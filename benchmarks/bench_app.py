"""How long the app takes to redraw when the energy slider moves on a 128×128×1024 cube.

Runs the real pages headlessly with Streamlit's AppTest (script execution and figure
building; the browser's drawing is not included) and prints the median over several slider
moves, on the Data page and on the Compare page with one PCA result. AppTest reruns the
whole script on every move (a browser reruns only the viewer fragment), so this is the
full-rerun time.

``--baseline REV`` also runs the Compare page as it was at git revision ``REV`` (the rest of
the app as in the working tree), in the same process, with the slider moves of the two
interleaved, so the before/after medians are measured side by side under the same load.

    .venv/bin/python benchmarks/bench_app.py [--moves 7] [--baseline HEAD]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "app.py")


def _timed(at: AppTest) -> float:
    t0 = time.perf_counter()
    at.run()
    return time.perf_counter() - t0


def _app_copy(rev: str, folder: Path) -> str:
    """app.py and pages/ of the working tree, with pages/compare.py as at ``rev``."""
    shutil.copy(ROOT / "app.py", folder / "app.py")
    (folder / "pages").mkdir()
    for p in (ROOT / "pages").glob("*.py"):
        shutil.copy(p, folder / "pages" / p.name)
    old = subprocess.run(["git", "show", f"{rev}:pages/compare.py"], cwd=ROOT, check=True, capture_output=True).stdout
    (folder / "pages" / "compare.py").write_bytes(old)
    return str(folder / "app.py")


def _compare_with_pca(app: str) -> AppTest:
    """The app at ``app`` with the EDS example, one PCA result, on the Compare page."""
    from emcore.jobs import manager

    at = AppTest.from_file(app, default_timeout=300)
    at.run()
    at.selectbox(key="example_name").set_value("eds").run()
    at.switch_page("pages/denoise.py").run()
    at.selectbox(key="method_choice").set_value("pca").run()
    next(b for b in at.button if b.label == "Run").click().run()
    while any(j.active for j in manager().jobs_for(at.session_state["owner_id"])):
        time.sleep(0.1)  # the method runs as a background job
    at.switch_page("pages/compare.py").run()
    assert not at.exception, [x.value for x in at.exception]
    return at


def _move(at: AppTest, energy: float) -> float:
    s = next(s for s in at.slider if s.key.startswith("cmp_energy_"))
    s.set_value(energy)
    return _timed(at)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--moves", type=int, default=7)
    ap.add_argument("--baseline", default=None, metavar="REV",
                    help="also time the Compare page of this git revision, interleaved with the current one")
    args = ap.parse_args()
    energies = [1.74, 6.4, 9.44, 0.52, 8.04, 2.05, 7.48, 0.28, 4.5][: args.moves]

    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.selectbox(key="example_name").set_value("eds").run()
    slider = next(s for s in at.slider if s.key.startswith("energy_"))
    data_times = []
    for e in energies:
        slider.set_value(e)
        data_times.append(_timed(at))
        slider = next(s for s in at.slider if s.key.startswith("energy_"))

    at = _compare_with_pca(APP)
    tmp = None
    base = None
    if args.baseline:
        tmp = Path(tempfile.mkdtemp(prefix="bench_app_"))
        base = _compare_with_pca(_app_copy(args.baseline, tmp))
    cmp_times, base_times = [], []
    try:
        for e in energies:
            cmp_times.append(_move(at, e))
            if base is not None:
                base_times.append(_move(base, e))
        assert not at.exception, [x.value for x in at.exception]
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    out = {"data_page_median_s": statistics.median(data_times), "compare_page_median_s": statistics.median(cmp_times),
           "moves": len(energies), "cube": "128x128x1024"}
    print(f"energy slider redraw, 128×128×1024 cube: Data page median {out['data_page_median_s']:.3f} s, "
          f"Compare page (input + PCA + ground truth + spectra + element maps) median {out['compare_page_median_s']:.3f} s "
          f"over {len(energies)} moves")
    if base is not None:
        out["baseline"] = args.baseline
        out["compare_page_baseline_median_s"] = statistics.median(base_times)
        print(f"{'Compare page':<28}{'median (s)':>12}{'all moves (s)':>60}")
        for name, ts in ((f"at {args.baseline}", base_times), ("working tree", cmp_times)):
            print(f"{name:<28}{statistics.median(ts):>12.3f}    {' '.join(f'{t:.3f}' for t in ts)}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
