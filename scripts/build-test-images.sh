#!/usr/bin/env bash
# Build the root trees of images that tests need beyond the built-in ones, as plain tars
# (numeric owners) in $BOXLITE_TEST_IMAGES_OUT (default: build/test-images; tests read
# $BOXLITE_TEST_IMAGES). A test turns one into an image with
# boxlite_testkit::oci::TestImage::built("clients", config) and pushes it to a local
# boxlite_testkit::Registry. Each tar has a .manifest beside it: its recipe, size,
# sha256 and the versions of the packages it was built with.
#
#   clients.tar  boxlite/python's root (Debian bookworm) plus curl, Python's requests and
#                Node.js 18 (global fetch), with Debian's CA bundle: the TLS clients the
#                secret-substitution tests drive.
#
# Needs root (chroot; the tree's files keep their owners) and the Debian archive. Re-running
# is cheap: a tar is rebuilt only when its recipe, or the base tree's, changes.
set -euo pipefail
shopt -s inherit_errexit

REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${BOXLITE_TEST_IMAGES_OUT:-$REPO/build/test-images}
CACHE=${BOXLITE_BUILD_CACHE:-$REPO/build/cache}
# Made by scripts/build-assets.sh (build_python_image).
BASE=$CACHE/images/python-root

CLIENTS_PACKAGES=(curl python3-requests nodejs ca-certificates)
CLIENTS_VERSION=v1

log() { printf '\033[1m[build-test-images]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[build-test-images] error:\033[0m %s\n' "$*" >&2; exit 1; }

[[ $(id -u) == 0 ]] || die "needs root: it installs packages in a chroot, and the tar keeps the tree's owners"
for tool in chroot tar sha256sum; do
  command -v "$tool" >/dev/null || die "missing '$tool'"
done

if [[ ! -d $BASE || ! -f $BASE.stamp ]]; then
  log "the boxlite/python root tree ($BASE) is missing; building the guest assets first"
  bash "$REPO/scripts/build-assets.sh"
  [[ -d $BASE && -f $BASE.stamp ]] || die "scripts/build-assets.sh did not leave $BASE; see its output above"
fi

mkdir -p "$OUT"
WORK=

# Whatever happens, no half-built tree stays. (Nothing is mounted in it: apt and these
# packages' maintainer scripts need no /proc.)
cleanup() {
  if [[ -n $WORK ]]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

# Run a command inside the work tree with a clean environment.
in_root() {
  chroot "$WORK" /usr/bin/env -i \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

build_clients() {
  local tar=$OUT/clients.tar manifest=$OUT/clients.manifest recipe
  recipe="clients $CLIENTS_VERSION: $(cat "$BASE.stamp") + ${CLIENTS_PACKAGES[*]}, trimmed"
  if [[ -f $tar && -f $manifest && $(head -n1 "$manifest") == "recipe: $recipe" ]]; then
    log "clients.tar is up to date"
    return
  fi
  log "building clients.tar (${CLIENTS_PACKAGES[*]} on boxlite/python's root)"
  WORK=$CACHE/test-images/clients-root
  rm -rf "$WORK"
  mkdir -p "$(dirname "$WORK")"
  cp -a "$BASE" "$WORK"

  # Name resolution for apt, for the install only; the image's own file comes back after.
  rm -f "$WORK/etc/resolv.conf"
  cp /etc/resolv.conf "$WORK/etc/resolv.conf"
  local aptlog=$CACHE/test-images/clients-apt.log
  {
    in_root apt-get update &&
    in_root apt-get install -y --no-install-recommends "${CLIENTS_PACKAGES[@]}"
  } > "$aptlog" 2>&1 || die "installing ${CLIENTS_PACKAGES[*]} failed; see $aptlog"
  local versions
  versions=$(in_root dpkg-query -W -f='${Package} ${Version}\n' "${CLIENTS_PACKAGES[@]}" python3)
  in_root apt-get clean
  rm -f "$WORK/etc/resolv.conf"
  if [[ -e $BASE/etc/resolv.conf || -L $BASE/etc/resolv.conf ]]; then
    cp -a "$BASE/etc/resolv.conf" "$WORK/etc/resolv.conf"
  fi

  # What an image does not need: package lists and caches, docs, logs, dpkg's backups,
  # and message translations (a third of /usr/share; tests run in C.UTF-8).
  rm -rf "$WORK"/var/lib/apt/lists/* "$WORK"/var/cache/apt/*.bin \
    "$WORK"/var/cache/apt/archives/*.deb "$WORK"/var/cache/debconf/*-old \
    "$WORK"/var/lib/dpkg/*-old "$WORK"/usr/share/doc/* "$WORK"/usr/share/man/* \
    "$WORK"/usr/share/info/* "$WORK"/var/log/*
  find "$WORK/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +

  # Sorted, with numeric owners: the same tree gives the same entries in the same order.
  tar -C "$WORK" --sort=name --numeric-owner -cf "$OUT/.clients.tar.tmp" .
  mv -f "$OUT/.clients.tar.tmp" "$tar"
  {
    echo "recipe: $recipe"
    echo "size: $(stat -c %s "$tar")"
    echo "sha256: $(sha256sum "$tar" | cut -d' ' -f1)"
    echo "$versions"
  } > "$manifest.tmp"
  mv -f "$manifest.tmp" "$manifest"
  rm -rf "$WORK"
  WORK=
  log "clients.tar: $(du -h "$tar" | cut -f1), $(sed -n 's/^nodejs /node /p' "$manifest")"
}

build_clients
log "test images ready in $OUT"
