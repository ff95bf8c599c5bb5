#!/usr/bin/env bash
# Build the demo "search" service image, searchsvc:v1.0, into docker and/or podman.
#
# No registry is reachable on our machines, so the image is a plain folder holding Debian's
# static busybox (package busybox-static), imported with `docker import` / `podman import`.
# The service answers HTTP on :8080 with the container's hostname, which is what a routing or
# load-balancing test needs to see which replica answered.
#
# Usage: examples/searchsvc/build.sh [docker|podman|all]     (default: all)
# Idempotent and fast: the rootfs tarball is reproducible, its sha256 is recorded as an image
# label, and an engine that already holds an image with that label under the name is skipped.
set -euo pipefail

ENGINES="${1:-all}"
IMAGE="${SEARCHSVC_IMAGE:-searchsvc:v1.0}"
BUSYBOX="${BUSYBOX:-/bin/busybox}"
HERE="$(cd "$(dirname "$0")" && pwd)"

case "$ENGINES" in
  docker | podman) ;;
  all) ENGINES="docker podman" ;;
  *) echo "build.sh: unknown engine '$ENGINES' (expected docker, podman or all)" >&2; exit 2 ;;
esac
# Capture the list before searching it: `busybox --list | grep -q` under pipefail fails at random
# (grep exits at the match, busybox gets SIGPIPE while still writing; issue 19).
applets="$("$BUSYBOX" --list 2>/dev/null || true)"
if ! grep -qx httpd <<<"$applets"; then
  echo "build.sh: $BUSYBOX is not a busybox with httpd (apt-get install busybox-static)" >&2
  exit 1
fi

WORK="$(mktemp -d /tmp/searchsvc-build.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
ROOT="$WORK/rootfs"

# --- rootfs: busybox, one symlink per applet, the minimum of /etc, the service files
mkdir -p "$ROOT"/{bin,etc,tmp,proc,sys,dev,root,www/cgi-bin}
chmod 1777 "$ROOT/tmp"
cp "$BUSYBOX" "$ROOT/bin/busybox"
for applet in $("$ROOT/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$ROOT/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$ROOT/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$ROOT/etc/group"
install -m 0755 "$HERE/searchsvc.sh" "$ROOT/bin/searchsvc"
install -m 0755 "$HERE/search.cgi" "$ROOT/www/cgi-bin/search"
# busybox httpd runs /cgi-bin/index.cgi for a directory URL without index.html, so "/" answers too.
install -m 0755 "$HERE/search.cgi" "$ROOT/www/cgi-bin/index.cgi"

TAR="$WORK/rootfs.tar"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$ROOT" -cf "$TAR" .
SUM="$(sha256sum "$TAR" | cut -c1-16)"

for engine in $ENGINES; do
  current="$("$engine" image inspect --format '{{index .Config.Labels "io.shoal.rootfs"}}' "$IMAGE" 2>/dev/null || true)"
  if [ "$current" = "$SUM" ]; then
    echo "$engine: $IMAGE is up to date ($SUM)"
    continue
  fi
  quiet=(); [ "$engine" = podman ] && quiet=(--quiet)
  "$engine" import "${quiet[@]}" \
    --change 'CMD ["/bin/searchsvc"]' \
    --change 'EXPOSE 8080/tcp' \
    --change "LABEL io.shoal.rootfs=$SUM" \
    "$TAR" "$IMAGE" >/dev/null
  echo "$engine: imported $IMAGE ($SUM)"
done
