#!/bin/bash
# PLAINTEXT vs SSL vs SASL_SSL with loadgen (release builds): one broker (taskset -c 0,
# --cores 1) with the three listeners, loadgen on CPU 1 with --command-config for SSL and
# SASL_SSL (SCRAM-SHA-512), listeners alternated within each round (ROUNDS="1 2" default).
# Certificates and keys are made here, in $BENCH_DIR (default: a new temporary directory).
# Prints each run's table head and the broker's and loadgen's CPU seconds (*.cpu files).
#   cargo build --release -p osprey -p loadgen
#   benches/security-loadgen.sh --scenario max-throughput --duration 10 --warmup 2
set -e
W=$(cd "$(dirname "$0")/.." && pwd)
B=${BENCH_DIR:-$(mktemp -d)}
mkdir -p "$B"
echo "results in $B"
cd $B
rm -rf data pki; mkdir pki
( cd pki
  ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
  openssl req -x509 $ec -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-ca 2>/dev/null
  echo "subjectAltName=IP:127.0.0.1,DNS:localhost" > server.ext
  openssl req $ec -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile server.ext 2>/dev/null )
$W/target/release/osprey users create bench --mechanism SCRAM-SHA-512 --password bench-pw --data-dir $B/data >/dev/null
printf 'security.protocol=SSL\nssl.ca.location=%s/pki/ca.pem\n' $B > ssl.properties
printf 'security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\nsasl.username=bench\nsasl.password=bench-pw\nssl.ca.location=%s/pki/ca.pem\n' $B > sasl.properties
taskset -c 0 $W/target/release/osprey serve --listen 127.0.0.1:19092 --admin-listen 127.0.0.1:0 --data-dir $B/data --cores 1 \
  --listeners SSL://127.0.0.1:19192,SASL_SSL://127.0.0.1:19292 --tls-cert pki/server.pem --tls-key pki/server.key > broker.out 2> broker.err &
BPID=$!
trap "kill $BPID" EXIT
for i in $(seq 100); do grep -q "osprey ready" broker.out && break; sleep 0.2; done
for round in ${ROUNDS:-1 2}; do
  for p in PLAINTEXT:19092: SSL:19192:ssl.properties SASL_SSL:19292:sasl.properties; do
    IFS=: read name port props <<< "$p"
    cc=(); [ -n "$props" ] && cc=(--command-config $B/$props)
    uptime > load-$name-$round.txt
    b0=$(awk '{print $14+$15}' /proc/$BPID/stat)
    TIMEFORMAT="%U %S"
    { time taskset -c 1 $W/target/release/loadgen run --bootstrap 127.0.0.1:$port "${cc[@]}" "$@" --cpus 1 --quiet \
      --broker-name "osprey-$name" --broker-placement "taskset -c 0, --cores 1" --json $B/$name-$round.json > $B/$name-$round.txt 2>$B/$name-$round.err || echo "$name failed"; } 2> $B/$name-$round.cpu
    b1=$(awk '{print $14+$15}' /proc/$BPID/stat)
    echo "broker cpu ticks $((b1-b0)) (1/$(getconf CLK_TCK) s); loadgen user sys s: $(cat $B/$name-$round.cpu)" >> $B/$name-$round.cpu
    echo "== $name round $round ($(cat load-$name-$round.txt))"; head -4 $B/$name-$round.txt
  done
done
