#!/usr/bin/env bash
# The GPU run (issue "The GPU edge"), on a machine with a GPU and no Rust: run from the folder
# scripts/gpu/bundle.sh made (`bash target/gpu/run.sh OUT_DIR`). Records the GPU and its
# driver, then measures with burn on wgpu:
#   1. batch-1 latency of every exit, and exit 5's throughput at batch 1 … 256, in process;
#   2. one GPU edge (dynamic batching: up to 64 requests, 0.5 ms) and 16, then 64, device
#      processes on this machine's CPUs over ZeroMQ with CURVE: results/s, batch sizes
#      formed (the edge's counters) and the devices' latency percentiles.
# Everything it prints goes to OUT_DIR too (default ./gpu-results). About 3 minutes.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
default_out=gpu-results
# shellcheck source=common.sh
source "$here/common.sh"
edge="$bin/edgent-edge"
device="$bin/edgent-device"
log() { echo "== $*" | tee -a "$out/run.log"; }
step() { log "$*"; "$@" 2>&1 | tee -a "$out/run.log"; }

log "$(date -u) on $(hostname), $(nproc) CPUs"
step nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
step "$edge" info --engine burn --backend wgpu

log "1. in process: batch-1 latency per exit, exit 5's throughput against batch size"
"$device" bench --engine burn --backend wgpu --threads 0 --repeats 200 \
  --batches 1,2,4,8,16,32,64,128,256 --json > "$out/bench-wgpu.json" 2>> "$out/run.log"
"$device" bench --engine generated --threads 1 --repeats 200 --batches 1,8,64 \
  --json > "$out/bench-generated.json" 2>> "$out/run.log"
cat "$out/bench-wgpu.json" "$out/bench-generated.json" | tee -a "$out/run.log"

log "2. end to end: one GPU edge, N device processes (edge-only exit 5, CURVE)"
for n in 16 64; do
  bash "$here/load.sh" "$bin" "$here/data" "$out" "$n" 20 --engine burn --backend wgpu \
    --workers 4 --max-batch 64 --max-wait-us 500 2>&1 | tee -a "$out/run.log"
  tee -a "$out/run.log" < "$out/edge-$n.json"
  echo | tee -a "$out/run.log"
done
log "done: $out"
