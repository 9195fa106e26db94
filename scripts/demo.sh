#!/usr/bin/env bash
# The whole mesh on embedded defaults, an example ENG5 assessment end to end, then a clean stop.
set -euo pipefail
cd "$(dirname "$0")/.."
export MESH_VAR=var/demo
rm -rf "$MESH_VAR"
source scripts/mesh.sh
set -euo pipefail
echo "content-svc on $CONTENT, cj-svc on $CJ (offline heuristic judge: text features, not an LLM)"
R=(".venv/bin/cj-runner" --content-address "$CONTENT" --cj-address "$CJ")
"${R[@]}" admin create-assignment --assignment-id eng5-demo --grade-scale eng5_np_legacy_9_step --course-code ENG5 \
  --prompt examples/eng5/prompt.md --rubric examples/eng5/rubric.md --cache-dir "$MESH_VAR/cache" >/dev/null
"${R[@]}" admin register-anchors examples/eng5 --assignment-id eng5-demo --cache-dir "$MESH_VAR/cache" >/dev/null
echo "assignment eng5-demo created with 12 anchors on eng5_np_legacy_9_step"
# The offline judge costs nothing, so the demo asks for steadier scores than the service's default
# (SSR 0.95 instead of 0.9; the default budget of 12 judgements per essay caps it).
"${R[@]}" run examples/eng5 --assignment-id eng5-demo --label "ENG5 demo" --seed 1 --target-reliability 0.95 \
  --runs-dir "$MESH_VAR/runs" --cache-dir "$MESH_VAR/cache"
echo "report: $(ls -d "$MESH_VAR"/runs/*/)report.md"
