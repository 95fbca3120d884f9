# Shared by the bench scripts: sourced, not run. Sets REPO, RUNS (from $1, default 10),
# BIN, BOXLITE_ASSETS and a throwaway BOXLITE_HOME, prints the setting, and defines
# `stats` and `timed`.
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${1:-10}
BIN=$REPO/target/release/boxlite
export BOXLITE_ASSETS=${BOXLITE_ASSETS:-$REPO/build/assets}
export BOXLITE_HOME=${BOXLITE_HOME:-$(mktemp -d /tmp/boxlite-bench.XXXXXX)}
[[ -x $BIN ]] || { echo "build first: scripts/setup.sh" >&2; exit 1; }

echo "accelerator: $("$BIN" info | sed -n 's/^accelerator: *//p')"
echo "host: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "runs: $RUNS"

# stats NAME UNIT VALUES...: median, min and max of the values.
stats() {
  local name=$1 unit=$2; shift 2
  printf '%s\n' "$@" | sort -g | awk -v n="$name" -v u="$unit" '
    { v[NR]=$1 } END {
      m = (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2
      printf "%-44s median %8.3f %s   min %8.3f   max %8.3f   (n=%d)\n", n, m, u, v[1], v[NR], NR }'
}

# timed CMD...: wall time of one command in seconds; its stdout is discarded.
timed() {
  local s e
  s=$(date +%s.%N)
  "$@" > /dev/null
  e=$(date +%s.%N)
  awk -v a="$s" -v b="$e" 'BEGIN { printf "%.4f", b - a }'
}
