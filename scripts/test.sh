#!/usr/bin/env bash
# The test suite. Installs what it needs: the package (scripts/setup.sh) and
# Debian's chromium for the end-to-end browser test of the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "warning: could not install chromium; the browser test will fail" >&2
  else
    echo "warning: chromium is missing (sudo apt-get install chromium); the browser test will fail" >&2
  fi
fi
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "error: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
