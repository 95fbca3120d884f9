#!/usr/bin/env bash
# Build the guest assets boxlite boots: an uncompressed kernel for direct PVH boot, the
# initramfs (the static guest agent as /init plus kernel modules), the built-in images
# and virtiofsd. Output goes to $BOXLITE_ASSETS_OUT (default:
# build/assets), with manifest.json recording every file's size and sha256.
#
# Re-running is cheap: the kernel package, the tools and the built-in images are cached
# under build/cache and rebuilt only when their inputs change.
set -euo pipefail
# Command substitutions (AGENT=$(build_agent)) must fail the script too.
shopt -s inherit_errexit

REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${BOXLITE_ASSETS_OUT:-$REPO/build/assets}
CACHE=${BOXLITE_BUILD_CACHE:-$REPO/build/cache}

# The pinned guest kernel. If this version has left the archive, the newest
# linux-image-*-cloud-amd64-unsigned is used instead, with a loud warning.
KERNEL_PKG=linux-image-6.1.0-56-cloud-amd64-unsigned
KERNEL_VERSION=6.1.192-2
KERNEL_SHA256=7ff7fc8da85d313242c20698c6b34542aea447673c7c1975b0d38bd6005100b5

# virtiofsd from crates.io (the Rust one; QEMU 8 dropped its C virtiofsd). Needs
# libseccomp-dev and libcap-ng-dev, which setup.sh installs.
VIRTIOFSD_VERSION=1.14.0

# Modules the guest needs; their dependencies are resolved from the kernel's own
# modules.dep, so load order follows the kernel, not these lists. The agent loads the
# boot list before it serves (disk, entropy, and virtio_console for its virtio-serial
# port) and the later list right after, in the background, because loading modules under
# TCG costs ~30 ms each.
MODULES_BOOT=(virtio_mmio virtio_blk virtio_rng virtio_console)
MODULES_LATER=(virtio_net overlay virtiofs)

log() { printf '\033[1m[build-assets]\033[0m %s\n' "$*" >&2; }
die() { printf '\033[1;31m[build-assets] error:\033[0m %s\n' "$*" >&2; exit 1; }

for tool in apt-get dpkg-deb depmod modprobe cpio lz4 mkfs.ext4 sha256sum readelf; do
  command -v "$tool" >/dev/null || die "missing '$tool'; run scripts/setup.sh (it installs the build dependencies)"
done

mkdir -p "$OUT" "$CACHE"
sha() { sha256sum "$1" | cut -d' ' -f1; }

