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
# A commit that breaks the contract on purpose says why in a `Contract-Break:` trailer (with the
# removed numbers reserved in the .proto); its breaks are listed, and not failed, for that commit only.
if [ "$against" = HEAD~1 ]; then
  reason=$(git log -1 --format='%(trailers:key=Contract-Break,valueonly,separator=%x20)' HEAD)
  if [ -n "$reason" ]; then
    echo "buf breaking: HEAD breaks the contract on purpose: ${reason}"
    "$BUF" breaking --against ".git#ref=${against}" || true
    exit 0
  fi
fi
"$BUF" breaking --against ".git#ref=${against}"
echo "buf breaking: no breaking change against ${against}"
