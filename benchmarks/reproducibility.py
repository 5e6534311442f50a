"""Which runs give bit-identical weights: the same seed on the same CPU, another thread count, another CPU's kernels.

    python -m benchmarks.reproducibility [--task detection|segmentation] [--steps 30] [--num-train 128]
                                         [--num-workers 1]

Trains a demo model (``configs/ssdlite_shapes_demo.yaml``: SSDLite, or ``configs/deeplabv3lite_shapes_demo.yaml``:
DeepLabv3-lite; MobileNetV2 0.5, AdamW, channels_last)
for ``--steps`` optimizer steps, each run a fresh ``python train_task.py fit`` process with ``seed_everything: 0``
on the same generated COCO-format data, under these settings:

  same seed, again      the reference settings run a second time: must be bit-identical on one machine;
  1 thread              ``OMP_NUM_THREADS=1``: oneDNN and MKL split reductions differently across threads;
  AVX2 kernels          ``ONEDNN_MAX_CPU_ISA=AVX2`` + ``MKL_ENABLE_INSTRUCTIONS=AVX2``: the kernels a CPU without
                        AVX-512 / AMX runs (another machine), on this CPU.

It prints, per run, the largest absolute weight difference from the reference run and the last training loss.
A run that differs by one rounding at the first step diverges further with every step, which is why a 10-epoch
demo lands on other numbers on another CPU model (or with another thread count) and on the same numbers when
run again on the same machine.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"detection": ROOT / "configs" / "ssdlite_shapes_demo.yaml",
           "segmentation": ROOT / "configs" / "deeplabv3lite_shapes_demo.yaml"}
SETTINGS = {
    "reference": {},
    "same seed, again": {},
    "1 thread": {"OMP_NUM_THREADS": "1"},
    "AVX2 kernels": {"ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}


def train(config: Path, run_dir: Path, data_root: Path, steps: int, num_train: int, workers: int,
          env: dict[str, str]) -> tuple[dict, float]:
    """One ``train_task.py fit`` process in ``run_dir``; returns the final weights and the last logged train loss."""
    run_dir.mkdir(parents=True)
    command = [sys.executable, str(ROOT / "train_task.py"), "fit", "--config", str(config),
               "--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "0",
               "--trainer.log_every_n_steps", "1",
               "--data.init_args.root", str(data_root), "--data.init_args.num_train", str(num_train),
               "--data.init_args.num_val", "16", "--data.init_args.num_workers", str(workers)]
    result = subprocess.run(command, cwd=run_dir, env={**os.environ, **env}, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"training run in {run_dir} failed:\n{result.stderr[-3000:]}")
    checkpoint = next(run_dir.rglob("last.ckpt"))
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    rows = list(csv.DictReader(next(run_dir.rglob("metrics.csv")).open()))
    key = "train/loss_step" if "train/loss_step" in rows[0] else "train/loss"
    losses = [float(r[key]) for r in rows if r.get(key)]
    return state, losses[-1] if losses else float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(CONFIGS), default="detection", help="which demo model trains")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--num-train", type=int, default=128)
    parser.add_argument("--num-workers", type=int, default=1, help="loader processes (the demo uses 1)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results = {name: train(CONFIGS[args.task], tmp / f"run{i}", tmp / "data", args.steps, args.num_train,
                               args.num_workers, env)
                   for i, (name, env) in enumerate(SETTINGS.items())}
    reference, _ = results["reference"]
    model = "SSDLite" if args.task == "detection" else "DeepLabv3-lite"
    print(f"\n{model} demo model, {args.steps} AdamW steps from seed 0, torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, {args.num_workers} loader worker(s)")
    print(f"{'run':<20}{'bit-identical':>15}{'max |w - w_ref|':>18}{'last train loss':>17}")
    for name, (state, loss) in results.items():
        diff = max((state[k].double() - reference[k].double()).abs().max().item()
                   for k in reference if reference[k].is_floating_point())
        same = all(torch.equal(state[k], reference[k]) for k in reference)
        print(f"{name:<20}{str(same):>15}{diff:>18.3g}{loss:>17.5f}")


if __name__ == "__main__":
    main()
