#!/usr/bin/env bash
# `buf breaking` against the last commit when protos/ has uncommitted changes, else against the
# commit before HEAD; skipped (saying so) when there is no earlier commit with a buf.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
BUF=node_modules/.bin/buf
if ! git rev-parse --verify -q HEAD >/dev/null; then
  echo "buf breaking: no commit yet, nothing to compare against"; exit 0
fi
if [ -n "$(git status --porcelain -- protos)" ]; then against=HEAD; else against=HEAD~1; fi
if ! git cat-file -e "${against}:buf.yaml" 2>/dev/null; then
  echo "buf breaking: ${against} has no buf.yaml, nothing to compare against"; exit 0
fi
"$BUF" breaking --against ".git#ref=${against}"
echo "buf breaking: no breaking change against ${against}"
