"""Command-line interface: ``python -m emcore {info,simulate} ...``.

Expected problems print one sentence to stderr and exit with status 2; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import EmcoreError


def _cmd_info(args) -> int:
    from . import io

    ds = io.load(args.path, kind=args.kind, haadf=args.haadf, signal=args.signal)
    info = ds.summary()
    info["path"] = str(args.path)
    if "signals" in ds.metadata:
        info["signals"] = ds.metadata["signals"]
        info["signal_index"] = ds.metadata.get("signal_index")
    if args.json:
        print(json.dumps(info, default=_jsonable))
        return 0
    cal = ds.calibration
    lines = [
        f"{ds.name}",
        f"  kind          {ds.kind}",
        f"  shape         {' x '.join(map(str, ds.data.shape))}  (float32; values {info['value_range'][0]:.4g} .. {info['value_range'][1]:.4g})",
        f"  pixel size    {cal.pixel_size:.6g} {cal.pixel_unit}",
    ]
    if ds.kind == "cube":
        e0, e1 = info["energy_range"]
        lines.append(f"  energy        {e0:.4g} .. {e1:.4g} {cal.energy_unit}, {cal.energy_scale:.4g} {cal.energy_unit}/channel")
        lines.append(f"  HAADF         {'x'.join(map(str, ds.haadf.shape)) if ds.haadf is not None else 'none'}")
    label = "counts/pixel" if ds.is_counts else "mean/pixel"
    lines.append(f"  {label:<13} {info['counts_per_pixel']:.4g}{'  (raw counts)' if ds.is_counts else ''}")
    for k, v in info.get("acquisition", {}).items():
        lines.append(f"  {k:<13} {v}")
    for s in ds.metadata.get("signals", []) or []:
        mark = "*" if s.get("index") == ds.metadata.get("signal_index") else " "
        lines.append(f"  {mark} signal {s['index']}: {s.get('title') or 'untitled'} {tuple(s['shape'])} {s.get('kind') or '(not usable)'}")
    print("\n".join(lines))
    return 0


def _cmd_simulate(args) -> int:
    from . import io, simulate

    kwargs = {"seed": args.seed, "dose": args.dose}
    if args.size is not None:
        kwargs["size"] = args.size
    ds = simulate.example(args.example, **kwargs)
    out = Path(args.out)
    written = io.save_with_companions(ds, out)
    print(json.dumps({"example": args.example, "kind": ds.kind, "shape": list(ds.data.shape),
                      "seed": args.seed, "dose": ds.metadata.get("dose", ds.metadata.get("counts_per_pixel")),
                      "files": {k: str(v) for k, v in written.items()}}))
    return 0


def _jsonable(o):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(o)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m emcore", description="EM denoising workbench engine.")
    sub = p.add_subparsers(dest="command", required=True)

    i = sub.add_parser("info", help="describe an EM file: kind, shape, calibration, counts")
    i.add_argument("path")
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.add_argument("--kind", choices=["image", "stack", "cube"], help="how to read an ambiguous 3-D array")
    i.add_argument("--haadf", help="a separate HAADF image to attach to a spectrum image")
    i.add_argument("--signal", type=int, help="index of the signal to use in a multi-signal file")
    i.set_defaults(func=_cmd_info)

    s = sub.add_parser(
        "simulate",
        help="write a built-in example and its ground truth",
        description="Writes the noisy data to OUT, the ground truth to <stem>_truth<ext> and, for "
        "'eds', the HAADF image to <stem>_haadf<ext>, in the format of OUT's extension.",
    )
    s.add_argument("example", choices=["hrem", "eds", "movie"])
    s.add_argument("--out", required=True, help="output file: .hspy, .tif/.tiff or .npy")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--dose", type=float, default=None, help="e-/pixel (hrem, movie) or counts/pixel (eds)")
    s.add_argument("--size", type=int, default=None, help="image side in pixels")
    s.set_defaults(func=_cmd_simulate)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except EmcoreError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: not enough memory for this data; bin it or crop the energy range first.", file=sys.stderr)
        return 2
