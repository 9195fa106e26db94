#!/usr/bin/env bash
# Fetches buf/validate/validate.proto from the protovalidate source distribution on PyPI,
# pinned by version and sha256, into third_party/. No wheel ships the .proto; the 1.2.0 sdist is
# pure Python, so pip can fetch it without building anything.
set -euo pipefail
VERSION=1.2.0
SHA256=4cb9a5065f32abc9baf2cf25c5bd09a139f7dffb7b8692f636a8e3e6883bb9a2
MEMBER="protovalidate-${VERSION}/upstream/proto/buf/validate/validate.proto"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/third_party/buf/validate/validate.proto"
PY="${PYTHON:-python3}"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip download --quiet --no-deps --no-binary protovalidate "protovalidate==${VERSION}" -d "$tmp"
sdist="$tmp/protovalidate-${VERSION}.tar.gz"
echo "${SHA256}  ${sdist}" | sha256sum --check --quiet
tar xzf "$sdist" -C "$tmp" "$MEMBER"
mkdir -p "$(dirname "$DEST")"
cp "$tmp/$MEMBER" "$DEST"
echo "vendored validate.proto from protovalidate ${VERSION} -> third_party/buf/validate/validate.proto"
