"""Training throughput of the supervised networks (issue: UNet-32, 4 scales, batch 4×128²).

Median seconds per Adam step (forward + backward + update) after warm-up, on the CPU with
the given thread count and, when CUDA is available, on the GPU in float32 and bf16
autocast, with the peak GPU memory. Prints a table and a JSON line.

    .venv/bin/python benchmarks/bench_train.py [--threads 2] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import models  # noqa: E402


def step_times(model, device, steps, batch=4, patch=128, amp=False):
    model = model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.randn(batch, 1, patch, patch, device=device)
    y = torch.randn(batch, 1, patch, patch, device=device)
    times = []
    for i in range(steps + 3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
            loss = torch.nn.functional.mse_loss(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    cases = [("UNet(scales=4, base=32)", lambda: models.UNet(scales=4, base=32)),
             ("DnCNN(depth=17, width=64)", lambda: models.DnCNN())]
    devices = [("cpu", False)] + ([("cuda", False), ("cuda", True)] if torch.cuda.is_available() else [])
    for name, make in cases:
        for dev, amp in devices:
            device = torch.device(dev)
            if dev == "cuda":
                torch.cuda.reset_peak_memory_stats()
            s = step_times(make(), device, args.steps, amp=amp)
            peak = torch.cuda.max_memory_allocated() / 2**20 if dev == "cuda" else None
            rows.append({"model": name, "device": dev, "bf16": amp, "s_per_step": s, "steps_per_s": 1 / s,
                         "peak_mib": peak, "threads": args.threads if dev == "cpu" else None})
            print(f"{name:<28} {dev:<5} {'bf16' if amp else 'fp32':<5} {1 / s:8.2f} steps/s"
                  + (f"  peak {peak:.0f} MiB" if peak is not None else f"  ({args.threads} threads)"), flush=True)
    print(json.dumps({"bench": "train", "batch": "4x1x128x128", "rows": rows}))


if __name__ == "__main__":
    main()
