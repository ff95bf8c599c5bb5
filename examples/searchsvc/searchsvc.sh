#!/bin/sh
# Entry point of the searchsvc image: busybox httpd on :8080 serving /www (CGI in /www/cgi-bin).
# httpd runs as a child so that this shell, PID 1, can turn the stop signal into a clean exit
# (PID 1 ignores SIGTERM unless it installs a handler), keeping rolling updates fast.
PORT="${PORT:-8080}"
echo "searchsvc: listening on :$PORT as $(hostname)"
httpd -f -p "$PORT" -h /www &
child=$!
trap 'kill "$child" 2>/dev/null; echo "searchsvc: stopping"; exit 0' TERM INT
wait "$child"
