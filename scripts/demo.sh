#!/usr/bin/env bash
# The main job: a local one-node shoal cluster running the demo "search" service.
#   scripts/demo.sh          install what is missing, start the engines, build searchsvc:v1.0,
#                            start a shoal daemon, init the swarm, run search with 4 replicas
#                            and print node ls, service ls and service ps
#   scripts/demo.sh down     stop the demo daemon and remove its service and state
# Environment: RUNTIME=docker|podman (default docker), DEMO_DIR (default /tmp/shoal-demo).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"
RUNTIME="${RUNTIME:-docker}"
DEMO_DIR="${DEMO_DIR:-/tmp/shoal-demo}"
SOCK="$DEMO_DIR/shoal.sock"
export SHOAL_HOST="unix://$SOCK"
SHOAL=(.venv/bin/shoal)

down() {
  if [ -S "$SOCK" ] && "${SHOAL[@]}" service ls -q >/dev/null 2>&1; then
    "${SHOAL[@]}" service rm search >/dev/null 2>&1 || true
    for _ in $(seq 1 150); do  # give the agent up to 15 s to stop and remove the containers
      [ -z "$("${SHOAL[@]}" service ps search -q 2>/dev/null)" ] && break
      sleep 0.1
    done
  fi
  if [ -f "$DEMO_DIR/daemon.pid" ]; then
    kill "$(cat "$DEMO_DIR/daemon.pid")" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$(cat "$DEMO_DIR/daemon.pid")" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$DEMO_DIR"
}

if [ "${1:-up}" = "down" ]; then
  down
  echo "demo stopped"
  exit 0
fi

scripts/install-deps.sh
scripts/start-engines.sh "$RUNTIME"
examples/searchsvc/build.sh "$RUNTIME"
down
mkdir -p "$DEMO_DIR"
setsid nohup "${SHOAL[@]}" daemon --state-dir "$DEMO_DIR/state" --socket "$SOCK" \
  --listen-addr 127.0.0.1:2377 --plugin "runtime=$RUNTIME" >"$DEMO_DIR/daemon.log" 2>&1 </dev/null &
echo $! >"$DEMO_DIR/daemon.pid"
for _ in $(seq 1 300); do
  "${SHOAL[@]}" info >/dev/null 2>&1 && break
  kill -0 "$(cat "$DEMO_DIR/daemon.pid")" 2>/dev/null || { cat "$DEMO_DIR/daemon.log" >&2; exit 1; }
  sleep 0.1
done

set -x
"${SHOAL[@]}" swarm init --advertise-addr 127.0.0.1:2377
"${SHOAL[@]}" service create --name search --replicas 4 searchsvc:v1.0
"${SHOAL[@]}" node ls
"${SHOAL[@]}" service ls
"${SHOAL[@]}" service ps search
set +x
echo
echo "The cluster keeps running: SHOAL_HOST=$SHOAL_HOST .venv/bin/shoal service ls"
echo "Stop it with: scripts/demo.sh down"
