#!/usr/bin/env bash
# Both services for interactive use, on $CONTENT (default 127.0.0.1:50051) and $CJ (default
# 127.0.0.1:50052), until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
export MESH_VAR=var/mesh CONTENT_LISTEN="${CONTENT:-127.0.0.1:50051}" CJ_LISTEN="${CJ:-127.0.0.1:50052}"
source scripts/mesh.sh
cat <<TEXT
content-svc: $CONTENT   cj-svc: $CJ   (data under $MESH_VAR; logs there too)
try:
  .venv/bin/grpcurl -plaintext $CJ list
  .venv/bin/grpcurl -plaintext $CJ huleedu.cj.v1.AdminService/ListGradeScales
  .venv/bin/cj-runner run examples/eng5
Ctrl-C stops both.
TEXT
wait
