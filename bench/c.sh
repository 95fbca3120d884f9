#!/usr/bin/env bash
# The C ABI against the library it wraps, side by side in one run: exec round trip of
# `true`, 50 concurrent `true`s, and 64 MiB of stdout through chunk callbacks. Each
# figure is printed for the library (Rust API), then for C (post-and-drain), with the
# ratio of medians. Prints figures; asserts nothing. Run after scripts/setup.sh.
#
#   bench/c.sh [RUNS]     (default 5)
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh" "${1:-5}"
export BOXLITE_SHIM=${BOXLITE_SHIM:-$REPO/target/release/boxlite-shim}
export BOXLITE_NET=${BOXLITE_NET:-$REPO/target/release/boxlite-net}

out=$(mktemp -d /tmp/boxlite-bench-c.XXXXXX)
cargo build -q --release --locked -p boxlite-c --example bench_lib
cc -O2 -std=c11 -I "$REPO/crates/boxlite-c/include" "$REPO/bench/c_bench.c" \
  "$REPO/target/release/libboxlite.a" -lpthread -ldl -lm -lrt -o "$out/c_bench"

"$REPO/target/release/examples/bench_lib" "$RUNS" > "$out/lib.txt"
"$out/c_bench" "$RUNS" > "$out/c.txt"

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR]=$1 } END { print (NR % 2) ? v[(NR+1)/2] : (v[NR/2] + v[NR/2+1]) / 2 }'; }
while read -r name unit values; do
  read -r -a lib <<< "$(awk -v n="$name" '$1 == n { $1 = ""; $2 = ""; print }' "$out/lib.txt")"
  read -r -a c <<< "$values"
  stats "$name: library" "$unit" "${lib[@]}"
  stats "$name: C ABI" "$unit" "${c[@]}"
  awk -v a="$(median "${c[@]}")" -v b="$(median "${lib[@]}")" -v n="$name" \
    'BEGIN { printf "%-44s C / library = %.2f\n", n, a / b }'
done < "$out/c.txt"
rm -rf "$out" "$BOXLITE_HOME"
