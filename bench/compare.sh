#!/usr/bin/env bash
# Interleaved A/B comparison of `boxlite run --rm boxlite/busybox true` between two builds.
# Timing on these machines drifts by a few tenths of a second between runs of bench/boot.sh,
# so a change is judged by alternating the two builds run by run and comparing medians
# (and their ratio) from the same stretch of time.
#
#   bench/compare.sh A_BIN A_ASSETS B_BIN B_ASSETS [RUNS]   (default 10 runs each)
set -euo pipefail
[[ $# -ge 4 ]] || { sed -n '2,7p' "$0" >&2; exit 2; }
A_BIN=$1 A_ASSETS=$2 B_BIN=$3 B_ASSETS=$4 RUNS=${5:-10}
HOME_A=$(mktemp -d /tmp/boxlite-cmp-a.XXXXXX)
HOME_B=$(mktemp -d /tmp/boxlite-cmp-b.XXXXXX)
trap 'rm -rf "$HOME_A" "$HOME_B"' EXIT

once() { # bin assets home -> seconds
  local s e
  s=$(date +%s%N)
  BOXLITE_HOME=$3 BOXLITE_ASSETS=$2 "$1" run --rm boxlite/busybox true
  e=$(date +%s%N)
  awk -v a="$s" -v b="$e" 'BEGIN { printf "%.4f\n", (b - a) / 1e9 }'
}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Warm both image stores and asset stamps.
once "$A_BIN" "$A_ASSETS" "$HOME_A" >/dev/null
once "$B_BIN" "$B_ASSETS" "$HOME_B" >/dev/null
a=() b=()
for i in $(seq "$RUNS"); do
  if (( i % 2 )); then
    a+=("$(once "$A_BIN" "$A_ASSETS" "$HOME_A")"); b+=("$(once "$B_BIN" "$B_ASSETS" "$HOME_B")")
  else
    b+=("$(once "$B_BIN" "$B_ASSETS" "$HOME_B")"); a+=("$(once "$A_BIN" "$A_ASSETS" "$HOME_A")")
  fi
done
ma=$(printf '%s\n' "${a[@]}" | median)
mb=$(printf '%s\n' "${b[@]}" | median)
echo "A: median $ma s  (${a[*]})"
echo "B: median $mb s  (${b[*]})"
awk -v a="$ma" -v b="$mb" 'BEGIN { printf "B/A median ratio: %.3f\n", b / a }'
