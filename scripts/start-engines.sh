#!/usr/bin/env bash
# Start the container engines our tests need, in the background, unless they already answer:
#   dockerd                  on unix:///var/run/docker.sock
#   podman's REST service    on unix:///run/podman/podman.sock (runc + cgroupfs: crun fails here)
# Waits until both answer /_ping, up to $ENGINE_START_TIMEOUT seconds (default 60).
# Logs go to /tmp/shoal-dockerd.log and /tmp/shoal-podman-service.log. Installs nothing.
#
# Usage: scripts/start-engines.sh [docker|podman|all]     (default: all)
set -euo pipefail

ENGINES="${1:-all}"
DEADLINE=$((SECONDS + ${ENGINE_START_TIMEOUT:-60}))
DOCKER_SOCK=/var/run/docker.sock
PODMAN_SOCK=/run/podman/podman.sock

case "$ENGINES" in
  docker | podman) ;;
  all) ENGINES="docker podman" ;;
  *) echo "start-engines.sh: unknown engine '$ENGINES' (expected docker, podman or all)" >&2; exit 2 ;;
esac

answers() { # answers SOCKET: true when the engine behind SOCKET replies to /_ping
  [ -S "$1" ] && curl -fsS --max-time 2 --unix-socket "$1" http://engine/_ping >/dev/null 2>&1
}

wait_for() { # wait_for NAME SOCKET LOG
  until answers "$2"; do
    if [ "$SECONDS" -ge "$DEADLINE" ]; then
      echo "start-engines.sh: $1 did not answer on $2 in time; last lines of $3:" >&2
      tail -n 20 "$3" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
  echo "$1: answering on $2"
}

for engine in $ENGINES; do
  case "$engine" in
    docker)
      if ! answers "$DOCKER_SOCK"; then
        command -v dockerd >/dev/null || { echo "start-engines.sh: dockerd not installed (docker.io)" >&2; exit 1; }
        # --iptables=false: this machine's kernel has no usable iptables; the default bridge and
        # the userland proxy still serve published ports on loopback.
        setsid nohup dockerd --iptables=false >/tmp/shoal-dockerd.log 2>&1 </dev/null &
      fi
      ;;
    podman)
      if ! answers "$PODMAN_SOCK"; then
        command -v podman >/dev/null || { echo "start-engines.sh: podman not installed" >&2; exit 1; }
        mkdir -p "$(dirname "$PODMAN_SOCK")"
        rm -f "$PODMAN_SOCK"
        setsid nohup podman --runtime runc --cgroup-manager cgroupfs system service --time 0 \
          "unix://$PODMAN_SOCK" >/tmp/shoal-podman-service.log 2>&1 </dev/null &
      fi
      ;;
  esac
done
bridge_present() { # dockerd answering is not enough: its containers need the docker0 bridge
  # Another dockerd started with --bridge=none in this network namespace deletes docker0 at its
  # start; ours then answers /_ping but fails every container start with "could not find bridge".
  ip link show docker0 >/dev/null 2>&1 && return 0
  echo "start-engines.sh: dockerd answers but its bridge docker0 is gone (a second dockerd started" \
    "with --bridge=none outside its own network namespace deletes it); restart dockerd, or recreate it:" \
    "ip link add docker0 type bridge && ip addr add 172.17.0.1/16 dev docker0 && ip link set docker0 up" >&2
  exit 1
}

for engine in $ENGINES; do
  case "$engine" in
    docker) wait_for dockerd "$DOCKER_SOCK" /tmp/shoal-dockerd.log && bridge_present ;;
    podman) wait_for "podman service" "$PODMAN_SOCK" /tmp/shoal-podman-service.log ;;
  esac
done
