#!/usr/bin/env bash
# GPU proof in one run (about 8 minutes on one H200): AMP, channels_last, DDP + SyncBatchNorm through the entry
# points a user runs, then the training-throughput table. Writes its logs to ${OUT:-runs/gpu_check}.
#   bash benchmarks/gpu_check.sh
set -u
STEPS=${STEPS:-1 2 3 4}   # e.g. STEPS="1 4" to rerun some
want() { [[ " $STEPS " == *" $1 "* ]]; }
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}  # the repo root, as `pip install -e .` gives
PY=${PY:-python3}
workers=$(( $(nproc) > 8 ? 8 : $(nproc) - 1 ))
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"

if want 1; then
echo "== 1. DDP + SyncBatchNorm + AMP fp16 + channels_last through train_task.cli_main (2 epochs, 1 GPU)"
timeout 240 $PY - "$workers" <<'PY' 2>&1 | tee "$OUT/ddp_syncbn.log"
import sys, time, torch
from train_task import cli_main
seen = set()  # what reached SyncBatchNorm during training: Lightning reverts it to _BatchNormXd at teardown
sync_forward = torch.nn.SyncBatchNorm.forward
def spy(self, x):
    seen.add((x.device.type, str(x.dtype), x.is_contiguous(memory_format=torch.channels_last)))
    return sync_forward(self, x)
torch.nn.SyncBatchNorm.forward = spy
start = time.perf_counter()
cli = cli_main(["fit", "--config", "configs/ssdlite_shapes_demo.yaml", "--trainer.accelerator", "gpu",
                "--trainer.strategy", "ddp", "--trainer.sync_batchnorm", "true", "--trainer.precision", "16-mixed",
                "--trainer.max_epochs", "2", "--trainer.default_root_dir", "runs/gpu_ddp",
                "--trainer.logger.init_args.save_dir", "runs/gpu_ddp", "--data.num_workers", sys.argv[1]])
print(f"strategy {type(cli.trainer.strategy).__name__}, world size {cli.trainer.world_size}, "
      f"precision {cli.trainer.precision}, SyncBatchNorm inputs (device, dtype, channels_last): {sorted(seen)}, "
      f"val/map {float(cli.trainer.callback_metrics['val/map']):.3f}, {time.perf_counter() - start:.0f} s")
PY
fi

if want 2; then
echo "== 2. make demo on the GPU with AMP fp16 (fit 10 epochs, validate, predict)"
timeout 300 $PY scripts/demo_detection.py --trainer.accelerator gpu --trainer.precision 16-mixed \
    --data.num_workers "$workers" 2>&1 | grep -v "it/s\]" | tee "$OUT/demo_detection.log" | tail -25
fi

if want 3; then
echo "== 3. make demo-seg on the GPU with AMP bf16"
timeout 300 $PY scripts/demo_segmentation.py --trainer.accelerator gpu --trainer.precision bf16-mixed \
    --data.num_workers "$workers" 2>&1 | grep -v "it/s\]" | tee "$OUT/demo_segmentation.log" | tail -20
fi

if want 4; then
echo "== 4. training throughput"
timeout 200 $PY -m benchmarks.gpu_training 2>&1 | tee "$OUT/gpu_training.log"
fi
