#!/usr/bin/env bash
# Network benchmark. Prints figures; asserts nothing. Run after scripts/setup.sh (which
# builds boxlite-net next to boxlite).
#
#   bench/net.sh [RUNS]     (default 5)
#   NET_DOWN_MIB / NET_UP_MIB: bytes per transfer (default 256 MiB to the box, 64 from it)
#
# Figures, each as median and spread (min-max), for the accelerator printed first:
#   1. one stream between a box and a server on the host's loopback, through the gateway
#      10.0.2.2 and boxlite-net: download (host to box) and upload, in MB/s
#   2. the same through QEMU's own slirp (BOXLITE_BENCH_SLIRP=1), the yardstick
#   3. inbound through a published port (-p 127.0.0.1:0:PORT), the host as client: from
#      the box and to the box, in MB/s (goal: within 2x of 1)
#   4. connection cycle from inside the box: one wget fetching 50 one-byte URLs, timed by
#      the server as the gap between accepts (connect, request, first byte, close), for
#      boxlite-net and slirp; DNS answer latency of an --add-host name (a loop of
#      nslookup, less the same loop of `busybox true`)
#   5. the helper alone, no VM (crates/boxlite-net/examples/net_bench.rs): throughput,
#      new connections per second, connect and DNS latency
#   6. the secrets interception path alone (crates/boxlite-net/examples/secrets_bench.rs),
#      side by side with direct TLS to the same fixture: throughput of a 64 MiB echo
#      (goal: at least 100 MB/s), a keep-alive request's round trip (the difference is
#      what substitution adds), and a new connection with one request
#
# In the box, `nc -e` hands the socket to dd (1 MiB blocks), so neither busybox nc's small
# relay loop nor wget's parsing is what is measured. The server times each transfer
# itself (bench/net_server.py), so starting the command in the box is not counted.
#
# Every byte goes to 127.0.0.0/8: the helper's test guard refuses anything else and its
# only resolver is a dead local port; the slirp box is given no name to resolve and only
# dials 10.0.2.2, slirp's alias for the host's loopback.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh" "${1:-5}"
export BOXLITE_NET_TEST_GUARD=1 BOXLITE_NET_DNS=127.0.0.1:9
[[ -x $REPO/target/release/boxlite-net ]] || {
  echo "build first: cargo build --release -p boxlite-cli -p boxlite-net" >&2
  exit 1
}
ACCEL=$("$BIN" info --format json | python3 -c 'import json, sys; print(json.load(sys.stdin)["accelerator"])')
DOWN_MIB=${NET_DOWN_MIB:-256} UP_MIB=${NET_UP_MIB:-64}
DOWN=$((DOWN_MIB << 20)) UP=$((UP_MIB << 20))
CRR=50
SERVER=$REPO/bench/net_server.py

scratch=$(mktemp -d /tmp/boxlite-bench-net.XXXXXX)
server_pid=
cleanup() {
  "$BIN" rm -f bench-net bench-slirp > /dev/null 2>&1 || true
  [[ -n $server_pid ]] && kill "$server_pid" 2> /dev/null || true
  rm -rf "$scratch" "$BOXLITE_HOME"
}
trap cleanup EXIT

python3 "$SERVER" serve "$DOWN" "$UP" > "$scratch/server.log" &
server_pid=$!
for _ in $(seq 50); do [[ -s $scratch/server.log ]] && break; sleep 0.1; done
read -r _ SRC SINK HTTP < "$scratch/server.log"

# mbps BYTES: each time in seconds on stdin as a rate.
mbps() { awk -v b="$1" '{ printf "%.2f\n", b / 1e6 / $1 }'; }
# logged KIND: how many transfers of one kind the server has finished.
logged() { awk -v k="$1" '$1 == k { n++ } END { print n + 0 }' "$scratch/server.log"; }
# transfer KIND BYTES CMD...: run CMD, wait for the server to log the transfer, check that
# it moved BYTES, and print its seconds.
transfer() {
  local kind=$1 want=$2 before
  shift 2
  before=$(logged "$kind")
  "$@" > /dev/null
  for _ in $(seq 100); do
    (($(logged "$kind") > before)) && break
    sleep 0.1
  done
  (($(logged "$kind") > before)) || { echo "the server saw no $kind transfer" >&2; return 1; }
  awk -v k="$kind" -v want="$want" '$1 == k { b = $2; t = $3 }
    END { if (b != want) { printf "%s moved %s of %s bytes\n", k, b, want > "/dev/stderr"; exit 1 }; print t }' \
    "$scratch/server.log"
}

# Helper scripts in the box: dd on the socket `nc -e` hands over.
setup_box() {
  "$BIN" exec "$1" sh -c "
    printf '#!/bin/sh\nexec dd of=/dev/null bs=1M 2>/dev/null\n' > /tmp/sink
    printf '#!/bin/sh\nexec dd if=/dev/zero bs=1M count=$UP_MIB 2>/dev/null\n' > /tmp/source
    chmod +x /tmp/sink /tmp/source"
}

