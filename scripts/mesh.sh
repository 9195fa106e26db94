#!/usr/bin/env bash
# Starts content-svc and cj-svc on the embedded defaults (SQLite, a storage folder) under $MESH_VAR.
# Source it: defines CONTENT and CJ (their addresses) and stops both services on exit.
set -euo pipefail
BIN="${BIN:-.venv/bin}"
MESH_VAR="${MESH_VAR:-var/mesh}"
CONTENT_LISTEN="${CONTENT_LISTEN:-127.0.0.1:0}"
CJ_LISTEN="${CJ_LISTEN:-127.0.0.1:0}"
mkdir -p "$MESH_VAR"
rm -f "$MESH_VAR/content.json" "$MESH_VAR/cj.json"

wait_ready() {  # file pid name
  for _ in $(seq 1 600); do
    [ -s "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || { echo "$3 did not start; see $MESH_VAR/$3.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "$3 did not start within 60 s; see $MESH_VAR/$3.log" >&2; exit 1
}
address() { "$BIN/python" -c 'import json,sys; print(json.load(open(sys.argv[1]))["address"])' "$1"; }

"$BIN/content-svc" serve --listen "$CONTENT_LISTEN" --migrate --database-url "sqlite:///$MESH_VAR/content.db" \
  --storage-dir "$MESH_VAR/blobs" --ready-file "$MESH_VAR/content.json" 2>"$MESH_VAR/content-svc.log" &
CONTENT_PID=$!
trap 'kill $CONTENT_PID ${CJ_PID:-} 2>/dev/null || true; wait 2>/dev/null || true' EXIT
wait_ready "$MESH_VAR/content.json" $CONTENT_PID content-svc
CONTENT=$(address "$MESH_VAR/content.json")

"$BIN/cj-svc" serve --listen "$CJ_LISTEN" --migrate --database-url "sqlite:///$MESH_VAR/cj.db" \
  --content-address "$CONTENT" --ready-file "$MESH_VAR/cj.json" 2>"$MESH_VAR/cj-svc.log" &
CJ_PID=$!
wait_ready "$MESH_VAR/cj.json" $CJ_PID cj-svc
CJ=$(address "$MESH_VAR/cj.json")
set +euo pipefail
