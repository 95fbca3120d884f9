#!/usr/bin/env bash
# REST benchmark: the same calls through `boxlite serve` and through the library, side by
# side in one run (create, ping, box info, exec `true` round trip), and an exec's stdout
# streamed over the attach WebSocket against the library's stream. Prints figures;
# asserts nothing.
#
#   bench/rest.sh [RUNS]     (default 10)
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh" "${1:-10}"
cargo run -q --release --locked -p boxlite-server --example bench_rest -- "$RUNS"
rm -rf "$BOXLITE_HOME"
