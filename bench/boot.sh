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
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

# Warm the image store once so the figures are for a cached image.
"$BIN" run --rm boxlite/busybox true

e2e=()
for _ in $(seq "$RUNS"); do
  e2e+=("$(timed "$BIN" run --rm boxlite/busybox true)")
done
stats "run --rm boxlite/busybox true (e2e)" s "${e2e[@]}"

# Library-level figures come from the bench binary in crates/boxlite/examples.
cargo run -q --release --locked -p boxlite --example bench_exec -- "$RUNS"
rm -rf "$BOXLITE_HOME"
