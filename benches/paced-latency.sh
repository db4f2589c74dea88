#!/usr/bin/env bash
# Paced-latency sweep: broker pinned to CPU 0, loadgen to CPU 1 (2-core VM).
# usage: benches/paced-latency.sh LABEL OSPREY_BIN LOADGEN_BIN [duration] [warmup]
set -u
label=$1; osprey=$2; loadgen=$3; dur=${4:-15}; warm=${5:-3}
root=${BENCH_DIR:-target}/bench-$label
mkdir -p "$root"
port=19392
printf "%-8s %-9s %-4s %9s %9s %9s %9s %8s %7s %7s %9s %7s %s\n" label rate prod "pub/s" p50ms p99ms p999ms maxms brkCPU lgCPU "brkCPUs/GB" lgBusy load1
for spec in ${SPECS:-"20000:1" "50000:1" "100000:1" "50000:4"}; do
  spec=${spec/:/ }
  set -- $spec; rate=$1; prod=$2
  dd="$root/data-$rate-$prod"; rm -rf "$dd"; mkdir -p "$dd"
  taskset -c 0 "$osprey" serve --listen 127.0.0.1:$port --admin-listen 127.0.0.1:0 --data-dir "$dd" --cores 1 >"$root/broker-$rate-$prod.log" 2>&1 &
  bpid=$!
  for i in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  t0=$(awk '{print $14+$15}' /proc/$bpid/stat); w0=$(date +%s.%N)
  /usr/bin/time -f %P -o "$root/time-$rate-$prod.txt" taskset -c 1 "$loadgen" run --bootstrap 127.0.0.1:$port --scenario fixed-rate-latency \
    --message-size 1024 --partitions 8 --acks all --rate $rate --producers $prod \
    --duration $dur --warmup $warm --cpus 1 --broker-pid $bpid ${EXTRA:-} --quiet --json "$root/r-$rate-$prod.json" >"$root/out-$rate-$prod.txt" 2>&1
  t1=$(awk '{print $14+$15}' /proc/$bpid/stat); w1=$(date +%s.%N)
  kill $bpid; wait $bpid 2>/dev/null
  cpu=$(python3 -c "print(f'{($t1-$t0)/100/($w1-$w0)*100:.0f}%')")
  python3 - "$root/r-$rate-$prod.json" "$label" "$rate" "$prod" "$cpu" "$(tail -1 $root/time-$rate-$prod.txt)" "$(cut -d' ' -f1 /proc/loadavg)" <<'PY'
import json,sys
j=json.load(open(sys.argv[1])); l,r,p,c,lc,load=sys.argv[2:]
t=j.get("throughput",{})
pub=round(t.get("publishMsgPerSec",0))
gb=j.get("brokerCpu",{}).get("cpuSecondsPerGB")
busy=max((x["busy"] for x in j.get("clientCpu",{}).get("threads",[])), default=0)
sat=" SAT" if j.get("clientCpu",{}).get("saturated") else ""
gbs=f"{gb:.2f}" if gb is not None else "-"
print(f"{l:8} {r:9} {p:4} {str(pub)[:9]:>9} {j['aggregatedPublishLatency50pct']:9.2f} {j['aggregatedPublishLatency99pct']:9.2f} {j['aggregatedPublishLatency999pct']:9.2f} {j['aggregatedPublishLatencyMax']:8.1f} {c:>7} {lc:>7} {gbs:>9} {busy*100:6.0f}%{sat} {load}")
PY
done
