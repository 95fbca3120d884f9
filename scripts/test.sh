#!/usr/bin/env bash
# Run every check CI runs: formatting, clippy, unit tests, and the integration tests that
# boot real VMs (under TCG where there is no usable KVM). Sets the machine up first.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

bash scripts/setup.sh
# Root trees of the images the tests serve from a local registry (curl, requests, Node).
bash scripts/build-test-images.sh

echo "[test] cargo fmt --check" >&2
cargo fmt --all --check
echo "[test] cargo clippy" >&2
cargo clippy --workspace --all-targets --locked -- -D warnings

export BOXLITE_ASSETS="$REPO/build/assets"
export BOXLITE_TEST_IMAGES="$REPO/build/test-images"
# Network tests only ever reach 127.0.0.0/8: every box's helper refuses (and logs) any
# other dial, and DNS forwarding goes to the discard port, never a real resolver.
export BOXLITE_NET_TEST_GUARD=1 BOXLITE_NET_DNS=127.0.0.1:9
# Every helper runs under its seccomp allowlist with calls off the list killing it, so a
# missing entry fails a test here instead of quietly failing with ENOSYS on a user's box.
export BOXLITE_JAIL_SECCOMP=kill
# Each VM test boots its own box; two at a time keeps a 2-core machine busy without
# starving the emulated CPUs.
echo "[test] cargo test" >&2
cargo test --workspace --locked --no-fail-fast -- --test-threads="${BOXLITE_TEST_THREADS:-2}"

# pytest in a virtualenv on a test tree (its 5 means nothing was collected: a broken
# test tree, not a pass).
run_pytest() {
  local rc=0
  "$1/bin/python" -m pytest -q -p no:cacheprovider "$2" || rc=$?
  if [[ $rc == 5 ]]; then
    echo "[test] pytest collected no tests in $2" >&2
    exit 1
  elif [[ $rc != 0 ]]; then
    exit "$rc"
  fi
}

# The Python SDK, as installed from its wheel by setup.
echo "[test] pytest (the Python SDK)" >&2
run_pytest build/venv crates/boxlite-python/tests

# The MCP server (the release boxlite), driven by the official Python MCP client.
echo "[test] pytest (boxlite mcp)" >&2
run_pytest build/mcp-venv crates/boxlite-mcp/tests

# The Go SDK over libboxlite (built by setup into build/c/lib), with the race detector.
echo "[test] go test -race (the Go SDK)" >&2
GO=$(bash scripts/find-go.sh)
PATH="$(dirname "$GO"):$PATH" BOXLITE_C_LIB="$REPO/build/c/lib" bash sdks/go/run-tests.sh

leftover=$(pgrep -fa 'qemu-system|boxlite-shim|boxlite-net|virtiofsd' | grep -F "$REPO" || true)
if [[ -n $leftover ]]; then
  echo "[test] VM processes outlived the tests:" >&2
  echo "$leftover" >&2
  exit 1
fi
