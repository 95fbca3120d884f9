#!/usr/bin/env bash
# Boot and exec benchmark. Prints figures; asserts nothing (timing on shared machines is
# noisy, so tests never assert on it). Run after scripts/setup.sh.
#
#   bench/boot.sh [RUNS]     (default 10)
#
# Figures, each as median and spread (min-max) over RUNS:
#   1. `boxlite run --rm boxlite/busybox true`, end to end (process start to exit)
#   2. box creation to first exec output (library, includes boot)
#   3. exec round trip of `true` on a running box
#   4. RSS and PSS of the QEMU process of an idle box
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

# Warm the image store once so the figures are for a cached image.
"$BIN" run --rm boxlite/busybox true

stats() { # name unit values...
  local name=$1 unit=$2; shift 2
  printf '%s\n' "$@" | sort -g | awk -v n="$name" -v u="$unit" '
    { v[NR]=$1 } END {
      m = (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2
      printf "%-44s median %8.3f %s   min %8.3f   max %8.3f   (n=%d)\n", n, m, u, v[1], v[NR], NR }'
}

e2e=()
for _ in $(seq "$RUNS"); do
  s=$(date +%s.%N)
  "$BIN" run --rm boxlite/busybox true
  e=$(date +%s.%N)
  e2e+=("$(awk -v a="$s" -v b="$e" 'BEGIN { printf "%.4f", b - a }')")
done
stats "run --rm boxlite/busybox true (e2e)" s "${e2e[@]}"

# Library-level figures come from the bench binary in crates/boxlite/examples.
cargo run -q --release --locked -p boxlite --example bench_exec -- "$RUNS"
rm -rf "$BOXLITE_HOME"
