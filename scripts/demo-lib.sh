# Shared by scripts/demo.sh and scripts/demo-check.sh (sourced, not run): where the demo lives
# and how to find its containers through the engine, so that the demo, its `down` and its CI
# check agree on every name.
# Environment: RUNTIME=docker|podman (default docker), DEMO_DIR (default /tmp/shoal-demo),
# DEMO_PORT (default 2377; the daemon listens on 127.0.0.1:$DEMO_PORT).
# The callers run under `set -euo pipefail`; set here too so that scripts/check-pipefail.py
# reads this file with the options it runs under.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUNTIME="${RUNTIME:-docker}"
DEMO_DIR="${DEMO_DIR:-/tmp/shoal-demo}"
DEMO_PORT="${DEMO_PORT:-2377}"
DEMO_SERVICE=search
DEMO_REPLICAS=4
DEMO_IMAGE=searchsvc:v1.0
DEMO_HTTP_PORT=8080
SOCK="$DEMO_DIR/shoal.sock"
PIDFILE="$DEMO_DIR/daemon.pid"
MARKER="$DEMO_DIR/.shoal-demo" # proves the folder is the demo's before `down` deletes it
export SHOAL_HOST="unix://$SOCK"
SHOAL=("$REPO/.venv/bin/shoal")

demo_fail() { # demo_fail MESSAGE: one line on stderr naming the script, exit 1
  echo "$(basename "$0"): $*" >&2
  exit 1
}

demo_check_settings() { # bad settings are one clear line each, before anything changes
  case "$RUNTIME" in
    docker | podman) ;;
    *) demo_fail "RUNTIME='$RUNTIME' is not a runtime (use RUNTIME=docker or RUNTIME=podman)" ;;
  esac
  [[ "$DEMO_PORT" =~ ^[0-9]+$ ]] && [ "$DEMO_PORT" -ge 1 ] && [ "$DEMO_PORT" -le 65535 ] ||
    demo_fail "DEMO_PORT='$DEMO_PORT' is not a TCP port (use a number from 1 to 65535)"
  case "$DEMO_DIR" in
    /?*) ;;
    *) demo_fail "DEMO_DIR='$DEMO_DIR' must be an absolute path other than / (e.g. /tmp/shoal-demo)" ;;
  esac
}

demo_node_id() { # the demo node's ID, read from its state dir (works when the daemon is dead)
  local state="$DEMO_DIR/state/state.json"
  [ -f "$state" ] || return 0
  "$REPO/.venv/bin/python" -c 'import json,sys; print(json.load(open(sys.argv[1])).get("node_id", ""))' "$state"
}

demo_daemon_pid() { # the recorded daemon PID while that process is still our daemon, else nothing
  local pid cmdline
  pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  # A PID is reused after its process exits: only a process running on our state dir is ours.
  cmdline="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" || true)"
  if [[ "$cmdline" == *" daemon "*"--state-dir $DEMO_DIR/state "* ]]; then echo "$pid"; fi
}

engine_containers() { # engine_containers ENGINE NODE_ID: IDs of every container of that node
  [ -n "$2" ] || return 0
  "$1" ps -aq --filter "label=io.shoal.node.id=$2"
}

task_address() { # task_address TASK_ID: the IP address of the task's running container
  local container addresses first
  container="$("$RUNTIME" ps -q --filter "label=io.shoal.task.id=$1")"
  [ -n "$container" ] || return 0
  addresses="$("$RUNTIME" inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$container")"
  read -r first _ <<<"$addresses" || true
  echo "$first"
}

running_tasks() { # the full IDs of the demo service's tasks that are running now
  local id desired current
  while read -r id desired current _; do
    [ "$desired" = Running ] && [ "$current" = Running ] && echo "$id"
  done < <("${SHOAL[@]}" service ps "$DEMO_SERVICE" --no-trunc --format '{{.ID}} {{.DesiredState}} {{.CurrentState}}')
  return 0
}
