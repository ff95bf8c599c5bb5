#!/bin/sh
# Answer every request with the container's hostname, so a caller can tell replicas apart.
printf 'Content-Type: text/plain\r\n\r\n'
if [ -n "$QUERY_STRING" ]; then
  echo "search result from $(hostname) for $QUERY_STRING"
else
  echo "search result from $(hostname)"
fi
