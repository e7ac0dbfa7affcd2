#!/usr/bin/env bash
# Bring onnxruntime-web (the in-page runtime of the demo) from the npm registry
# into the package, which serves it itself (never a CDN). Idempotent.
# Only the WASM build is kept: its ES module, the WASM glue and binary, and the
# package.json that names its version and MIT license.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${ORT_WEB_VERSION:-1.30.0}"
DEST=keyboard_fl/demo/static/vendor/onnxruntime-web
FILES=(ort.wasm.min.mjs ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm)
present() {
  [ -f "$DEST/package.json" ] && grep -q "\"version\": \"$VERSION\"" "$DEST/package.json" || return 1
  for f in "${FILES[@]}" LICENSE ort-wasm-simd-threaded.wasm.gz; do [ -s "$DEST/$f" ] || return 1; done
}
if present; then exit 0; fi
command -v npm >/dev/null || { echo "error: npm is needed to fetch onnxruntime-web (apt-get install npm)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "onnxruntime-web@$VERSION" >/dev/null && tar xzf "onnxruntime-web-$VERSION.tgz")
mkdir -p "$DEST"
for f in "${FILES[@]}"; do cp "$tmp/package/dist/$f" "$DEST/$f"; done
gzip -9 -n -c "$DEST/ort-wasm-simd-threaded.wasm" > "$DEST/ort-wasm-simd-threaded.wasm.gz"  # served when the browser accepts gzip
cp "$tmp/package/package.json" "$DEST/package.json"
cat > "$DEST/LICENSE" <<'LIC'
onnxruntime-web is Copyright (c) Microsoft Corporation, licensed under the MIT License
(see "license" in package.json, and LICENSE in the microsoft/onnxruntime repository on GitHub):

Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
associated documentation files (the "Software"), to deal in the Software without restriction,
including without limitation the rights to use, copy, modify, merge, publish, distribute,
sublicense, and/or sell copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or
substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT
NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT
OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
LIC
echo "onnxruntime-web $VERSION -> $DEST"
