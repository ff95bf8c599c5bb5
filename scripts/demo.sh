#!/usr/bin/env bash
# The main job: a local one-node shoal cluster running the demo "search" service.
#   scripts/demo.sh          install what is missing, start the engine, build searchsvc:v1.0,
#                            start a shoal daemon, init the swarm, run search with 4 replicas
#                            published on port 8080 (the routing mesh), print node ls, service ls
#                            and service ps, then curl 127.0.0.1:8080 a few times: different
#                            replicas answer
#   scripts/demo.sh down     remove the demo's service, stop its daemon, remove every container
#                            it left (also when the daemon died) and its state dir
# Environment: RUNTIME=docker|podman (default docker), DEMO_DIR (default /tmp/shoal-demo),
# DEMO_PORT (default 2377: the daemon listens on 127.0.0.1:$DEMO_PORT).
# scripts/demo-check.sh runs this up and down and checks both (CI does, on both runtimes).
set -euo pipefail
# shellcheck source=scripts/demo-lib.sh
source "$(dirname "$0")/demo-lib.sh"
cd "$REPO"
SHOAL=(.venv/bin/shoal) # relative, so the commands traced below read as a user would type them

DAEMON_START_SECONDS=60 # a loaded 2-core machine needs far less; it only bounds a hang
SERVICE_GONE_SECONDS=20 # how long the agent gets to stop and remove the containers itself
DAEMON_STOP_SECONDS=15  # SIGTERM, then SIGKILL

