#!/usr/bin/env bash
# The Go SDK's checks: go vet and go test -race, linked statically against libboxlite.
#
#   BOXLITE_C_LIB   directory holding libboxlite.a (default: <repo>/target/release;
#                   build it with `cargo build --release -p boxlite-c`)
#   GO              the go binary (default: go on PATH, else scripts/find-go.sh)
#
# BOXLITE_ASSETS, BOXLITE_SHIM, BOXLITE_NET, BOXLITE_NET_TEST_GUARD and BOXLITE_NET_DNS
# default from the repository's layout; GOCACHE, GOPATH and GOFLAGS are the caller's.
# Extra arguments go to `go test` (e.g. -run TestStdin -v).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
lib=${BOXLITE_C_LIB:-$repo/target/release}
if [[ ! -f $lib/libboxlite.a ]]; then
  echo "run-tests.sh: no libboxlite.a in $lib: build it (cargo build --release -p boxlite-c) or set BOXLITE_C_LIB" >&2
  exit 1
fi
if [[ -z ${GO:-} ]]; then
  GO=$(command -v go || true)
  if [[ -z $GO && -x $repo/scripts/find-go.sh ]]; then
    GO=$("$repo/scripts/find-go.sh" || true)
  fi
fi
if [[ -z ${GO:-} ]]; then
  echo "run-tests.sh: no go toolchain (1.22 or newer) found; set GO" >&2
  exit 1
fi

# A directory with only the static library, so the linker cannot pick libboxlite.so;
# the tests' homes live under it too (TMPDIR), so whatever they leave can be found.
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bxgo.XXXXXX")
cleanup() {
  # Boxes are durable: a test killed mid-way can leave a VM running. Stop those of
  # this run (their command lines name a home under $tmp), by pid.
  local pids
  pids=$(pgrep -f -- "$tmp/" || true)
  if [[ -n $pids ]]; then
    echo "run-tests.sh: stopping processes left by the tests: $pids" >&2
    kill $pids 2>/dev/null || true
    sleep 1
    kill -9 $pids 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
mkdir -p "$tmp/lib" "$tmp/t"
cp "$lib/libboxlite.a" "$tmp/lib/"

export CGO_ENABLED=1
export CGO_LDFLAGS="-L$tmp/lib${CGO_LDFLAGS:+ $CGO_LDFLAGS}"
export BOXLITE_ASSETS=${BOXLITE_ASSETS:-$repo/build/assets}
export BOXLITE_SHIM=${BOXLITE_SHIM:-$repo/target/release/boxlite-shim}
export BOXLITE_NET=${BOXLITE_NET:-$repo/target/release/boxlite-net}
export BOXLITE_NET_TEST_GUARD=${BOXLITE_NET_TEST_GUARD:-1}
export BOXLITE_NET_DNS=${BOXLITE_NET_DNS:-127.0.0.1:9}
# Go's cache is the caller's (GOCACHE); only without any place for one is it made here.
if [[ -z ${GOCACHE:-} && -z ${XDG_CACHE_HOME:-} && -z ${HOME:-} ]]; then
  export GOCACHE="$tmp/gocache"
fi
if [[ -z ${GOPATH:-} && -z ${HOME:-} ]]; then
  export GOPATH="$tmp/gopath"
fi
# Go's own temporary files stay where they were; the tests' go under $tmp/t.
export GOTMPDIR=${GOTMPDIR:-${TMPDIR:-/tmp}}
export TMPDIR="$tmp/t"

cd "$here"
echo "+ go vet ./..."
"$GO" vet ./...
echo "+ go test -race -count=1 ./... $*"
"$GO" test -race -count=1 -timeout 10m "$@" ./...
