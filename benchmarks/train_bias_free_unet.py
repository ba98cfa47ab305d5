"""Train the shipped bias-free UNet (``emcore/weights/unet32_bf.pt``), the network of the filter view.

A bias-free network has no additive constant anywhere, so its output is exactly the adaptive
filter applied to the input, ``f(x) = J(x) x`` (Mohan et al., ICLR 2020): what the
"what is the network looking at?" view shows is then the whole story, which is how Mohan et
al. (IEEE TCI 2022) studied their TEM denoisers. The biased UNet shipped for denoising sets
part of its output with its own constants, which no filter shows.

Two stages, both on the workbench's own HRTEM phantoms (``emcore.train.simulated.SimulatedPairs``,
fresh Poisson or Poisson–Gaussian noise per patch), batches of 4 patches of 128², Adam with
a cosine schedule, seed 2:

1. Start from the biased one-channel UNet (``--start``, the recipe passes ``runs/unet32_abtem_ft.pt``) with every additive
   constant dropped (convolution weights, normalisation scales and running variances kept),
   normalisations frozen (running statistics in training too, see
   ``models.dncnn.freeze_bias_free_norms``); 0.3–20 e⁻/px, lr 3e-4, 100 warm-up steps.
2. Continue at low dose, 0.2–3 e⁻/px, lr 2e-4: where averaging widely pays most.

The shipped file came from ``--stage1-seconds 2400 --stage2-seconds 2700`` on 2 CPU cores
(``OMP_NUM_THREADS=2``): 6786 + 8743 steps. On a GPU, give step counts instead
(``--stage1-steps``, ``--stage2-steps``) and no time limits.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/train_bias_free_unet.py --out runs/unet32_bf.pt
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def stage(net, dose_range, lr, steps, seconds, device, checkpoints):
    from emcore.train.config import TrainConfig
    from emcore.train.loop import train
    from emcore.train.losses import MSELoss
    from emcore.train.simulated import SimulatedPairs

    source = SimulatedPairs(dose_range=dose_range, noise="mixed", n_val=8)
    config = TrainConfig(steps=steps, max_seconds=seconds, batch_size=4, patch_size=128, lr=lr, schedule="cosine",
                         warmup_steps=100, val_every=250, seed=2, device=device, min_patch=16)
    result = train(net, source, MSELoss(), config, checkpoint_dir=checkpoints)
    psnrs = [(h["step"], h["val_psnr"]) for h in result.history if h.get("val_psnr") is not None]
    print(f"  {result.message}", file=sys.stderr)
    return {"dose_range": list(dose_range), "lr": lr, "steps": result.steps_done, "status": result.status,
            "seconds": round(result.seconds, 1), "device": result.device,
            "validation_psnr_db": max(p for _, p in psnrs) if psnrs else None}


def main(argv=None) -> int:
    import models
    from emcore.methods.supervised import load_network, started_from_card
    from emcore.train.weights import save_weights
    from models.dncnn import freeze_bias_free_norms, load_without_constants

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--stage1-steps", type=int, default=20000)
    ap.add_argument("--stage1-seconds", type=float, default=2400)
    ap.add_argument("--stage2-steps", type=int, default=20000)
    ap.add_argument("--stage2-seconds", type=float, default=2700)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--checkpoints", default="runs/unet32_bf", help="folder for the two stages' checkpoints")
    ap.add_argument("--start", help="the biased one-channel UNet to start from (default: the shipped UNet, "
                                    "which must then have no prior channel)")
    args = ap.parse_args(argv)

    biased = load_network("unet", args.start)
    net = models.UNet(scales=biased.scales, base=biased.base, bias=False)
    load_without_constants(net, biased)
    freeze_bias_free_norms(net)
    stages = []
    for i, (dose, lr, steps, seconds) in enumerate((((0.3, 20.0), 3e-4, args.stage1_steps, args.stage1_seconds),
                                                    ((0.2, 3.0), 2e-4, args.stage2_steps, args.stage2_seconds)), 1):
        print(f"Stage {i}: {dose[0]:g}–{dose[1]:g} e⁻/px, lr {lr:g}", file=sys.stderr)
        stages.append(stage(net, dose, lr, steps, seconds, args.device, f"{args.checkpoints}/stage{i}"))
    card = {
        "command": "python benchmarks/train_bias_free_unet.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": "unet", "config": net.config(), "stages": stages,
        "steps": sum(s["steps"] for s in stages),
        "validation_psnr_db": stages[-1]["validation_psnr_db"],
        "data": "emcore.sim HRTEM phantoms, mixed Poisson / Poisson–Gaussian noise "
                "(stage 1: 0.3–20 e⁻/px, stage 2: 0.2–3 e⁻/px)",
        "dose_range": [0.2, 20.0], "noise": "mixed", "seed": 2, "batch": 4, "patch": 128,
        "input_normalisation": "divide by the image mean (emcore.train.simulated.normalise)",
        "started_from": started_from_card("unet", converted=True, weights=args.start),
    }
    out = Path(args.out)
    save_weights(net.cpu(), out, card)
    Path(str(out) + ".json").write_text(json.dumps(card, indent=2, default=float))
    print(f"Wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
