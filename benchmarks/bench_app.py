"""How long the app takes to redraw when the energy slider moves on a 128×128×1024 cube.

Runs the real pages headlessly with Streamlit's AppTest (script execution and figure
building; the browser's drawing is not included) and prints the median over several slider
moves, on the Data page and on the Compare page with one PCA result.

    .venv/bin/python benchmarks/bench_app.py [--moves 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def _timed(at: AppTest) -> float:
    t0 = time.perf_counter()
    at.run()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--moves", type=int, default=7)
    args = ap.parse_args()
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    at.selectbox(key="example_name").set_value("eds").run()
    energies = [1.74, 6.4, 9.44, 0.52, 8.04, 2.05, 7.48, 0.28, 4.5][: args.moves]
    slider = next(s for s in at.slider if s.key.startswith("energy_"))
    data_times = []
    for e in energies:
        slider.set_value(e)
        data_times.append(_timed(at))
        slider = next(s for s in at.slider if s.key.startswith("energy_"))
    at.switch_page("pages/denoise.py").run()
    at.selectbox(key="method_choice").set_value("pca").run()
    next(b for b in at.button if b.label == "Run").click().run()
    from emcore.jobs import manager

    while any(j.active for j in manager().jobs_for(at.session_state["owner_id"])):
        time.sleep(0.1)  # the method runs as a background job
    at.switch_page("pages/compare.py").run()
    cmp_times = []
    for e in energies:
        s = next(s for s in at.slider if s.key.startswith("cmp_energy_"))
        s.set_value(e)
        cmp_times.append(_timed(at))
    assert not at.exception, [x.value for x in at.exception]
    out = {"data_page_median_s": statistics.median(data_times), "compare_page_median_s": statistics.median(cmp_times),
           "moves": len(energies), "cube": "128x128x1024"}
    print(f"energy slider redraw, 128×128×1024 cube: Data page median {out['data_page_median_s']:.3f} s, "
          f"Compare page (input + PCA + ground truth + spectra + element maps) median {out['compare_page_median_s']:.3f} s "
          f"over {len(energies)} moves")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
