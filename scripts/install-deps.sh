#!/usr/bin/env bash
# Install everything shoal's demo and tests need on a fresh Debian 12 machine (run as root):
# the container engines and tools from Debian, then a virtualenv at .venv with shoal's
# distributions (core, every plugin, the third-party example) installed editable.
# Idempotent: a second run installs nothing new.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"

PACKAGES=(docker.io podman runc busybox-static curl iproute2 procps nftables iptables python3-venv python3-pip
          uidmap fuse-overlayfs golang-cfssl docker-registry etcd-server catatonit)
missing=()
for pkg in "${PACKAGES[@]}"; do
  # Captured, not piped into `grep -q`: under pipefail that races (issue 19).
  status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
  [[ "$status" == *"install ok installed"* ]] || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# What the virtualenv was built from: the pins, every distribution's metadata and this script.
# Sources are installed editable, so only these files can make a reinstall necessary; when the
# stamp matches, the pip steps (half a minute) are skipped and the demo starts at once.
STAMP=.venv/.shoal-deps
want="$(cat requirements-dev.txt scripts/install-deps.sh pyproject.toml core/pyproject.toml \
  plugins/*/pyproject.toml tests/thirdparty/shoal-scheduler-binpack/pyproject.toml | sha256sum)"
if [ -x .venv/bin/shoal ] && [ "$(cat "$STAMP" 2>/dev/null || true)" = "$want" ]; then
  echo "install-deps: ready (.venv, up to date)"
  exit 0
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -r requirements-dev.txt
editables=(-e core)
for plugin in plugins/*/; do editables+=(-e "$plugin"); done
editables+=(-e tests/thirdparty/shoal-scheduler-binpack -e .)
.venv/bin/python -m pip install -q --no-deps "${editables[@]}"
.venv/bin/python -m pip check >/dev/null || .venv/bin/python -m pip check
echo "$want" >"$STAMP"
echo "install-deps: ready (.venv)"