# ---------------------------------------------------------------- kernel package
fetch_kernel() {
  local dir=$CACHE/kernel deb
  mkdir -p "$dir"
  deb=$(ls "$dir"/"${KERNEL_PKG}"_"${KERNEL_VERSION}"_amd64.deb 2>/dev/null || true)
  if [[ -n $deb && $(sha "$deb") == "$KERNEL_SHA256" ]]; then
    echo "$deb"; return
  fi
  rm -f "$dir"/*.deb
  if (cd "$dir" && apt-get download "${KERNEL_PKG}=${KERNEL_VERSION}" >&2 2>/dev/null); then
    deb=$(ls "$dir"/"${KERNEL_PKG}"_*_amd64.deb)
    [[ $(sha "$deb") == "$KERNEL_SHA256" ]] || die "kernel package $deb has sha256 $(sha "$deb"), expected $KERNEL_SHA256"
    echo "$deb"; return
  fi
  local newest ver expected
  newest=$(apt-cache search --names-only '^linux-image-.*-cloud-amd64-unsigned$' | cut -d' ' -f1 | sort -V | tail -n1)
  [[ -n $newest ]] || die "pinned kernel $KERNEL_PKG=$KERNEL_VERSION is not downloadable and no linux-image-*-cloud-amd64-unsigned exists (did you run 'apt-get update'?)"
  ver=$(apt-cache show "$newest" | awk '/^Version:/{print $2; exit}')
  expected=$(apt-cache show "$newest" | awk '/^SHA256:/{print $2; exit}')
  printf '\n\033[1;33m' >&2
  printf '############################################################################\n' >&2
  printf '# WARNING: pinned kernel %s=%s is gone from the archive.\n' "$KERNEL_PKG" "$KERNEL_VERSION" >&2
  printf '# Falling back to the newest one: %s=%s\n' "$newest" "$ver" >&2
  printf '# Update KERNEL_PKG, KERNEL_VERSION and KERNEL_SHA256 in scripts/build-assets.sh.\n' >&2
  printf '############################################################################\033[0m\n\n' >&2
  (cd "$dir" && apt-get download "${newest}=${ver}" >&2) || die "downloading $newest=$ver failed"
  deb=$(ls "$dir"/"${newest}"_*_amd64.deb)
  [[ $(sha "$deb") == "$expected" ]] || die "kernel package $deb does not match the archive's sha256 $expected"
  echo "$deb"
}

# Cut the compressed payload out of a bzImage and decompress it into an ELF vmlinux.
extract_vmlinux() {
  local vmlinuz=$1 out=$2 magic tool off
  for pair in '\x02\x21\x4c\x18:lz4 -dc' '\x28\xb5\x2f\xfd:zstd -dcq' '\xfd\x37\x7a\x58\x5a\x00:xz -dcq' '\x1f\x8b\x08:gzip -dcq'; do
    magic=${pair%%:*}; tool=${pair#*:}
    command -v "${tool%% *}" >/dev/null || continue
    for off in $(LC_ALL=C grep -obUaP "$magic" "$vmlinuz" | cut -d: -f1 | head -n 5); do
      # The decompressor stops at the end of the stream and may complain about what
      # follows it; the ELF check below is what decides.
      tail -c "+$((off + 1))" "$vmlinuz" | $tool > "$out" 2>/dev/null || true
      if [[ $(head -c 4 "$out" | od -An -tx1 | tr -d ' \n') == 7f454c46 ]]; then
        return 0
      fi
    done
  done
  die "could not find a decompressible ELF kernel inside $vmlinuz"
}

build_kernel_and_modules() {
  local deb=$1 x=$CACHE/kernel/extract kver
  local stamp=$CACHE/kernel/extract.stamp
  if [[ ! -f $stamp || $(cat "$stamp") != "$(sha "$deb")" ]]; then
    rm -rf "$x"; mkdir -p "$x"
    dpkg-deb -x "$deb" "$x"
    sha "$deb" > "$stamp"
  fi
  kver=$(ls "$x/lib/modules" | head -n1)
  [[ -n $kver ]] || die "no modules directory in $deb"
  log "kernel $kver from $(basename "$deb")"
  if [[ ! -f $CACHE/kernel/vmlinux || $CACHE/kernel/vmlinux -ot $stamp ]]; then
    extract_vmlinux "$x/boot/vmlinuz-$kver" "$CACHE/kernel/vmlinux"
  fi
  cp "$CACHE/kernel/vmlinux" "$OUT/vmlinux"
  echo "$kver" > "$OUT/kernel.release"

  # Dependencies from the kernel's own metadata.
  depmod -b "$x" "$kver"
  local stage=$CACHE/initramfs
  rm -rf "$stage"; mkdir -p "$stage/lib/modules"
  : > "$stage/lib/modules/boxlite.load"
  : > "$stage/lib/modules/boxlite.later"
  declare -A seen=()
  local m line ko base list
  for m in "${MODULES_BOOT[@]}" -- "${MODULES_LATER[@]}"; do
    if [[ $m == -- ]]; then list=later; continue; fi
    while read -r line; do
      [[ $line == insmod* ]] || continue
      ko=$(awk '{print $2}' <<<"$line")
      base=$(basename "$ko")
      base=${base%.xz}; base=${base%.zst}
      [[ -n ${seen[$base]:-} ]] && continue
      seen[$base]=1
      case $ko in
        *.xz) xz -dc "$ko" > "$stage/lib/modules/$base" ;;
        *.zst) zstd -dcq "$ko" > "$stage/lib/modules/$base" ;;
        *) cp "$ko" "$stage/lib/modules/$base" ;;
      esac
      echo "$base" >> "$stage/lib/modules/boxlite.${list:-load}"
    done < <(modprobe -d "$x" -S "$kver" --show-depends "$m" 2>/dev/null || die "module $m not found in kernel $kver")
  done
  log "modules at boot: $(tr '\n' ' ' < "$stage/lib/modules/boxlite.load")"
  log "modules after ready: $(tr '\n' ' ' < "$stage/lib/modules/boxlite.later")"
}

# ---------------------------------------------------------------- guest agent
build_agent() {
  log "building the static guest agent"
  (cd "$REPO" && RUSTFLAGS="-C target-feature=+crt-static" cargo build --profile guest --locked \
      -p boxlite-guest --target x86_64-unknown-linux-gnu --target-dir "$REPO/target/guest" >&2) \
    || die "building the guest agent failed (see above); the old agent is not reused"
  local bin=$REPO/target/guest/x86_64-unknown-linux-gnu/guest/boxlite-guest
  if readelf -d "$bin" | grep -q NEEDED; then die "$bin is dynamically linked; it must be static to run as /init"; fi
  echo "$bin"
}

pack_initramfs() {
  local agent=$1 stage=$CACHE/initramfs
  mkdir -p "$stage"/{proc,sys,dev,run,rootfs,tmp}
  cp "$agent" "$stage/init"
  strip "$stage/init" 2>/dev/null || true
  chmod 0755 "$stage/init"
  # Uncompressed: under TCG, decompressing costs more boot time than reading a few more MB.
  (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 --reproducible) > "$OUT/initramfs.cpio"
  log "initramfs: $(du -h "$OUT/initramfs.cpio" | cut -f1)"
}

# ---------------------------------------------------------------- tools
build_virtiofsd() {
  local root=$CACHE/tools bin
  bin=$root/bin/virtiofsd
  if [[ ! -x $bin || $(cat "$root/virtiofsd.version" 2>/dev/null) != "$VIRTIOFSD_VERSION" ]]; then
    log "installing virtiofsd $VIRTIOFSD_VERSION from crates.io"
    cargo install --locked --quiet --version "$VIRTIOFSD_VERSION" virtiofsd --root "$root" --force >&2
    echo "$VIRTIOFSD_VERSION" > "$root/virtiofsd.version"
  fi
  mkdir -p "$OUT/bin"
  cp "$bin" "$OUT/bin/.virtiofsd.new"
  mv -f "$OUT/bin/.virtiofsd.new" "$OUT/bin/virtiofsd"
}

# ---------------------------------------------------------------- built-in images
build_busybox_image() {
  [[ $(id -u) == 0 ]] || die "building boxlite/busybox needs root: mkfs.ext4 -d copies the builder's uid into the image"
  local bb=/bin/busybox stamp img=$CACHE/images/busybox.ext4
  [[ -x $bb ]] || die "missing /bin/busybox; install the busybox-static package"
  if readelf -d "$bb" | grep -q NEEDED; then die "/bin/busybox is not static; install busybox-static"; fi
  stamp="busybox:$(sha "$bb"):v2-journal"
  mkdir -p "$CACHE/images"
  if [[ ! -f $img || $(cat "$img.stamp" 2>/dev/null) != "$stamp" ]]; then
    log "building boxlite/busybox"
    local r=$CACHE/images/busybox-root
    rm -rf "$r"; mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,etc,root,home,proc,sys,dev,run,var/tmp,tmp}
    cp "$bb" "$r/bin/busybox"
    local applet
    for applet in $("$bb" --list-full); do
      [[ $applet == bin/busybox ]] && continue
      mkdir -p "$r/$(dirname "$applet")"
      ln -sf /bin/busybox "$r/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$r/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' > "$r/etc/group"
    printf 'root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n' > "$r/etc/shadow"
    chmod 0640 "$r/etc/shadow"
    printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$r/etc/hosts"
    chmod 1777 "$r/tmp" "$r/var/tmp"
    chmod 0700 "$r/root"
    rm -f "$img"
    # Room for what boxes write; the file is sparse, and each box's qcow2 overlay only
    # grows by what is written.
    # With a journal: a box's writes, and the online grow at its first boot, survive its
    # VM being killed.
    mkfs.ext4 -q -F -L boxlite-root -E root_owner=0:0 -d "$r" "$img" 256M
    echo "$stamp" > "$img.stamp"
  fi
  mkdir -p "$OUT/images"
  cp --sparse=always "$img" "$OUT/images/busybox.ext4"
}

# boxlite/python: Debian's python3 and pip on a minbase debootstrap. The root tree stays
# in the cache (bench/images.sh pushes it to a local registry as an image); only a change
# of the recipe below rebuilds it. pip installs into the image's Python as it does in
# Docker's python images: Debian's EXTERNALLY-MANAGED marker (PEP 668), which makes
# `pip install` refuse outside a virtualenv, is removed; a box is the isolation.
DEBIAN_MIRROR=${BOXLITE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PYTHON_RECIPE="bookworm minbase +python3 +pip trimmed v2"
PYTHON_FS="journal v1"
build_python_image() {
  [[ $(id -u) == 0 ]] || die "building boxlite/python needs root (debootstrap)"
  command -v debootstrap >/dev/null || die "missing debootstrap; run scripts/setup.sh"
  local img=$CACHE/images/python.ext4 r=$CACHE/images/python-root
  mkdir -p "$CACHE/images"
  if [[ ! -d $r || $(cat "$r.stamp" 2>/dev/null) != "$PYTHON_RECIPE" ]]; then
    log "building boxlite/python (debootstrap from $DEBIAN_MIRROR; a few minutes)"
    rm -rf "$r" "$r.stamp" "$img"
    debootstrap --variant=minbase --include=python3,python3-pip bookworm "$r" "$DEBIAN_MIRROR" \
      > "$CACHE/images/python-debootstrap.log" 2>&1 \
      || die "debootstrap failed; see $CACHE/images/python-debootstrap.log"
    # What an image does not need: package caches and lists, docs, logs.
    rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/lib/apt/lists/* \
      "$r"/usr/share/doc/* "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/var/log/*
    rm -f "$r"/usr/lib/python3*/EXTERNALLY-MANAGED
    echo "$PYTHON_RECIPE" > "$r.stamp"
  fi
  if [[ ! -f $img || $(cat "$img.stamp" 2>/dev/null) != "$PYTHON_RECIPE $PYTHON_FS" ]]; then
    local mib
    mib=$(( $(du -sm "$r" | cut -f1) * 5 / 4 + 64 ))
    rm -f "$img"
    mkfs.ext4 -q -F -L boxlite-root -E root_owner=0:0 -d "$r" "$img" "${mib}M"
    echo "$PYTHON_RECIPE $PYTHON_FS" > "$img.stamp"
  fi
  mkdir -p "$OUT/images"
  cp --sparse=always "$img" "$OUT/images/python.ext4"
}

