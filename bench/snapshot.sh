#!/usr/bin/env bash
# Memory snapshots benchmark. Prints figures; asserts nothing (timing on shared machines
# is noisy, so tests never assert on it). Run after scripts/setup.sh.
#
#   bench/snapshot.sh [RUNS]     (default 10)
#
# Figures, each as median and spread (min-max) over RUNS, wall time of one CLI process,
# cold and warm interleaved so that both see the same machine:
#   1. `run --rm boxlite/busybox true`: cold boot (--no-warm-start) against a warm start
#      (a fork of the image's template), and gVisor's `runsc do true` when installed; and
#      create-to-first-output of `run --rm boxlite/busybox echo hi`, cold and warm
#   2. `pause` of a box with about 300 MiB of RAM in use, then `exec true` on it (which
#      resumes it), and `resume`
#   3. `snapshot create` of a running box (memory and disk), and `clone` of it fanned out
#      to 1, 4 and 8 boxes (the whole call)
#   4. PSS of one idle box's QEMU, cold-booted and warm-started; of a clone of the 300 MiB
#      box; and in total for 20 idle warm-started boxes
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

# The first box of the image leaves the template.
"$BIN" run --rm boxlite/busybox true > /dev/null
cold=() warm=() runsc=()
for _ in $(seq "$RUNS"); do
  cold+=("$(timed "$BIN" run --rm --no-warm-start boxlite/busybox true)")
  warm+=("$(timed "$BIN" run --rm boxlite/busybox true)")
  if command -v runsc > /dev/null; then
    runsc+=("$(timed runsc --rootless --network=none do true)")
  fi
done
# Create to first output: the time until `echo` has printed, not counting the teardown.
first_output() {
  local s
  s=$(date +%s.%N)
  "$@" | { read -r _; awk -v a="$s" -v b="$(date +%s.%N)" 'BEGIN { printf "%.4f", b - a }'; cat > /dev/null; }
}
cold_first=() warm_first=()
for _ in $(seq "$RUNS"); do
  cold_first+=("$(first_output "$BIN" run --rm --no-warm-start boxlite/busybox echo hi)")
  warm_first+=("$(first_output "$BIN" run --rm boxlite/busybox echo hi)")
done
stats "run --rm echo: first output, cold boot" s "${cold_first[@]}"
stats "run --rm echo: first output, warm start" s "${warm_first[@]}"
stats "run --rm true, cold boot" s "${cold[@]}"
stats "run --rm true, warm start (template)" s "${warm[@]}"
[[ ${#runsc[@]} -gt 0 ]] && stats "runsc do true (gVisor)" s "${runsc[@]}"
awk -v c="$(printf '%s\n' "${cold[@]}" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')" \
    -v w="$(printf '%s\n' "${warm[@]}" | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')" \
    'BEGIN { printf "%-44s %.1fx faster\n", "warm start against cold boot", c / w }'

# A box with about 300 MiB of its RAM in use (random bytes in its tmpfs, which no
# zero-page shortcut can skip).
"$BIN" run -d --name snapbench --memory 1024 boxlite/busybox sleep 100000 > /dev/null
"$BIN" exec snapbench sh -c 'head -c 300000000 /dev/urandom > /dev/shm/fill'
echo "box: 1024 MiB of RAM, $("$BIN" exec snapbench du -m /dev/shm/fill | cut -f1) MiB of random bytes in its /dev/shm"
pause=() exec_after=() resume=()
for _ in $(seq "$RUNS"); do
  pause+=("$(timed "$BIN" pause snapbench)")
  exec_after+=("$(timed "$BIN" exec snapbench true)")
  "$BIN" pause snapbench > /dev/null
  resume+=("$(timed "$BIN" resume snapbench)")
done
stats "pause (300 MiB in use)" s "${pause[@]}"
stats "exec true on a paused box (resume + exec)" s "${exec_after[@]}"
stats "resume" s "${resume[@]}"
"$BIN" pause snapbench > /dev/null
echo "saved state of the paused box: $(du -sh "$BOXLITE_HOME/boxes/"*/paused | head -1 | cut -f1) on disk"
"$BIN" resume snapbench > /dev/null

snap=()
for i in $(seq "$RUNS"); do
  snap+=("$(timed "$BIN" snapshot create snapbench "s$i")")
done
stats "snapshot create (running box, memory)" s "${snap[@]}"
for n in 1 4 8; do
  t=()
  for _ in $(seq "$(( RUNS < 3 ? RUNS : 3 ))"); do
    s=$(date +%s.%N)
    ids=$("$BIN" clone snapbench@s1 -n "$n")
    e=$(date +%s.%N)
    t+=("$(awk -v a="$s" -v b="$e" 'BEGIN { printf "%.4f", b - a }')")
    # shellcheck disable=SC2086
    "$BIN" rm -f $ids > /dev/null
  done
  stats "clone of a memory snapshot, $n at once" s "${t[@]}"
done

# PSS of an idle box's QEMU, by how it started.
pss_of() {
  local id=$1 pid
  pid=$(pgrep -f "qemu-system.*${id:0:12}" | head -1)
  awk '/^Pss:/ { s += $2 } END { printf "%.1f", s / 1024 }' "/proc/$pid/smaps_rollup"
}
cold_id=$("$BIN" run -d --no-warm-start boxlite/busybox sleep 100000)
warm_id=$("$BIN" run -d boxlite/busybox sleep 100000)
clone_ids=$("$BIN" clone snapbench@s1 -n 2)
sleep 5
echo "QEMU PSS, idle box, cold boot:     $(pss_of "$cold_id") MiB"
echo "QEMU PSS, idle box, warm start:    $(pss_of "$warm_id") MiB"
for c in $clone_ids; do
  echo "QEMU PSS, clone of the 300 MiB box:  $(pss_of "$c") MiB"
done
"$BIN" rm -f "$cold_id" "$warm_id" $clone_ids snapbench > /dev/null

# Twenty idle boxes, each forked from the image's template.
ids=()
s=$(date +%s.%N)
for _ in $(seq 20); do
  ids+=("$("$BIN" run -d boxlite/busybox sleep 100000)")
done
e=$(date +%s.%N)
sleep 5
total=0
for id in "${ids[@]}"; do
  total=$(awk -v t="$total" -v p="$(pss_of "$id")" 'BEGIN { print t + p }')
done
awk -v t="$total" -v a="$s" -v b="$e" 'BEGIN {
  printf "20 idle warm-started boxes: QEMU PSS %.0f MiB in total, %.1f MiB each; started in %.1f s\n", t, t / 20, b - a }'

# shellcheck disable=SC2046
"$BIN" rm -f $("$BIN" ls -aq) > /dev/null
