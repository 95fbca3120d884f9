#!/usr/bin/env bash
# The agent channel's own cost, without a VM: frames, epochs and the yamux multiplexer
# between a host link and a guest link in one process (crates/boxlite-protocol/examples/
# channel_bench.rs). Prints throughput each way and the cost of opening a stream; asserts
# nothing. End-to-end figures through a real box are in bench/exec.sh.
#
#   bench/channel.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo run -q --release --locked -p boxlite-protocol --example channel_bench
