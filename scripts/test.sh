#!/usr/bin/env bash
# The test suite. Installs what it needs: Debian's chromium (end-to-end browser
# tests of the demo) and node/npm (onnxruntime-web for the on-device page, the
# tokenizer parity test), then the package and its assets (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null) \
      || echo "warning: could not install ${missing[*]}; the browser tests will fail" >&2
  else
    echo "warning: missing ${missing[*]} (sudo apt-get install ${missing[*]}); the browser tests will fail" >&2
  fi
fi
bash scripts/setup.sh
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
