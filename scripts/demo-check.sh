#!/usr/bin/env bash
# Check the README's main command end to end on one runtime, as CI does (.ci/run, issue 19):
#   1. scripts/demo.sh; `search` reaches 4/4; every replica answers HTTP on :8080 at its
#      container address (found through the engine by the task label), each with its own name;
#      with DEMO_CHECK_PUBLISHED=1 (CI sets it), the published port 127.0.0.1:8080 answers 20
#      requests from more than one replica (the routing mesh);
#   2. scripts/demo.sh down; nothing of the demo is left: no daemon process, no container of its
#      node in docker or podman, no network device or nftables table of its node, no state dir,
#      no socket, nothing listening on its port;
#   3. the same again with the daemon killed (SIGKILL) before `down`: `down` must still remove
#      the containers (through the engine, by the node label), the node's network devices and
#      rules (it restarts the daemon to leave the swarm) and the state.
# With --stress N it runs N plain up/down cycles instead and prints how long one takes
# (up, down and the whole cycle: median, min, max).
#
# Usage: scripts/demo-check.sh [--stress N] docker|podman
# Environment: DEMO_DIR (default /tmp/shoal-demo-check), DEMO_PORT (default 2377).
# Any problem: a line naming the runtime, the cycle and what is wrong; exit 1; the demo removed.
set -euo pipefail

usage() {
  echo "demo-check.sh: $1 (usage: scripts/demo-check.sh [--stress N] docker|podman)" >&2
  exit 2
}
CYCLES=0
while [ $# -gt 0 ]; do
  case "$1" in
    --stress)
      [ $# -ge 2 ] && [[ "$2" =~ ^[1-9][0-9]*$ ]] || usage "--stress needs a number of cycles"
      CYCLES="$2"
      shift 2
      ;;
    docker | podman)
      RUNTIME="$1"
      shift
      ;;
    *) usage "unknown argument '$1'" ;;
  esac
done
[ -n "${RUNTIME:-}" ] || usage "which runtime?"
export RUNTIME
export DEMO_DIR="${DEMO_DIR:-/tmp/shoal-demo-check}"
export DEMO_PORT="${DEMO_PORT:-2377}"
# shellcheck source=scripts/demo-lib.sh
source "$(dirname "$0")/demo-lib.sh"
cd "$REPO"
demo_check_settings

REPLICAS_SECONDS=60 # search at 4/4 after demo.sh returned (it normally already is)
CYCLE=""
OUT="$(mktemp /tmp/shoal-demo-check.XXXXXX)"   # demo.sh's output, shown when something fails
TIMES="$(mktemp /tmp/shoal-demo-times.XXXXXX)" # --stress: "up down" seconds, one line a cycle

fail() {
  echo "demo-check.sh: $RUNTIME${CYCLE:+ cycle $CYCLE}: $*" >&2
  if [ -s "$OUT" ]; then
    echo "--- scripts/demo.sh output (last 40 lines)" >&2
    tail -n 40 "$OUT" >&2
  fi
  if [ -f "$DEMO_DIR/daemon.log" ]; then
    echo "--- $DEMO_DIR/daemon.log (last 40 lines)" >&2
    tail -n 40 "$DEMO_DIR/daemon.log" >&2
  fi
  exit 1
}

cleanup() { # whatever happened, leave no demo behind (CI machines are reused by the next step)
  local code=$?
  scripts/demo.sh down >/dev/null 2>&1 || echo "demo-check.sh: scripts/demo.sh down failed while cleaning up" >&2
  rm -f "$OUT" "$TIMES"
  exit "$code"
}
trap cleanup EXIT

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

replicas_ready() {
  local name replicas
  while read -r name replicas; do
    [ "$name" = "$DEMO_SERVICE" ] && [ "$replicas" = "$DEMO_REPLICAS/$DEMO_REPLICAS" ] && return 0
  done < <("${SHOAL[@]}" service ls --format '{{.Name}} {{.Replicas}}' 2>/dev/null || true)
  return 1
}

check_up() { # search at 4/4 and every replica answering at its container address
  local deadline=$((SECONDS + REPLICAS_SECONDS))
  until replicas_ready; do
    [ "$SECONDS" -lt "$deadline" ] || fail "$DEMO_SERVICE did not reach $DEMO_REPLICAS/$DEMO_REPLICAS in ${REPLICAS_SECONDS}s"
    sleep 0.2
  done
  local tasks task address answer names=()
  mapfile -t tasks < <(running_tasks)
  [ "${#tasks[@]}" -eq "$DEMO_REPLICAS" ] ||
    fail "$DEMO_SERVICE shows $DEMO_REPLICAS/$DEMO_REPLICAS but ${#tasks[@]} tasks are running: ${tasks[*]}"
  for task in "${tasks[@]}"; do
    address="$(task_address "$task")"
    [ -n "$address" ] || fail "task $task has no running container with an address in $RUNTIME"
    answer="$(curl -fsS --max-time 5 --retry 5 --retry-connrefused --retry-delay 1 \
      "http://$address:$DEMO_HTTP_PORT/" 2>&1)" || fail "task $task at $address:$DEMO_HTTP_PORT: $answer"
    [[ "$answer" == "search result from "* ]] || fail "task $task at $address answered '$answer'"
    names+=("${answer#search result from }")
  done
  local distinct
  distinct="$(printf '%s\n' "${names[@]}" | sort -u | wc -l)"
  [ "$distinct" -eq "$DEMO_REPLICAS" ] || fail "the replicas answered with $distinct distinct names: ${names[*]}"
  check_published_port
}

