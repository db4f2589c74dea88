#!/usr/bin/env bash
# Rate sweep of osprey and (when given) Tansu, each broker pinned to CPU 0 and loadgen to
# CPU 1 (2-core VM); one `loadgen sweep` so both share one chart; each broker's CPU is read
# from its pid (CPU-s per GB per step).
# usage: benches/sweep-peers.sh OUT_DIR OSPREY_BIN LOADGEN_BIN [TANSU_BIN]
# env: RATES (default 5000,10000,20000,40000,80000,160000), STEP (5), WARM (2), EXTRA.
set -u
out=$1; osprey=$2; loadgen=$3; tansu=${4:-}
rates=${RATES:-5000,10000,20000,40000,80000,160000}
mkdir -p "$out"; rm -rf "$out/osprey-data"; mkdir -p "$out/osprey-data"
taskset -c 0 "$osprey" serve --listen 127.0.0.1:19392 --admin-listen 127.0.0.1:0 \
  --data-dir "$out/osprey-data" --cores 1 >"$out/osprey.log" 2>&1 &
opid=$!
brokers=(--broker "osprey=127.0.0.1:19392;pid=$opid")
if [ -n "$tansu" ]; then
  taskset -c 0 "$tansu" broker --listener-url tcp://127.0.0.1:19492 \
    --advertised-listener-url tcp://127.0.0.1:19492 --storage-engine memory://tansu/ \
    >"$out/tansu.log" 2>&1 &
  tpid=$!
  brokers+=(--broker "tansu=127.0.0.1:19492;pid=$tpid")
fi
for port in 19392 ${tansu:+19492}; do
  for i in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done
echo "load before: $(cat /proc/loadavg)" | tee "$out/load.txt"
taskset -c 1 "$loadgen" sweep --scenario fixed-rate-latency --message-size 1024 --partitions 8 \
  --acks all --cpus 1 --rates "$rates" --step-duration "${STEP:-5}" --step-warmup "${WARM:-2}" \
  --quiet --broker-placement "taskset -c 0" --out-dir "$out" "${brokers[@]}" ${EXTRA:-} | tee "$out/sweep.txt"
echo "load after: $(cat /proc/loadavg)" | tee -a "$out/load.txt"
kill $opid ${tpid:-} 2>/dev/null; wait 2>/dev/null
