"""Command-line interface: ``python -m emcore {info,simulate,methods,denoise,train,bench,batch} ...``.

Expected problems print one sentence to stderr and exit with status 2; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from emcore.args import parse_sets, seed
from emcore.errors import EmcoreError


class _ArgumentError(EmcoreError):
    """A malformed command line (what argparse would answer with a usage block)."""


class _Parser(argparse.ArgumentParser):
    """argparse answering a malformed command line with one sentence (``--help`` still prints the usage)."""

    def error(self, message: str):
        text = " ".join(str(message).split()).rstrip(".")
        text = text.removeprefix("argument ")  # "argument --seed: ..." -> "--seed: ..."
        raise _ArgumentError(f"{text[:1].upper()}{text[1:]}; see '{self.prog} --help' for the options.")


def _check_writable(out: str, option: str = "--out") -> None:
    """Refuse, before any work, an output file that could not be written at the end."""
    path = Path(out)
    if path.is_dir() or out.endswith(("/", os.sep)):
        raise EmcoreError(f"{option} {out} names a folder; give a file name in it, such as {path / 'weights.pt'}.")
    if Path(out + ".json").is_dir():
        raise EmcoreError(f"Cannot write the card {out}.json beside {option} {out}: it is a folder; "
                          "choose another file name.")
    existing = path.parent
    while not existing.exists() and existing != existing.parent:  # missing folders are created
        existing = existing.parent
    if not existing.is_dir():
        raise EmcoreError(f"Cannot write {option} {out}: {existing} is a file, not a folder; choose another place.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise EmcoreError(f"Cannot write {option} {out}: you have no permission to write in {existing}; "
                          "choose a folder of your own.")


def _cmd_info(args) -> int:
    from emcore import io

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
    from emcore import io, sim

    kwargs = {"seed": args.seed, "dose": args.dose}
    if args.size is not None:
        kwargs["size"] = args.size
    ds = sim.example(args.example, **kwargs)
    out = Path(args.out)
    written = io.save_with_companions(ds, out)
    print(json.dumps({"example": args.example, "kind": ds.kind, "shape": list(ds.data.shape),
                      "seed": args.seed, "dose": ds.metadata.get("dose", ds.metadata.get("counts_per_pixel")),
                      "files": {k: str(v) for k, v in written.items()}}))
    return 0


def _cmd_methods(args) -> int:
    from emcore.methods.registry import methods

    ms = methods()
    if args.json:
        print(json.dumps([m.to_dict() for m in ms], default=_jsonable))
        return 0
    for m in ms:
        print(f"{m.name:<10} {m.label} [{m.kind}; {', '.join(m.accepts)}]")
        print(f"{'':<10} {m.description}")
        for p in m.params:
            rng = f" [{p.min:g} .. {p.max:g}]" if p.min is not None and p.max is not None else ""
            ch = f" {{{', '.join(map(str, p.choices))}}}" if p.choices else ""
            default = "auto" if p.auto else "preset" if p.preset else "none" if p.default is None else p.default
            group = f" ({p.group})" if p.group else ""
            print(f"{'':<12}--set {p.name}=<{p.type}> (default {default}){rng}{ch}{group}: {p.help}")
    return 0


def _cmd_denoise(args) -> int:
    from emcore import io
    from emcore.methods.registry import denoise, get_method

    method = get_method(args.method)  # unknown method: exit 2 before reading anything
    params = parse_sets(args.set)
    for k in params:
        method.param(k)
    out = Path(args.out)
    if out.suffix.lower() not in io.SAVE_EXTENSIONS:
        raise EmcoreError(f"Cannot write '{out.name}': the output must end in {', '.join(io.SAVE_EXTENSIONS)}.")
    ds = io.load(args.input, kind=args.kind, haadf=args.haadf)
    last = [0.0]

    def progress(p):
        # One line per ~2 s on stderr, so scripts can still parse stdout.
        if p.elapsed - last[0] >= 2.0 or p.step == p.total:
            last[0] = p.elapsed
            print(f"  {p.message or f'{p.step}/{p.total}'}", file=sys.stderr)

    res = denoise(ds, method.name, seed=args.seed, device=args.device, progress=progress, **params)
    from dataclasses import replace

    io.save(replace(ds, data=res.data, ground_truth=None, name=f"{ds.name} — {method.name}"), out)
    print(json.dumps({"method": res.method, "params": res.params, "seconds": round(res.seconds, 4),
                      "device": res.device, "output": str(out), **res.summary}, default=_jsonable))
    return 0


def _cmd_recommend(args) -> int:
    """Rank the methods that fit a file by the no-reference score (Auto), without writing results."""
    from emcore import io
    from emcore.methods.auto import rank

    ds = io.load(args.input, kind=args.kind, haadf=args.haadf)
    out = rank(ds, args.budget, seed=args.seed)
    rows = out["ranking"]
    if args.json:
        print(json.dumps({"criterion": out["criterion"], "why": out["why"], "ranking": rows,
                          "skipped": out["skipped"], "seconds": round(out["seconds"], 2)}, default=_jsonable))
        return 0
    print(f"{ds.name}: {out['why']}")
    truth = any("psnr" in r for r in rows)
    print(f"{'rank':<5}{'method':<12}{'score':>12}{'± se':>11}  {'seconds':>8}" + ("  true PSNR" if truth else ""))
    for i, r in enumerate(rows, 1):
        tie = "  (tie with the best)" if r["tie"] else ""
        print(f"{i:<5}{r['method']:<12}{r['score']:>12.5g}{r['se']:>11.2g}  {r['seconds']:>8.1f}"
              + (f"  {r['psnr']:.2f} dB" if "psnr" in r else "") + tie)
    for name, reason in out["skipped"].items():
        print(f"not run: {name} — {reason}")
    print(f"Lower score is better (an estimate of the squared error, up to a constant). {out['seconds']:.0f} s in all.")
    return 0


def _trainable():
    """The registered methods ``train`` writes weights files for, and their training parameters."""
    from emcore.methods.registry import methods

    nets = [m for m in methods() if m.kind == "supervised"]
    params = {p.name: p for m in nets for p in m.params if p.group == "training"}
    return [m.name for m in nets], list(params.values())


# Where the ``train`` command's default differs from the Denoise page's: a weights file for
# later use is worth a longer run than "train now, then denoise".
_TRAIN_DEFAULTS = {"steps": 2000}


def _add_training_options(t: argparse.ArgumentParser) -> None:
    """One option per training parameter of the networks (``--set`` names, plus their ``flags``)."""
    for p in _trainable()[1]:
        names = list(dict.fromkeys([f"--{p.name.replace('_', '-')}", *p.flags]))
        text = p.help.replace("%", "%%")
        if p.type == "bool":
            t.add_argument(*names, dest=p.name, action="store_true", help=text)
            continue
        kind = {"int": int, "float": float}.get(p.type, str)
        t.add_argument(*names, dest=p.name, type=kind, default=_TRAIN_DEFAULTS.get(p.name, p.default),
                       choices=list(p.choices) or None, help=text)


def _cmd_train(args) -> int:
    _check_writable(args.out)  # now, not after hours of training
    import shlex

    from emcore.methods.registry import get_method
    from emcore.methods.supervised import TrainingPlan, train_network

    method = get_method(args.model)
    values = {p.name: p.coerce(getattr(args, p.name), method.name) for p in _trainable()[1]}
    dataset = clean = None
    if values["training_data"] in ("frames", "pairs"):
        if not args.data:
            raise EmcoreError(f"--source {values['training_data']} trains on your data: give it with --data FILE.")
        from emcore import io

        dataset = io.load(args.data, kind=args.kind)
        if values["clean"]:
            clean = io.load(values["clean"], kind=dataset.kind).data
    more = {} if args.max_seconds is None else {"max_seconds": args.max_seconds}
    if args.start_from:
        values["finetune"] = True
    plan = TrainingPlan.from_params(method.name, values, seed=args.seed, device=args.device, scales=args.scales,
                                    base=args.base, depth=args.depth, width=args.width, bias_free=args.bias_free,
                                    freeze_norm=args.freeze_norm, val_every=args.val_every,
                                    val_patches=args.val_patches, prior=args.prior, field_size=args.field_size,
                                    **more)
    last = [0.0]

    def progress(p):
        if p.elapsed - last[0] >= 5.0 or p.step == p.total:
            last[0] = p.elapsed
            val = p.metrics.get("val_psnr")
            print(f"  step {p.step}/{p.total}  loss {p.losses.get('train', float('nan')):.4g}"
                  + (f"  val PSNR {val:.2f} dB" if val is not None else ""), file=sys.stderr, flush=True)

    command = "python -m emcore " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if args.record_argv else None
    # SIGTERM (or Ctrl-C) ends the run cleanly at the next step: the best weights so far are
    # still written, with the card saying the run was stopped.
    import signal

    stop = []

    def ask_stop(signum, frame):
        if stop:
            raise KeyboardInterrupt
        stop.append(signum)
        print("  stopping at the next step (again to abort)…", file=sys.stderr, flush=True)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, ask_stop)
    trained = train_network(plan, dataset, clean=clean, out=args.out, progress=progress, should_stop=lambda: bool(stop),
                            checkpoint_dir=args.checkpoints, resume=args.resume, command=command,
                            start_from=args.start_from)
    card = trained.card
    print(json.dumps({"weights": str(trained.path), **{k: card[k] for k in ("model", "steps", "status", "validation_psnr_db", "seconds")}},
                     default=_jsonable))
    return 0 if trained.result.status != "diverged" else 2


def _cmd_bench(args) -> int:
    from emcore.evaluate.bench import run_bench

    run_bench(quick=args.quick, methods=args.methods, out=sys.stdout)
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


def build_parser(training: bool = True) -> argparse.ArgumentParser:
    """The command line's parser; ``training=False`` leaves out the options of ``train``, which
    come from the method registry (importing it loads every method and torch: seconds)."""
    p = _Parser(prog="python -m emcore", description="EM denoising workbench engine.")
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
    s.add_argument("--seed", type=seed, default=0, help="0 to 2⁶³ − 1")
    s.add_argument("--dose", type=float, default=None, help="e-/pixel (hrem, movie) or counts/pixel (eds)")
    s.add_argument("--size", type=int, default=None, help="image side in pixels")
    s.set_defaults(func=_cmd_simulate)

    m = sub.add_parser("methods", help="list the denoising methods and their parameters")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=_cmd_methods)

    d = sub.add_parser("denoise", help="denoise a file with a registered method")
    d.add_argument("input", metavar="IN")
    d.add_argument("--method", required=True)
    d.add_argument("--out", required=True, help="output file: .hspy, .tif/.tiff or .npy")
    d.add_argument("--haadf", help="a separate HAADF image for a spectrum image")
    d.add_argument("--kind", choices=["image", "stack", "cube"])
    d.add_argument("--set", action="append", metavar="NAME=VALUE", help="a method parameter (repeatable); 'auto' to estimate")
    d.add_argument("--seed", type=seed, default=0, help="0 to 2⁶³ − 1")
    d.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    d.set_defaults(func=_cmd_denoise)

    r = sub.add_parser("recommend", help="rank the methods that fit a file by a no-reference score, within a time "
                                         "budget (the Auto method, without writing results)")
    r.add_argument("input", metavar="FILE")
    r.add_argument("--budget", type=float, default=60.0, help="seconds for running and scoring the methods")
    r.add_argument("--haadf", help="a separate HAADF image for a spectrum image")
    r.add_argument("--kind", choices=["image", "stack", "cube"])
    r.add_argument("--seed", type=seed, default=0, help="0 to 2⁶³ − 1")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_cmd_recommend)

    t = sub.add_parser("train", help="train a supervised network: on simulated HRTEM pairs (simulation-based "
                                     "denoising), Noise2Noise from a stack, or noisy/clean pairs",
                       description="The training options are the training parameters of the networks (python -m "
                                   "emcore methods lists them; denoise --set weights_source=train takes the same).")
    t.add_argument("model", choices=_trainable()[0] if training else None)
    if training:
        _add_training_options(t)
    t.add_argument("--data", help="your noisy image or stack (for --source frames/pairs)")
    t.add_argument("--kind", choices=["image", "stack"], help="how to read --data")
    t.add_argument("--out", required=True, help="weights file to write (.pt); a JSON card is written beside it")
    t.add_argument("--max-seconds", type=float, default=None, help="time limit in seconds (instead of --max-minutes)")
    t.add_argument("--scales", type=int, default=4)
    t.add_argument("--base", type=int, default=32)
    t.add_argument("--depth", type=int, default=17)
    t.add_argument("--width", type=int, default=64)
    t.add_argument("--bias-free", action="store_true", help="no additive constants: the network is exactly "
                   "f(x) = J(x) x, so its adaptive filter (Jacobian view) is the whole story [Mohan et al. 2020]; "
                   "with --finetune it starts from the shipped biased weights, additive constants dropped")
    t.add_argument("--freeze-norm", action="store_true", help="bias-free only: divide by the running, not the "
                   "batch, standard deviation while training (steadier with small batches)")
    t.add_argument("--start-from", metavar="WEIGHTS", help="fine-tune from this weights file instead of the shipped "
                   "one (implies --finetune; the card records it)")
    t.add_argument("--prior", choices=["wiener"], default=None, help="give the network a prior channel: the "
                   "self-calibrated Wiener filter of the whole frame, which the network corrects (--source physics)")
    t.add_argument("--field-size", type=int, default=512, help="side of the whole fields the prior is computed on")
    t.add_argument("--val-every", type=int, default=100)
    t.add_argument("--val-patches", type=int, default=8)
    t.add_argument("--seed", type=seed, default=0, help="0 to 2⁶³ − 1")
    t.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    t.add_argument("--checkpoints", help="folder for best/last checkpoints (resume with --resume)")
    t.add_argument("--resume", action="store_true")
    t.add_argument("--no-record-argv", dest="record_argv", action="store_false", help=argparse.SUPPRESS)
    t.set_defaults(func=_cmd_train)

    b = sub.add_parser("bench", help="PSNR/SSIM/seconds of every method on simulated and reference cases")
    b.add_argument("--quick", action="store_true", help="small cases only (about a minute)")
    b.add_argument("--methods", nargs="*", help="only these methods")
    b.set_defaults(func=_cmd_bench)

    from emcore.batch.command import add_parser as add_batch_parser

    add_batch_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(training=bool(argv) and argv[0] == "train")
    try:
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except EmcoreError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: not enough memory for this data; bin it or crop the energy range first.", file=sys.stderr)
        return 2
