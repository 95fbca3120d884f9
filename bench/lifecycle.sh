#!/usr/bin/env bash
# Lifecycle benchmark. Prints figures; asserts nothing (timing on shared machines is
# noisy, so tests never assert on it). Run after scripts/setup.sh.
#
#   bench/lifecycle.sh [RUNS]     (default 10)
#
# Figures, each as median and spread (min-max) over RUNS, wall time of one CLI process:
#   1. `boxlite stop` of a running box (clean guest shutdown)
#   2. `boxlite start` of a stopped box (boot until the agent answers)
#   3. `boxlite exec BOX true` from a fresh process: open the home, reattach, run, exit;
#      on a settled box, and as the first exec right after `start` (the guest is still
#      loading its background modules then)
#   4. `boxlite ls -a` with 50 boxes in the database
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${1:-10}
BIN=$REPO/target/release/boxlite
export BOXLITE_ASSETS=${BOXLITE_ASSETS:-$REPO/build/assets}
export BOXLITE_HOME=${BOXLITE_HOME:-$(mktemp -d /tmp/boxlite-bench.XXXXXX)}
[[ -x $BIN ]] || { echo "build first: scripts/setup.sh" >&2; exit 1; }

echo "accelerator: $("$BIN" info | sed -n 's/^accelerator: *//p')"
echo "host: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "runs: $RUNS"

stats() { # name unit values...
  local name=$1 unit=$2; shift 2
  printf '%s\n' "$@" | sort -g | awk -v n="$name" -v u="$unit" '
    { v[NR]=$1 } END {
      m = (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2
      printf "%-44s median %8.3f %s   min %8.3f   max %8.3f   (n=%d)\n", n, m, u, v[1], v[NR], NR }'
}

# Wall time of one command, in seconds; its output is discarded.
timed() {
  local s e
  s=$(date +%s.%N)
  "$@" > /dev/null
  e=$(date +%s.%N)
  awk -v a="$s" -v b="$e" 'BEGIN { printf "%.4f", b - a }'
}

"$BIN" run -d --name bench boxlite/busybox > /dev/null
stop=() start=() first=() exec=()
for _ in $(seq "$RUNS"); do
  stop+=("$(timed "$BIN" stop bench)")
  start+=("$(timed "$BIN" start bench)")
  first+=("$(timed "$BIN" exec bench true)")
done
sleep 2
for _ in $(seq "$RUNS"); do
  exec+=("$(timed "$BIN" exec bench true)")
done
stats "stop (running box)" s "${stop[@]}"
stats "start (stopped box)" s "${start[@]}"
stats "reattach + exec true, first after start" s "${first[@]}"
stats "reattach + exec true, settled box" s "${exec[@]}"

for _ in $(seq 49); do "$BIN" create boxlite/busybox > /dev/null; done
ls=()
for _ in $(seq "$RUNS"); do
  ls+=("$(timed "$BIN" ls -a)")
done
stats "ls -a with $("$BIN" ls -a -q | wc -l) boxes" s "${ls[@]}"

"$BIN" rm -f $("$BIN" ls -a -q) > /dev/null
rm -rf "$BOXLITE_HOME"
