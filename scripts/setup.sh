#!/usr/bin/env bash
# Set up a fresh Debian 12 machine to build and run boxlite: system packages, the guest
# assets (kernel, initramfs, built-in images, virtiofsd) and the release binary.
# Idempotent and cached: a second run only rebuilds what changed.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

SUDO=
if [[ $(id -u) != 0 ]]; then
  command -v sudo >/dev/null || { echo "setup needs root (or sudo) to install packages" >&2; exit 1; }
  SUDO=sudo
fi

PACKAGES=(
  qemu-system-x86 qemu-utils          # the VMM and qemu-img
  busybox-static                      # the built-in boxlite/busybox image
  debootstrap                         # the built-in boxlite/python image
  e2fsprogs cpio lz4 zstd xz-utils kmod binutils   # asset build: mkfs.ext4, initramfs, vmlinux, depmod
  protobuf-compiler                   # protoc, for the agent protocol
  libseccomp-dev libcap-ng-dev        # building virtiofsd (volumes)
  docker-registry openssl             # the local OCI registry the image tests pull from, its test CA
  libarchive13                        # loaded by mke2fs to read the root filesystem's tar stream
  python3                             # the network tests' wheel and simple index; bench/net.sh's fixtures
  python3-venv python3-dev            # the virtualenvs (Python SDK, REST compatibility); libpython for the SDK crate's tests
  iproute2 util-linux                 # ip and unshare: the API fuzz test's own network namespace
  gcc libc6-dev                       # cc (with AddressSanitizer) for the C ABI's tests; cgo for the Go SDK
  ca-certificates
)
missing=()
for p in "${PACKAGES[@]}"; do
  [[ $p == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# The kernel package is fetched with apt-get download, which needs fresh package lists.
if [[ ${#missing[@]} -gt 0 || ! -f /var/lib/apt/periodic/boxlite-update-stamp || -n $(find /var/lib/apt/periodic/boxlite-update-stamp -mmin +1440 2>/dev/null) ]]; then
  log "apt-get update"
  $SUDO apt-get update -qq
  $SUDO mkdir -p /var/lib/apt/periodic && $SUDO touch /var/lib/apt/periodic/boxlite-update-stamp
fi
if [[ ${#missing[@]} -gt 0 ]]; then
  log "installing: ${missing[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian 12's bookworm-backports archive, for what bookworm ships too old.
backports_ready=
ensure_backports() {
  [[ -n $backports_ready ]] && return 0
  grep -q '^VERSION_CODENAME=bookworm' /etc/os-release || return 1
  if ! apt-cache policy 2>/dev/null | grep -q 'bookworm-backports'; then
    log "adding bookworm-backports"
    printf '%s\n' 'Types: deb' 'URIs: http://deb.debian.org/debian' 'Suites: bookworm-backports' \
      'Components: main' 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' |
      $SUDO tee /etc/apt/sources.list.d/boxlite-bookworm-backports.sources >/dev/null
    $SUDO apt-get update -qq
  fi
  backports_ready=1
}

# Image bases are built on the host by `mke2fs -d -`, which reads a tar stream from
# e2fsprogs 1.47.1 on. Debian 12 ships 1.47.0; its backports archive has 1.47.2.
e2fs=$(dpkg-query -W -f='${Version}' e2fsprogs 2>/dev/null || echo 0)
if dpkg --compare-versions "$e2fs" lt 1.47.1; then
  if ensure_backports; then
    log "installing e2fsprogs from bookworm-backports (mke2fs that reads tar streams)"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      -t bookworm-backports e2fsprogs >/dev/null
  else
    log "WARNING: e2fsprogs $e2fs is older than 1.47.1: image bases will be built in a VM (much slower)"
  fi
fi

# The Go SDK (sdks/go) needs Go 1.22 or newer; Debian 12 ships 1.19, backports 1.23.
if ! GO=$(bash scripts/find-go.sh 2>/dev/null); then
  if ensure_backports; then
    log "installing Go 1.23 from bookworm-backports (for the Go SDK)"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      -t bookworm-backports golang-1.23-go >/dev/null
  fi
  GO=$(bash scripts/find-go.sh) || { echo "Go 1.22 or newer is needed for the Go SDK" >&2; exit 1; }
fi
log "Go: $("$GO" version)"

command -v cargo >/dev/null || { echo "cargo not found: install Rust 1.95.0 (see rust-toolchain.toml)" >&2; exit 1; }

# A virtualenv holding exactly these pinned packages (NAME==VERSION ...), made again
# when any of them differs.
pinned_venv() {
  local dir=$1
  shift
  if ! "$dir/bin/python" - "$@" 2>/dev/null <<'PY'
import sys
from importlib.metadata import version
sys.exit(any(version(n) != v for n, v in (a.split("==") for a in sys.argv[1:])))
PY
  then
    log "installing $* into $dir"
    rm -rf "$dir"
    python3 -m venv "$dir"
    "$dir/bin/pip" install -q --disable-pip-version-check "$@"
  fi
}

# BoxLite's released Python SDK, for the REST compatibility test (crates/boxlite-server/
# tests/sdk_compat.rs), and schemathesis, for the API fuzz test (crates/boxlite-cli/tests/
# fuzz_api.rs); the official Python MCP client, for the MCP server's tests
# (crates/boxlite-mcp/tests). Pinned: the versions these tests were verified with.
pinned_venv build/compat-venv "boxlite==0.10.8" "schemathesis==4.32.5"
pinned_venv build/mcp-venv "mcp==2.3.0" "pytest==9.2.0"

log "building guest assets"
bash scripts/build-assets.sh

log "building the boxlite CLI and libboxlite (release)"
cargo build --release --locked -p boxlite-cli -p boxlite-net -p boxlite-c
# The C library alone in one directory, so `-L build/c/lib -lboxlite` links it statically
# (the Go SDK's tests and the C examples).
mkdir -p build/c/lib
cp -f target/release/libboxlite.a build/c/lib/libboxlite.a

# The runtime looks for assets beside its binary; point the release build at them.
ln -sfn "$REPO/build/assets" "$REPO/target/release/assets"

# The Python SDK: its wheel (build/wheels), installed into build/venv.
bash scripts/build-wheel.sh
log "ready: $REPO/target/release/boxlite (assets: $REPO/build/assets)"
