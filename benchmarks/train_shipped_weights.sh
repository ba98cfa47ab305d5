#!/usr/bin/env bash
# Trains the weights shipped in emcore/weights. Each run writes the weights and a JSON card
# (command, steps, dose range, seed, validation PSNR). Check them with
# benchmarks/bench_supervised.py (the reference Pt/CeO2 images are never used for training).
#
# UNet: trained on the abTEM multislice Pt/CeO2 set (benchmarks/make_abtem_set.py, needs
#   .venv-physics; see benchmarks/README_abtem.md). At equal steps it generalised better to
#   the reference images than a UNet trained on the workbench's own phantoms (same command
#   without --source physics), so it is the one shipped.
# DnCNN: trained on the workbench's phantoms (simulation-based denoising, Mohan et al. 2022).
#
# The shipped files were trained on 2 shared CPU cores with wall-clock budgets (--max-seconds),
# one thread each (OMP_NUM_THREADS=1); on a CUDA GPU raise --steps and drop the time limits.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DEVICE=${DEVICE:-auto}
mkdir -p runs
[ -f runs/abtem_set.npz ] || .venv-physics/bin/python benchmarks/make_abtem_set.py --out runs/abtem_set.npz
$PY -m emcore train unet --source physics --steps "${UNET_STEPS:-3000}" --max-seconds "${MAX_SECONDS:-3600}" \
    --batch 4 --patch 128 --dose-min 0.3 --dose-max 20 --noise mixed --val-every 250 --seed 0 --device "$DEVICE" \
    --checkpoints runs/unet32_abtem --out runs/unet32_abtem.pt
cp runs/unet32_abtem.pt emcore/weights/unet32_abtem.pt
cp runs/unet32_abtem.pt.json emcore/weights/unet32_abtem.pt.json
# Second stage: continue from those weights (--finetune starts from the shipped file) with a
# fresh cosine schedule and another seed; on 2 quiet CPU cores, two threads, 45 minutes.
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} $PY -m emcore train unet --source physics --finetune --steps "${UNET_FT_STEPS:-10000}" \
    --max-seconds "${FT_SECONDS:-2700}" --batch 4 --patch 128 --dose-min 0.3 --dose-max 20 --noise mixed \
    --val-every 500 --seed 1 --device "$DEVICE" --checkpoints runs/unet32_abtem_ft --out runs/unet32_abtem_ft.pt
cp runs/unet32_abtem_ft.pt emcore/weights/unet32_abtem.pt
cp runs/unet32_abtem_ft.pt.json emcore/weights/unet32_abtem.pt.json
# Bias-free UNet for the filter view: starts from the UNet just shipped with its additive
# constants dropped, then two stages on the workbench's phantoms (see the script).
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} $PY benchmarks/train_bias_free_unet.py --device "$DEVICE" \
    --out emcore/weights/unet32_bf.pt
$PY -m emcore train dncnn --steps "${DNCNN_STEPS:-4000}" --max-seconds "${MAX_SECONDS:-3600}" --batch 8 --patch 64 \
    --dose-min 0.3 --dose-max 20 --noise mixed --val-every 250 --seed 0 --device "$DEVICE" \
    --checkpoints runs/dncnn --out emcore/weights/dncnn_sbd.pt
