#!/usr/bin/env bash
# Build the images our tests and demos use, into docker and/or podman, from Debian's static
# busybox (no registry is reachable):
#   searchsvc:v1.0                 the demo HTTP service (examples/searchsvc)
#   shoal-busybox:1, shoal-busybox:2   the plain busybox rootfs, default CMD `sleep 3600`; two
#                                  distinct image IDs so that update/rollback tests see a change
# Podman stores them as localhost/<name>; our podman runtime resolves the short names.
#
# Usage: scripts/build-test-images.sh [docker|podman|all]     (default: all)
# Idempotent: an image whose recorded rootfs digest and variant already match is left alone.
set -euo pipefail

ENGINES="${1:-all}"
BUSYBOX="${BUSYBOX:-/bin/busybox}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"

case "$ENGINES" in
  docker | podman) ;;
  all) ENGINES="docker podman" ;;
  *) echo "build-test-images.sh: unknown engine '$ENGINES' (expected docker, podman or all)" >&2; exit 2 ;;
esac
if [ ! -x "$BUSYBOX" ]; then
  echo "build-test-images.sh: $BUSYBOX not found (apt-get install busybox-static)" >&2
  exit 1
fi

WORK="$(mktemp -d /tmp/shoal-images.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
ROOT="$WORK/rootfs"
mkdir -p "$ROOT"/{bin,etc,tmp,proc,sys,dev,root}
chmod 1777 "$ROOT/tmp"
cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in $("$ROOT/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$ROOT/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$ROOT/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$ROOT/etc/group"
TAR="$WORK/rootfs.tar"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$ROOT" -cf "$TAR" .
SUM="$(sha256sum "$TAR" | cut -c1-16)"

for engine in $ENGINES; do
  for variant in 1 2; do
    image="shoal-busybox:$variant"
    # The variant label is what makes the two image IDs differ.
    want="$SUM-$variant"
    current="$("$engine" image inspect --format '{{index .Config.Labels "io.shoal.rootfs"}}' "$image" 2>/dev/null || true)"
    if [ "$current" = "$want" ]; then
      echo "$engine: $image is up to date"
      continue
    fi
    quiet=()
    [ "$engine" = podman ] && quiet=(--quiet)
    "$engine" import "${quiet[@]}" \
      --change 'CMD ["sleep", "3600"]' \
      --change "LABEL io.shoal.rootfs=$want" \
      "$TAR" "$image" >/dev/null
    echo "$engine: imported $image"
  done
  bash "$REPO/examples/searchsvc/build.sh" "$engine"
done