wait_for() { # wait_for SECONDS COMMAND...: true once COMMAND succeeds, false at the deadline
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

no_containers_left() { [ -z "$(engine_containers "$1" "$2" 2>/dev/null || echo unknown)" ]; }
daemon_gone() { [ -z "$(demo_daemon_pid)" ]; }
daemon_answers() { "${SHOAL[@]}" info >/dev/null 2>&1; }

down() {
  if [ ! -e "$DEMO_DIR" ]; then
    return 0
  fi
  if [ ! -e "$MARKER" ] && [ ! -e "$PIDFILE" ]; then
    demo_fail "$DEMO_DIR is not a demo folder (no .shoal-demo in it); set DEMO_DIR to the folder the demo runs in"
  fi
  local engine node pid
  engine="$(cat "$DEMO_DIR/runtime" 2>/dev/null || echo "$RUNTIME")"
  node="$(demo_node_id)"
  pid="$(demo_daemon_pid)"
  # 1. The daemon, if alive, removes the service: its agent stops and removes the containers.
  if [ -n "$pid" ] && [ -S "$SOCK" ] && daemon_answers; then
    if "${SHOAL[@]}" service rm "$DEMO_SERVICE" >/dev/null 2>&1; then
      wait_for "$SERVICE_GONE_SECONDS" no_containers_left "$engine" "$node" ||
        echo "demo.sh: the daemon left containers after service rm; removing them through $engine" >&2
    fi
  elif [ -n "$node" ] && [ -z "$pid" ] && [ -d "$DEMO_DIR/state" ]; then
    # The daemon died: the routing mesh's devices and rules it made on this host are still
    # there (a stopped daemon keeps them for its restart). Start it again to leave cleanly.
    start_daemon_again && pid="$(demo_daemon_pid)"
  fi
  # The node leaves the swarm: the network plugin removes its devices and nftables rules.
  if [ -n "$pid" ] && [ -S "$SOCK" ] && daemon_answers; then
    "${SHOAL[@]}" swarm leave --force >/dev/null 2>&1 ||
      echo "demo.sh: swarm leave failed; the routing mesh's devices (sh*) may remain" >&2
  fi
  # 2. Stop the daemon (its own process group: setsid at start).
  if [ -n "$pid" ]; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    if ! wait_for "$DAEMON_STOP_SECONDS" daemon_gone; then
      echo "demo.sh: daemon $pid ignored SIGTERM for ${DAEMON_STOP_SECONDS}s; killing it" >&2
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
      wait_for 5 daemon_gone || demo_fail "daemon $pid survives SIGKILL; stop it and run scripts/demo.sh down again"
    fi
  fi
  # 3. Whatever the daemon could not remove (it died, or the engine was slow): by the node label.
  local left
  if [ -n "$node" ]; then
    left="$(engine_containers "$engine" "$node" 2>/dev/null)" ||
      demo_fail "$engine does not answer, so the demo's containers (label io.shoal.node.id=$node) may remain; start it (scripts/start-engines.sh $engine) and run scripts/demo.sh down again"
    if [ -n "$left" ]; then
      # shellcheck disable=SC2086 # one ID per word
      "$engine" rm -f $left >/dev/null
    fi
  fi
  rm -rf "$DEMO_DIR"
}

start_daemon_again() { # the dead demo daemon, restarted on its state dir; false if it fails
  setsid nohup "${SHOAL[@]}" daemon --state-dir "$DEMO_DIR/state" --socket "$SOCK" \
    --listen-addr "127.0.0.1:$DEMO_PORT" --plugin "runtime=$(cat "$DEMO_DIR/runtime" 2>/dev/null || echo "$RUNTIME")" \
    >>"$DEMO_DIR/daemon.log" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  wait_for "$DAEMON_START_SECONDS" daemon_answers
}

port_free() { # nothing listens on 127.0.0.1:$DEMO_PORT (or on every address at that port)
  local listeners
  listeners="$(ss -Hltn "sport = :$DEMO_PORT")"
  [ -z "$listeners" ]
}

start_daemon() {
  # A fresh folder only root can enter: DEMO_DIR is a predictable name under /tmp, so a folder
  # someone else made there (between `down` and here) must not receive the cluster's keys.
  mkdir -p -- "$(dirname "$DEMO_DIR")"
  mkdir -m 0700 -- "$DEMO_DIR" 2>/dev/null ||
    demo_fail "$DEMO_DIR was created by someone else while the demo started; remove it or choose another DEMO_DIR"
  touch "$MARKER"
  echo "$RUNTIME" >"$DEMO_DIR/runtime"
  setsid nohup "${SHOAL[@]}" daemon --state-dir "$DEMO_DIR/state" --socket "$SOCK" \
    --listen-addr "127.0.0.1:$DEMO_PORT" --plugin "runtime=$RUNTIME" >"$DEMO_DIR/daemon.log" 2>&1 </dev/null &
  echo $! >"$PIDFILE"
  local deadline=$((SECONDS + DAEMON_START_SECONDS))
  until daemon_answers; do
    if daemon_gone; then
      cat "$DEMO_DIR/daemon.log" >&2
      demo_fail "the shoal daemon exited at start (its log is above; it stays in $DEMO_DIR/daemon.log)"
    fi
    [ "$SECONDS" -lt "$deadline" ] ||
      demo_fail "the shoal daemon did not answer on $SOCK within ${DAEMON_START_SECONDS}s; see $DEMO_DIR/daemon.log"
    sleep 0.1
  done
}

ANSWERS=8 # requests to the published port at the end: enough to see several replicas answer

show_answers() { # the demo's last lines: the published port answered by different replicas
  local attempt
  for attempt in $(seq 1 "$ANSWERS"); do
    echo "+ curl http://127.0.0.1:$DEMO_HTTP_PORT/   # $attempt/$ANSWERS"
    curl -fsS --max-time 5 --retry 5 --retry-connrefused --retry-delay 1 "http://127.0.0.1:$DEMO_HTTP_PORT/" ||
      demo_fail "the published port 127.0.0.1:$DEMO_HTTP_PORT did not answer; see $DEMO_DIR/daemon.log"
  done
}

demo_check_settings
case "${1:-up}" in
  down)
    down
    echo "demo stopped"
    exit 0
    ;;
  up) ;;
  *) demo_fail "unknown command '$1' (use: scripts/demo.sh [up|down])" ;;
esac

scripts/install-deps.sh
scripts/start-engines.sh "$RUNTIME"
examples/searchsvc/build.sh "$RUNTIME"
down
port_free || demo_fail "127.0.0.1:$DEMO_PORT is in use; stop what listens there or choose another port with DEMO_PORT=..."
start_daemon

set -x
"${SHOAL[@]}" swarm init --advertise-addr "127.0.0.1:$DEMO_PORT"
"${SHOAL[@]}" service create --name "$DEMO_SERVICE" --replicas "$DEMO_REPLICAS" \
  -p "$DEMO_HTTP_PORT:$DEMO_HTTP_PORT" "$DEMO_IMAGE"
"${SHOAL[@]}" node ls
"${SHOAL[@]}" service ls
"${SHOAL[@]}" service ps "$DEMO_SERVICE"
{ set +x; } 2>/dev/null
show_answers
echo
echo "The cluster keeps running: SHOAL_HOST=$SHOAL_HOST .venv/bin/shoal service ls"
echo "Stop it with: scripts/demo.sh down"
