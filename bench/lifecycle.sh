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
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

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
