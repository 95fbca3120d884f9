#!/usr/bin/env bash
# Build the Python SDK's wheel (crates/boxlite-python) into build/wheels and install it
# into the project's virtualenv, build/venv. The wheel carries everything the library
# needs at run time except QEMU: the guest assets (kernel, initramfs, built-in images,
# virtiofsd) and the boxlite-shim and boxlite-net helpers, in boxlite/_data.
#
# It builds with the release profile and the workspace's target directory, so it reuses
# what `cargo build --release -p boxlite-cli` (scripts/setup.sh) compiled.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
log() { printf '\033[1m[wheel]\033[0m %s\n' "$*" >&2; }

VENV=build/venv
MATURIN_VERSION=1.16.0
PYTEST_VERSION=9.2.0
if ! "$VENV/bin/python" - "$MATURIN_VERSION" "$PYTEST_VERSION" 2>/dev/null <<'PY'
import sys
from importlib.metadata import version
sys.exit(version("maturin") != sys.argv[1] or version("pytest") != sys.argv[2])
PY
then
  log "creating $VENV (maturin $MATURIN_VERSION, pytest $PYTEST_VERSION)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check \
    "maturin==$MATURIN_VERSION" "pytest==$PYTEST_VERSION"
fi

cargo build --release --locked -p boxlite-cli -p boxlite-net
DATA=crates/boxlite-python/python/boxlite/_data
rm -rf "$DATA"
mkdir -p "$DATA/bin"
# Sparse image files stay sparse here; the wheel's zip compresses their holes.
cp -a --sparse=always build/assets "$DATA/assets"
cp target/release/boxlite-shim target/release/boxlite-net "$DATA/bin/"

log "building the wheel"
rm -rf build/wheels
"$VENV/bin/maturin" build --release --locked -q \
  -m crates/boxlite-python/Cargo.toml -o build/wheels
rm -rf "$DATA"
wheel=$(ls build/wheels/boxlite-*.whl)
log "installing $(basename "$wheel") ($(du -h "$wheel" | cut -f1)) into $VENV"
"$VENV/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "$wheel"
