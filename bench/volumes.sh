#!/usr/bin/env bash
# Volume benchmark: a virtiofs volume against the box's own ext4 disk (qcow2 overlay).
# Prints figures; asserts nothing. Run after scripts/setup.sh.
#
#   bench/volumes.sh [RUNS]     (default 5)
#
# Figures, each as median and spread over RUNS, measured from the host around one
# `boxlite exec` (which adds about 0.04 s):
#   1. sequential write of 256 MiB (dd, 1 MiB blocks, fsync), MB/s
#   2. sequential read of that file after dropping the guest's page cache, MB/s
#   3. creating 10,000 small files, seconds
#   4. `run --rm ... true` with one volume and without, interleaved, and the difference
set -euo pipefail
set -- "${1:-5}"
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"

"$BIN" run -d --name vbench -v vbench:/vol boxlite/busybox > /dev/null
mbps() { awk -v s="$1" 'BEGIN { printf "%.1f", 256 / s }'; }

declare -A w r f
for target in /vol /root; do
  ws=() rs=() fs=()
  for _ in $(seq "$RUNS"); do
    t=$(timed "$BIN" exec vbench sh -c "dd if=/dev/zero of=$target/big bs=1M count=256 conv=fsync 2>/dev/null")
    ws+=("$(mbps "$t")")
    "$BIN" exec vbench sh -c "sync; echo 3 > /proc/sys/vm/drop_caches"
    t=$(timed "$BIN" exec vbench sh -c "dd if=$target/big of=/dev/null bs=1M 2>/dev/null")
    rs+=("$(mbps "$t")")
    "$BIN" exec vbench rm -f "$target/big"
    fs+=("$(timed "$BIN" exec vbench sh -c "mkdir $target/many && cd $target/many && i=0; while [ \$i -lt 10000 ]; do echo x > f\$i; i=\$((i+1)); done; sync")")
    "$BIN" exec vbench rm -rf "$target/many"
  done
  name=volume; [[ $target == /root ]] && name="own disk"
  stats "write 256 MiB, $name" MB/s "${ws[@]}"
  stats "read 256 MiB, $name" MB/s "${rs[@]}"
  stats "create 10,000 files, $name" s "${fs[@]}"
done
"$BIN" rm -f vbench > /dev/null

plain=() withvol=()
for i in $(seq "$RUNS"); do
  if (( i % 2 )); then
    plain+=("$(timed "$BIN" run --rm boxlite/busybox true)")
    withvol+=("$(timed "$BIN" run --rm -v vbench:/vol boxlite/busybox true)")
  else
    withvol+=("$(timed "$BIN" run --rm -v vbench:/vol boxlite/busybox true)")
    plain+=("$(timed "$BIN" run --rm boxlite/busybox true)")
  fi
done
stats "run --rm true, no volume" s "${plain[@]}"
stats "run --rm true, one volume" s "${withvol[@]}"
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
awk -v a="$(median "${plain[@]}")" -v b="$(median "${withvol[@]}")" \
  'BEGIN { printf "%-44s %+.3f s (ratio %.3f)\n", "extra boot time for one volume (medians)", b - a, b / a }'
"$BIN" volume rm vbench > /dev/null
rm -rf "$BOXLITE_HOME"
