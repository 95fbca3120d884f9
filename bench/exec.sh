#!/usr/bin/env bash
# Exec, copy and terminal benchmark. Prints figures; asserts nothing. Run after
# scripts/setup.sh.
#
#   bench/exec.sh [RUNS]     (default 5)
#
# Figures, each as median and spread (min-max):
#   1. exec round trip of `true` on a running box (RUNS x 10 samples)
#   2. `true` at 50-way concurrency: 50 clients x 4 execs, in execs per second
#   3. TTY keystroke echo latency: one byte in, its echo back (RUNS x 10 samples)
#   4. copy_in / copy_out of one 256 MiB file (to and from a volume: the image's root
#      filesystem is smaller than the file) and of 10,000 small files (100-1,099 bytes,
#      to and from the root filesystem), in MB/s and files/s
#   5. `boxlite cp` of the same 256 MiB file through the CLI, end to end
# Figures 1-4 are printed twice, with the helpers' jail on (the default) and off
# (BOXLITE_JAIL=off), in one run.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh" "${1:-5}"

for jail in on off; do
  echo "-- jail $jail"
  BOXLITE_JAIL=$jail cargo run -q --release --locked -p boxlite --example bench_io -- "$RUNS"
done

# The CLI path, process start to exit, for one large file each way.
scratch=$(mktemp -d /tmp/boxlite-bench-cp.XXXXXX)
head -c $((256 << 20)) /dev/urandom > "$scratch/big.bin"
"$BIN" run -d --name bench-cp -v /data boxlite/busybox > /dev/null
"$BIN" exec bench-cp true
cp_in=() cp_out=()
for i in $(seq "$RUNS"); do
  cp_in+=("$(timed "$BIN" cp "$scratch/big.bin" bench-cp:/data/)")
  cp_out+=("$(timed "$BIN" cp bench-cp:/data/big.bin "$scratch/out$i.bin")")
  rm -f "$scratch/out$i.bin"
done
"$BIN" rm -f bench-cp > /dev/null
rm -rf "$scratch"
mbps() { for t in "$@"; do awk -v t="$t" 'BEGIN { printf "%.2f\n", 268.435456 / t }'; done; }
mapfile -t in_rate < <(mbps "${cp_in[@]}")
mapfile -t out_rate < <(mbps "${cp_out[@]}")
stats "boxlite cp 256 MiB into a box (e2e)" MB/s "${in_rate[@]}"
stats "boxlite cp 256 MiB out of a box (e2e)" MB/s "${out_rate[@]}"
rm -rf "$BOXLITE_HOME"
