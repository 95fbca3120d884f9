#!/usr/bin/env bash
# Image benchmark. Prints figures; asserts nothing. Run after scripts/setup.sh (which
# builds the boxlite/python root tree this pushes to a local registry).
#
#   bench/images.sh [RUNS]     (default 5)
#
# Figures, each as median and spread (min-max):
#   1. pull + root filesystem build of boxlite/python (one gzip layer; set
#      BENCH_LAYER_COMPRESSION=none|zstd for others) from a registry on 127.0.0.1,
#      cold (a fresh store each run), and the build's share of it
#   2. the same pull again, warm (blobs and base cached; the manifest is re-checked)
#   3. `skopeo copy` of the same image to a directory, and the cold pull's ratio to it
#   4. time to first exec for a new box on the cached image (create, boot, exec `true`)
set -euo pipefail
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh" "${1:-5}"

root=$REPO/build/cache/images/python-root
[[ -d $root ]] || { echo "no $root: run scripts/setup.sh first" >&2; exit 1; }
command -v skopeo >/dev/null || apt-get install -y -qq --no-install-recommends skopeo >/dev/null
scratch=$(mktemp -d /tmp/boxlite-bench-images.XXXXXX)
tar --numeric-owner --xattrs --xattrs-include='*' -C "$root" -cf "$scratch/python.tar" .
echo "layer: $(du -m "$scratch/python.tar" | cut -f1) MB uncompressed"
cargo run -q --release --locked -p boxlite --example bench_images -- "$RUNS" "$scratch/python.tar"
rm -rf "$scratch" "$BOXLITE_HOME"