# PUBLISHED PORT CHECK (DEMO_CHECK_PUBLISHED=1; .ci/run sets it): demo.sh creates search with
# `-p 8080:8080`, and 127.0.0.1:8080 must be answered by more than one replica.
check_published_port() {
  [ "${DEMO_CHECK_PUBLISHED:-0}" = 1 ] || return 0
  local attempt answer seen=()
  for attempt in $(seq 1 20); do
    answer="$(curl -fsS --max-time 5 "http://127.0.0.1:$DEMO_HTTP_PORT/" 2>&1)" ||
      fail "127.0.0.1:$DEMO_HTTP_PORT (attempt $attempt): $answer"
    seen+=("${answer#search result from }")
  done
  local distinct
  distinct="$(printf '%s\n' "${seen[@]}" | sort -u | wc -l)"
  [ "$distinct" -gt 1 ] || fail "20 requests to 127.0.0.1:$DEMO_HTTP_PORT all reached one replica (${seen[0]})"
}

check_no_network_left() { # check_no_network_left NODE_ID: none of the node's devices or rules
  # The network plugin names everything it makes after a digest of the node ID (devices
  # sh[bvep]<digest>..., the nftables table shoal_<digest>), so other nodes' are not counted.
  local digest left
  digest="$(printf '%s' "$1" | sha256sum | cut -c1-5)"
  left="$(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep -E "^sh[bvep]$digest" || true)"
  [ -z "$left" ] || fail "network devices of the demo node left after down: $left"
  left="$(nft list tables 2>/dev/null | grep -E "shoal_$digest\$" || true)"
  [ -z "$left" ] || fail "nftables table of the demo node left after down: $left"
}

engine_answers() { "$1" info >/dev/null 2>&1; }

check_down() { # check_down NODE_ID PID: nothing of the demo is left
  local node="$1" pid="$2" engine left
  if [ -n "$pid" ] && [ -e "/proc/$pid" ]; then
    [[ "$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" || true)" != *"$DEMO_DIR/state"* ]] ||
      fail "the demo daemon (pid $pid) still runs after down"
  fi
  left="$(pgrep -af -- "--state-dir $DEMO_DIR/state" || true)"
  [ -z "$left" ] || fail "a shoal daemon on $DEMO_DIR/state still runs after down: $left"
  for engine in docker podman; do
    if ! engine_answers "$engine"; then
      [ "$engine" != "$RUNTIME" ] || fail "$engine does not answer, so its containers cannot be checked"
      echo "demo-check.sh: $engine does not answer; not checked for leftovers" >&2
      continue
    fi
    left="$(engine_containers "$engine" "$node")"
    [ -z "$left" ] || fail "containers of the demo node $node left in $engine after down: $left"
  done
  check_no_network_left "$node"
  [ ! -e "$SOCK" ] || fail "socket $SOCK left after down"
  [ ! -e "$DEMO_DIR" ] || fail "state dir $DEMO_DIR left after down"
  left="$(ss -Hltn "sport = :$DEMO_PORT")"
  [ -z "$left" ] || fail "127.0.0.1:$DEMO_PORT still has a listener after down: $left"
}

UP_TIME=0
DOWN_TIME=0
cycle() { # cycle NUMBER plain|daemon-killed
  CYCLE="$1"
  local mode="$2" start node pid
  start="$(now)"
  scripts/demo.sh >"$OUT" 2>&1 || fail "scripts/demo.sh failed"
  UP_TIME="$(elapsed "$start" "$(now)")"
  check_up
  node="$(demo_node_id)"
  pid="$(demo_daemon_pid)"
  [ -n "$node" ] && [ -n "$pid" ] || fail "no node ID or daemon PID in $DEMO_DIR after the demo started"
  if [ "$mode" = daemon-killed ]; then
    kill -KILL -- "-$pid"
    while [ -n "$(demo_daemon_pid)" ]; do sleep 0.1; done # SIGKILL cannot be ignored
  fi
  start="$(now)"
  scripts/demo.sh down >"$OUT" 2>&1 || fail "scripts/demo.sh down failed"
  DOWN_TIME="$(elapsed "$start" "$(now)")"
  check_down "$node" "$pid"
  : >"$OUT"
}

if [ "$CYCLES" -eq 0 ]; then
  cycle 1 plain
  echo "demo-check: $RUNTIME: search 4/4, every replica answered, down left nothing (up ${UP_TIME}s, down ${DOWN_TIME}s)"
  cycle 2 daemon-killed
  echo "demo-check: $RUNTIME: down after the daemon was killed left nothing"
  exit 0
fi

for n in $(seq 1 "$CYCLES"); do
  cycle "$n" plain
  echo "$UP_TIME $DOWN_TIME" >>"$TIMES"
  echo "demo-check: $RUNTIME: cycle $n/$CYCLES passed (up ${UP_TIME}s, down ${DOWN_TIME}s)"
done
CYCLE=""
awk -v runtime="$RUNTIME" '
  function stats(values, count,   i, j, t, median) {
    for (i = 2; i <= count; i++) for (j = i; j > 1 && values[j - 1] > values[j]; j--) {
      t = values[j]; values[j] = values[j - 1]; values[j - 1] = t
    }
    median = count % 2 ? values[(count + 1) / 2] : (values[count / 2] + values[count / 2 + 1]) / 2
    return sprintf("median %.1f s, min %.1f s, max %.1f s", median, values[1], values[count])
  }
  { up[NR] = $1; down[NR] = $2; whole[NR] = $1 + $2 }
  END {
    printf "demo-check: %s: %d up/down cycles passed\n", runtime, NR
    printf "  up (scripts/demo.sh):        %s\n", stats(up, NR)
    printf "  down (scripts/demo.sh down): %s\n", stats(down, NR)
    printf "  whole cycle:                 %s\n", stats(whole, NR)
  }' "$TIMES"