# outbound BOX LABEL: RUNS downloads and uploads through 10.0.2.2.
outbound() {
  local box=$1 label=$2 down=() up=()
  for _ in $(seq "$RUNS"); do
    down+=("$(transfer source "$DOWN" "$BIN" exec "$box" nc 10.0.2.2 "$SRC" -e /tmp/sink | mbps "$DOWN")")
    up+=("$(transfer sink "$UP" "$BIN" exec "$box" nc 10.0.2.2 "$SINK" -e /tmp/source | mbps "$UP")")
  done
  stats "$ACCEL: download $DOWN_MIB MiB, $label" MB/s "${down[@]}"
  stats "$ACCEL: upload $UP_MIB MiB, $label" MB/s "${up[@]}"
}

# crr BOX LABEL: RUNS batches of CRR sequential fetches by one wget; gaps between accepts.
crr() {
  local box=$1 label=$2 urls=() gaps=()
  for r in $(seq "$RUNS"); do
    urls=()
    for _ in $(seq "$CRR"); do urls+=("http://10.0.2.2:$HTTP/1/$label-$r"); done
    "$BIN" exec "$box" wget -q -O /dev/null "${urls[@]}"
    mapfile -t -O "${#gaps[@]}" gaps < <(awk -v t="$label-$r" '$1 == "http" && $2 == t { print $4 }' "$scratch/server.log" |
      awk 'NR > 1 { printf "%.3f\n", ($1 - p) * 1000 } { p = $1 }')
  done
  stats "$ACCEL: connection cycle, $label" ms "${gaps[@]}"
}

# The box's own network: boxlite-net, reaching only the fixtures' ports on the host.
"$BIN" run -d --name bench-net \
  --allow-net "host:$SRC" --allow-net "host:$SINK" --allow-net "host:$HTTP" \
  --add-host bench.test:host-gateway --allow-net bench.test:9 \
  -p 127.0.0.1:0:8080 -p 127.0.0.1:0:8081 \
  boxlite/busybox sleep 3600 > /dev/null
setup_box bench-net
outbound bench-net boxlite-net

# Inbound: the host connects to the published ports; dd in the box sends or sinks.
port_of() { "$BIN" port bench-net | awk -v p="$1/tcp" '$1 == p { n = split($3, a, ":"); print a[n] }'; }
from_port=$(port_of 8080) to_port=$(port_of 8081)
from=() to=()
for _ in $(seq "$RUNS"); do
  "$BIN" exec bench-net nc -l -p 8080 -e /tmp/source &
  from+=("$(python3 "$SERVER" fetch "$from_port" "$UP")")
  wait $!
  "$BIN" exec bench-net nc -l -p 8081 -e /tmp/sink &
  to+=("$(python3 "$SERVER" push "$to_port" "$DOWN")")
  wait $!
done
mapfile -t from_rate < <(printf '%s\n' "${from[@]}" | mbps "$UP")
mapfile -t to_rate < <(printf '%s\n' "${to[@]}" | mbps "$DOWN")
stats "$ACCEL: published port, $UP_MIB MiB from the box" MB/s "${from_rate[@]}"
stats "$ACCEL: published port, $DOWN_MIB MiB to the box" MB/s "${to_rate[@]}"

crr bench-net boxlite-net
# DNS: a loop of nslookup less the same loop of `busybox true` (the process start); what
# is left is the answer plus nslookup's own work, an upper bound.
"$BIN" exec bench-net nslookup -type=a bench.test > /dev/null
dns=()
for _ in $(seq "$RUNS"); do
  q=$(timed "$BIN" exec bench-net sh -c "for i in \$(seq $CRR); do nslookup -type=a bench.test > /dev/null; done; true")
  b=$(timed "$BIN" exec bench-net sh -c "for i in \$(seq $CRR); do busybox true; done")
  dns+=("$(awk -v q="$q" -v b="$b" -v n="$CRR" 'BEGIN { printf "%.3f", (q - b) * 1000 / n }')")
done
stats "$ACCEL: DNS answer (nslookup), boxlite-net" ms "${dns[@]}"
"$BIN" rm -f bench-net > /dev/null

# The yardstick: QEMU's slirp, same machine, same guest, same transfers.
BOXLITE_BENCH_SLIRP=1 "$BIN" run -d --name bench-slirp boxlite/busybox sleep 3600 > /dev/null
setup_box bench-slirp
outbound bench-slirp slirp
crr bench-slirp slirp
"$BIN" rm -f bench-slirp > /dev/null

# The helper alone, no VM.
cargo run -q --release --locked -p boxlite-net --example net_bench -- "$RUNS"

# The secrets interception path alone, next to direct TLS.
cargo run -q --release --locked -p boxlite-net --example secrets_bench -- "$RUNS"
