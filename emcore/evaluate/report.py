"""A self-contained HTML report of a comparison: opens offline, no scripts, figures inlined.

Figures are PNGs drawn with Matplotlib (Agg) and embedded as base64 data URIs, so the file can
be mailed or archived with nothing else beside it.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io as _io
from typing import Any, Iterable, Mapping

import numpy as np

from emcore.data.dataset import Dataset
from emcore.data.display import contrast_limits, energy_window_map, summed_spectrum


def _png(fig) -> str:
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _view(ds: Dataset, arr: np.ndarray, frame: int, channel: int | None, width: int) -> np.ndarray:
    if ds.kind == "image":
        return arr
    if ds.kind == "stack":
        return arr[frame]
    return energy_window_map(arr, channel if channel is not None else arr.shape[2] // 2, width)


def build_report(
    dataset: Dataset,
    runs: Iterable[Mapping[str, Any]],
    *,
    frame: int = 0,
    channel: int | None = None,
    window: int = 1,
    profiles: Mapping[str, Any] | None = None,
    notes: str = "",
) -> str:
    """Return the HTML text of a report.

    Parameters
    ----------
    dataset : Dataset
        The input (its summary heads the report).
    runs : iterable of mappings
        Each with ``label``, ``method``, ``params``, ``seconds``, ``device``, ``data`` and
        optionally ``metrics`` (a flat mapping of name to number).
    frame, channel, window : int
        Which frame (stacks) or energy window (cubes) the image panels show.
    profiles : mapping of label to :class:`emcore.evaluate.profiles.Profile`, optional
        Intensity profiles to plot together.
    notes : str
        Free text shown under the title.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    runs = list(runs)
    esc = html.escape
    s = dataset.summary()
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Denoising report — {esc(dataset.name)}</title>",
        "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}"
        "th{background:#f3f3f3}img{max-width:100%}.muted{color:#666;font-size:90%}</style></head><body>",
        f"<h1>Denoising report — {esc(dataset.name)}</h1>",
        f"<p class='muted'>Generated {esc(_dt.datetime.now().isoformat(timespec='seconds'))} by emcore.</p>",
    ]
    if notes:
        parts.append(f"<p>{esc(notes)}</p>")
    rows = [("Kind", s["kind"]), ("Shape", " × ".join(map(str, s["shape"]))),
            ("Pixel size", f"{s['calibration']['pixel_size']:.4g} {s['calibration']['pixel_unit']}"),
            ("Counts / pixel" if s["is_counts"] else "Mean / pixel", f"{s['counts_per_pixel']:.4g}"),
            ("Noise model", dataset.noise.describe() if dataset.noise is not None else "unknown"),
            ("Ground truth", "yes" if dataset.ground_truth is not None else "no")]
    if dataset.kind == "cube":
        e0, e1 = s["energy_range"]
        rows.append(("Energy", f"{e0:.4g}–{e1:.4g} {dataset.calibration.energy_unit}"))
    parts.append("<h2>Dataset</h2><table>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in rows) + "</table>")

    metric_names = sorted({k for r in runs for k in (r.get("metrics") or {})})
    parts.append("<h2>Runs</h2><table><tr><th>Result</th><th>Method</th><th>Parameters</th><th>Seconds</th><th>Device</th>"
                 + "".join(f"<th>{esc(m)}</th>" for m in metric_names) + "</tr>")
    for r in runs:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in (r.get("params") or {}).items())
        mets = r.get("metrics") or {}
        cells = "".join(f"<td>{mets[m]:.4g}</td>" if isinstance(mets.get(m), (int, float)) else "<td>–</td>" for m in metric_names)
        parts.append(f"<tr><td>{esc(r['label'])}</td><td>{esc(r['method'])}</td><td>{esc(params)}</td>"
                     f"<td>{r['seconds']:.3g}</td><td>{esc(r['device'])}</td>{cells}</tr>")
    parts.append("</table>")

    panels = [("Input", dataset.data)] + [(r["label"], r["data"]) for r in runs]
    if dataset.ground_truth is not None:
        panels.append(("Ground truth", dataset.ground_truth))
    views = [(t, _view(dataset, a, frame, channel, window)) for t, a in panels]
    lo, hi = contrast_limits(views[-1][1] if dataset.ground_truth is not None else views[0][1])
    n = len(views)
    cols = min(n, 4)
    rows_n = int(np.ceil(n / cols))
    fig, axes = plt.subplots(rows_n, cols, figsize=(3.4 * cols, 3.4 * rows_n), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (t, v) in zip(axes.ravel(), views):
        ax.imshow(v, cmap="gray" if dataset.kind != "cube" else "viridis", vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(t, fontsize=9)
    where = {"image": "", "stack": f" (frame {frame})",
             "cube": f" (energy window at channel {channel}, {window} channel(s))"}[dataset.kind]
    parts.append(f"<h2>Images{esc(where)}</h2><img src='{_png(fig)}' alt='panels'>")

    if profiles:
        fig, ax = plt.subplots(figsize=(8, 3))
        for label, prof in profiles.items():
            ax.plot(prof.distance, prof.values, label=label)
        ax.set_xlabel("distance along the line (px)")
        ax.set_ylabel("intensity")
        ax.legend(fontsize=8)
        parts.append(f"<h2>Intensity profile</h2><img src='{_png(fig)}' alt='profile'>")

    if dataset.kind == "cube":
        e = dataset.energy_axis()
        fig, ax = plt.subplots(figsize=(8, 3))
        for t, a in panels:
            ax.plot(e, summed_spectrum(a), label=t, lw=0.8)
        ax.set_yscale("log")
        ax.set_xlabel(f"energy ({dataset.calibration.energy_unit})")
        ax.set_ylabel("counts (sum over pixels)")
        ax.legend(fontsize=8)
        parts.append(f"<h2>Summed spectra</h2><img src='{_png(fig)}' alt='spectra'>")

    parts.append("<p class='muted'>PSNR and SSIM use the data range of the ground truth (max − min).</p></body></html>")
    return "\n".join(parts)
