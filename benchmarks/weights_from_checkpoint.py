"""Write the best model of a training checkpoint as a weights file with its JSON card.

For a run that was ended from outside (killed, machine lost) before ``python -m emcore
train`` wrote its weights: ``best.pt``/``last.pt`` in the ``--checkpoints`` folder hold the
model, the step, the training history and the configuration. The card records those and
the command of the run (given with ``--command``), and says that the run was stopped.

    .venv/bin/python benchmarks/weights_from_checkpoint.py runs/unet32/best.pt --out W.pt \\
        --command "python -m emcore train unet ..." --data "emcore.sim HRTEM phantoms ..."
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    import models
    from emcore.train.loop import CHECKPOINT_FORMAT
    from emcore.train.weights import _read_dict, save_weights

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--out", required=True)
    ap.add_argument("--command", required=True, help="the training command of the run")
    ap.add_argument("--data", required=True, help="what it was trained on (for the card)")
    ap.add_argument("--dose", type=float, nargs=2, default=None)
    ap.add_argument("--noise", default=None)
    args = ap.parse_args(argv)
    # Read as resume reads it: weights_only=True, format checked.
    ck = _read_dict(Path(args.checkpoint), CHECKPOINT_FORMAT, "training checkpoint")
    model = getattr(models, ck["model"]).from_config(ck["model_config"])
    model.load_state_dict(ck["state_dict"])
    cfg = ck["config"]
    best_psnr = max((h["val_psnr"] for h in ck["history"] if h.get("val_psnr") is not None), default=None)
    card = {
        "command": args.command, "model": ck["model"].lower(), "config": model.config(),
        "steps": int(ck["step"]), "best_step": int(ck["best_step"]), "status": "stopped",
        "message": f"Run ended from outside at step {ck['step']}; weights of step {ck['best_step']} "
                   f"(best validation loss {ck['best_val']:.4g}).",
        "dose_range": list(args.dose) if args.dose else None, "noise": args.noise, "seed": cfg["seed"],
        "batch": ck["batch_size"], "patch": ck["patch_size"], "lr": cfg["lr"],
        "validation_psnr_db": best_psnr, "device": cfg["device"], "seconds": round(float(ck["seconds"]), 1),
        "data": args.data, "input_normalisation": "divide by the image mean (emcore.train.simulated.normalise)",
    }
    out = save_weights(model, args.out, card)
    Path(str(out) + ".json").write_text(json.dumps(card, indent=2, default=float))
    print(json.dumps({k: card[k] for k in ("model", "steps", "best_step", "validation_psnr_db", "seconds")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
