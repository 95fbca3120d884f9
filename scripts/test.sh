#!/usr/bin/env bash
# Run every check CI runs: formatting, clippy, unit tests, and the integration tests that
# boot real VMs (under TCG where there is no usable KVM). Sets the machine up first.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

bash scripts/setup.sh

echo "[test] cargo fmt --check" >&2
cargo fmt --all --check
echo "[test] cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings

export BOXLITE_ASSETS="$REPO/build/assets"
# Each VM test boots its own box; two at a time keeps a 2-core machine busy without
# starving the emulated CPUs.
echo "[test] cargo test" >&2
cargo test --workspace --locked --no-fail-fast -- --test-threads="${BOXLITE_TEST_THREADS:-2}"

leftover=$(pgrep -fa 'qemu-system|vhost-device-vsock' | grep -F "$REPO" || true)
if [[ -n $leftover ]]; then
  echo "[test] VM processes outlived the tests:" >&2
  echo "$leftover" >&2
  exit 1
fi
