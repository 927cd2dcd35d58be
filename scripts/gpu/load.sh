#!/usr/bin/env bash
# One edge under load: `load.sh BIN DATA OUT N SECONDS [edgent-edge serve flags…]` starts
# BIN/edgent-edge with the flags given (not --bind, --key, --allow or --stats: the script
# sets those; --queue 1024 unless given), with CURVE keys, then N BIN/edgent-device eval
# processes sending edge-only exit-5 requests (the link measured as usual, emulated
# slowdown 1, no fallback, 1 s deadline) for SECONDS, over the test set in DATA. Keeps the edge's
# counters (OUT/edge-N.json) and each device's report (OUT/device-N-I.json) — OUT is one
# run's folder: a second run with the same N overwrites it — and prints a summary:
# results/s and the mean batch (the edge's, per batch), and over the devices the medians of
# latency p50/p99, of the prediction error and of the mean batch their requests ran in (per
# request, so at least the edge's). Used by run.sh on a GPU, and here on the CPU:
#   cargo build --release -p generated
#   bash scripts/gpu/load.sh target/release /usr/share/datasets/fashion-mnist runs/load 8 20 \
#     --engine generated --workers 2 --max-batch 8 --max-wait-us 2000
set -uo pipefail
bin=$1 data=$2 out=$3 n=$4 seconds=$5
shift 5
mkdir -p "$out/keys"
keys="$out/keys"
port=${EDGENT_LOAD_PORT:-5555}
[ -e "$keys/edge.key" ] || "$bin/edgent-edge" keygen --name edge --out "$keys" > /dev/null
for i in $(seq 1 "$n"); do
  [ -e "$keys/d$i.key" ] || "$bin/edgent-device" keygen --name "d$i" --out "$keys" > /dev/null
done
cat "$keys"/d*.pub > "$keys/allow.pub"
queue=()
case " $* " in *" --queue "*) ;; *) queue=(--queue 1024) ;; esac
"$bin/edgent-edge" serve "$@" "${queue[@]}" --bind "tcp://127.0.0.1:$port" \
  --key "$keys/edge.key" --allow "$keys/allow.pub" \
  --stats "$out/edge-$n.json" > "$out/edge-$n.log" 2>&1 &
edge_pid=$!
sleep 3
pids=()
for i in $(seq 1 "$n"); do
  "$bin/edgent-device" eval --data "$data" --policy edge-only --slowdown 1 --threads 1 \
    --deadline 1s --duration "${seconds}s" --no-fallback \
    --edge "tcp://127.0.0.1:$port" --key "$keys/d$i.key" --server-key "$keys/edge.pub" \
    --json > "$out/device-$n-$i.json" 2> "$out/device-$n-$i.log" &
  pids+=($!)
done
wait "${pids[@]}"
kill -TERM "$edge_pid"
wait "$edge_pid"
# A number field of a JSON object (compact, or pretty-printed one field a line).
field() { grep -o "\"$2\": *[^,}]*" "$1" 2>/dev/null | head -1 | cut -d: -f2 | tr -d ' '; }
median() { sort -g | awk '{v[NR] = $1} END {if (NR) print v[int((NR + 1) / 2)]; else print "nan"}'; }
of_devices() { for f in "$out"/device-"$n"-*.json; do field "$f" "$1"; done | median; }
echo "$n devices, edge $*:"
results=$(field "$out/edge-$n.json" results)
results=${results:-0}
echo "  edge: $results results, $(awk "BEGIN {printf \"%.0f\", $results / $seconds}") results/s over the ${seconds} s, batches of $(field "$out/edge-$n.json" batch_mean) on average (largest $(field "$out/edge-$n.json" batch_max))"
echo "  devices (median over them): latency p50 $(of_devices latency_ms_p50) ms, p99 $(of_devices latency_ms_p99) ms; prediction error $(of_devices prediction_error_pct_p50) %; batches of $(of_devices edge_batch_mean) seen"
