#!/usr/bin/env bash
# Print the path of a Go toolchain of version 1.22 or newer (what sdks/go/go.mod names):
# `go` on PATH, else Debian's backports package (/usr/lib/go-1.2x). Fails when there is
# none.
set -euo pipefail
for g in "$(command -v go || true)" /usr/lib/go-1.23/bin/go /usr/lib/go-1.22/bin/go; do
  [[ -n $g && -x $g ]] || continue
  v=$("$g" env GOVERSION 2>/dev/null) || continue
  v=${v#go}
  major=${v%%.*}
  rest=${v#*.}
  minor=${rest%%.*}
  if (( major > 1 || (major == 1 && minor >= 22) )); then
    echo "$g"
    exit 0
  fi
done
exit 1
