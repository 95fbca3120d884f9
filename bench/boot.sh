#!/usr/bin/env bash
# Boot and exec benchmark. Prints figures; asserts nothing (timing on shared machines is
# noisy, so tests never assert on it). Run after scripts/setup.sh.
#
#   bench/boot.sh [RUNS]     (default 10)
#
# Figures, each as median and spread (min-max) over RUNS, with the helpers' jail on (the
# default) and off (BOXLITE_JAIL=off), side by side in one run:
#   1. `boxlite run --rm boxlite/busybox true`, end to end (process start to exit); the
#      two settings alternate run by run, so they share the machine's noise
#   2. box creation to first exec output (library, includes boot)
#   3. exec round trip of `true` on a running box
#   4. RSS and PSS of the QEMU process of an idle box
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

# Warm the image store once so the figures are for a cached image.
"$BIN" run --rm boxlite/busybox true

e2e_on=() e2e_off=()
for _ in $(seq "$RUNS"); do
  e2e_on+=("$(BOXLITE_JAIL=on timed "$BIN" run --rm boxlite/busybox true)")
  e2e_off+=("$(BOXLITE_JAIL=off timed "$BIN" run --rm boxlite/busybox true 2> /dev/null)")
done
stats "run --rm busybox true (e2e), jail on" s "${e2e_on[@]}"
stats "run --rm busybox true (e2e), jail off" s "${e2e_off[@]}"

# Library-level figures come from the bench binary in crates/boxlite/examples.
for jail in on off; do
  echo "-- jail $jail"
  BOXLITE_JAIL=$jail cargo run -q --release --locked -p boxlite --example bench_exec -- "$RUNS"
done
rm -rf "$BOXLITE_HOME"
