#!/usr/bin/env bash
# Density benchmark: what idle boxes cost, with auto-pause off and on. Prints figures;
# asserts nothing. Run after scripts/setup.sh.
#
#   bench/density.sh [RUNS] [COUNTS]    (RUNS of `exec true` per figure, default 10;
#                                        COUNTS default "10 25 50")
#
# For each count N and each mode (auto-pause off, then on with a 10 s interval):
#   - start N idle `boxlite/busybox` boxes (128 MiB each, so that 50 fit the default
#     /dev/shm), one after another, and time the start of the last one;
#   - once they are idle (with auto-pause: once all are paused), host CPU use over 30 s
#     from /proc/stat, as a share of all cores;
#   - PSS of every process of the home (QEMU, shims, network helpers), total and per box;
#   - the `exec true` round trip (one CLI process) on a random box, against a lone box
#     measured before the others were started. With auto-pause on, the random box is
#     paused, so its figure includes the resume.
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
COUNTS=${2:-10 25 50}
MEM=128
MEASURE=30

cleanup() {
  "$BIN" ls -a -q 2> /dev/null | xargs -r "$BIN" rm -f > /dev/null 2>&1 || true
}
trap cleanup EXIT

# Busy and total jiffies of all CPUs.
cpu_jiffies() { awk '/^cpu / { t = 0; for (i = 2; i <= 9; i++) t += $i; print t - $5 - $6, t }' /proc/stat; }

# Host CPU use over $MEASURE seconds, percent of all cores.
host_cpu() {
  local b0 t0 b1 t1
  read -r b0 t0 < <(cpu_jiffies)
  sleep "$MEASURE"
  read -r b1 t1 < <(cpu_jiffies)
  awk -v b="$((b1 - b0))" -v t="$((t1 - t0))" 'BEGIN { printf "%.1f", 100 * b / t }'
}

# Total PSS in KiB of the processes of this home.
home_pss() {
  local total=0 pid pss
  for pid in /proc/[0-9]*; do
    pid=${pid#/proc/}
    { tr '\0' '\n' < "/proc/$pid/environ"; } 2> /dev/null | grep -qx "BOXLITE_HOME=$BOXLITE_HOME" || continue
    pss=$(awk '/^Pss:/ { print $2 }' "/proc/$pid/smaps_rollup" 2> /dev/null || echo 0)
    total=$((total + ${pss:-0}))
  done
  echo "$total"
}

rtts() {
  local box=$1 out=()
  for _ in $(seq "$RUNS"); do out+=("$(timed "$BIN" exec "$box" true)"); done
  printf '%s\n' "${out[@]}"
}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2 }'; }

# The template first, so every box of the runs is a warm start.
"$BIN" run --rm --memory "$MEM" boxlite/busybox true > /dev/null

for mode in off on; do
  for n in $COUNTS; do
    cleanup
    pause_flag=()
    [[ $mode == on ]] && pause_flag=(--auto-pause 10s)
    # The lone box: alone on the host, never paused while measured.
    lone=$("$BIN" create --memory "$MEM" boxlite/busybox)
    "$BIN" start "$lone" > /dev/null
    lone_rtt=$(rtts "$lone" | tee /tmp/boxlite-bench.lone | median)
    stats "exec true, lone box" s $(cat /tmp/boxlite-bench.lone)
    "$BIN" rm -f "$lone" > /dev/null
    ids=()
    last=0
    for i in $(seq "$n"); do
      id=$("$BIN" create --memory "$MEM" "${pause_flag[@]}" boxlite/busybox)
      last=$(timed "$BIN" start "$id")
      ids+=("$id")
    done
    if [[ $mode == on ]]; then
      # Wait (at most 5 minutes) for every box to pause itself.
      for _ in $(seq 300); do
        running=$("$BIN" ls --format json | python3 -c 'import json,sys; print(sum(1 for b in json.load(sys.stdin) if b["state"].lower() == "running"))')
        [[ $running == 0 ]] && break
        sleep 1
      done
    else
      sleep 5
    fi
    # Settled by now: a box neither running nor paused failed (or stopped).
    failed=$("$BIN" ls -a --format json | python3 -c 'import json,sys; print(sum(1 for b in json.load(sys.stdin) if b["state"].lower() not in ("running","paused")))')
    paused=$("$BIN" ls -a --format json | python3 -c 'import json,sys; print(sum(1 for b in json.load(sys.stdin) if b["state"].lower() == "paused"))')
    cpu=$(host_cpu)
    pss=$(home_pss)
    pick=${ids[$((RANDOM % n))]}
    busy_rtt=$(rtts "$pick" | tee /tmp/boxlite-bench.busy | median)
    echo "== $n idle boxes, auto-pause $mode: $paused paused, $failed failed"
    printf '%-44s %8.1f %% of %d cores\n' "host CPU over ${MEASURE}s" "$cpu" "$(nproc)"
    printf '%-44s %8.1f MiB total, %.1f MiB per box\n' "PSS of the home's processes" \
      "$(awk -v k="$pss" 'BEGIN { print k / 1024 }')" "$(awk -v k="$pss" -v n="$n" 'BEGIN { print k / 1024 / n }')"
    printf '%-44s %8.3f s\n' "start of the last box" "$last"
    stats "exec true, random box of $n" s $(cat /tmp/boxlite-bench.busy)
    # With auto-pause the first one resumes the box; the others find it running.
    printf '%-44s %8.3f s\n' "first exec true on it" "$(head -1 /tmp/boxlite-bench.busy)"
    awk -v a="$busy_rtt" -v b="$lone_rtt" 'BEGIN { printf "%-44s %.2fx\n", "random box against lone box (medians)", a / b }'
  done
done
rm -f /tmp/boxlite-bench.lone /tmp/boxlite-bench.busy