# ---------------------------------------------------------------- manifest
write_manifest() {
  local f entries=() kver
  kver=$(cat "$OUT/kernel.release")
  for f in vmlinux initramfs.cpio images/busybox.ext4 images/python.ext4; do
    entries+=("$(printf '    "%s": {"size": %s, "sha256": "%s"}' "$f" "$(stat -c %s "$OUT/$f")" "$(sha "$OUT/$f")")")
  done
  {
    printf '{\n  "format": 1,\n  "kernel_release": "%s",\n  "kernel_package": "%s",\n  "files": {\n' "$kver" "$(basename "$KERNEL_DEB")"
    local IFS=$'\n'
    printf '%s' "${entries[0]}"
    for f in "${entries[@]:1}"; do printf ',\n%s' "$f"; done
    printf '\n  },\n  "images": {\n    "boxlite/busybox": "images/busybox.ext4",\n    "boxlite/python": "images/python.ext4"\n  },\n'
    # What a box of each built-in image runs when given no command, and its environment.
    printf '  "image_config": {\n'
    printf '    "boxlite/busybox": {"Cmd": ["/bin/sh"]},\n'
    printf '    "boxlite/python": {"Cmd": ["python3"], "Env": ["LANG=C.UTF-8"]}\n'
    printf '  }\n}\n'
  } > "$OUT/manifest.json.tmp"
  mv "$OUT/manifest.json.tmp" "$OUT/manifest.json"
}

KERNEL_DEB=$(fetch_kernel)
build_kernel_and_modules "$KERNEL_DEB"
AGENT=$(build_agent)
pack_initramfs "$AGENT"
build_virtiofsd
build_busybox_image
build_python_image
write_manifest
log "assets ready in $OUT"
