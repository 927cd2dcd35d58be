#!/usr/bin/env bash
# GPU training (issue "The GPU edge"), on a machine with a GPU and no Rust: run from the
# folder `scripts/gpu/bundle.sh train` made (`bash target/gpu-train/train.sh OUT_DIR`).
# Trains the default model (5 epochs of Fashion-MNIST, seed 42) on burn's wgpu backend twice,
# for images/s, wall time, the accuracy per exit and whether the weights digest repeats.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
default_out=gpu-train-results
# shellcheck source=common.sh
source "$here/common.sh"
{
  echo "== $(date -u) on $(hostname), $(nproc) CPUs"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
} 2>&1 | tee "$out/run.log"
for run in 1 2; do
  echo "== training run $run" | tee -a "$out/run.log"
  # EPOCHS and LIMIT (training and test images) shorten a trial run.
  "$bin/xtask" train --backend wgpu --data-dir "$here/data" --epochs "${EPOCHS:-5}" \
    ${LIMIT:+--limit "$LIMIT" --test-limit "$LIMIT"} \
    --out "$out/train-$run" --quiet 2>&1 | tee -a "$out/run.log"
done
echo "== digests (the same twice = reproducible on this GPU)" | tee -a "$out/run.log"
grep -h '"digest"' "$out"/train-*/metrics.json | tee -a "$out/run.log"
