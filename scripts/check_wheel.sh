#!/usr/bin/env bash
# Wheel check (issue 19): the project installs and runs like a library.
#   1. build the wheel and sdist (python -m build) and check they carry the package data;
#   2. install the wheel into a clean virtual environment outside the repository;
#   3. from a temporary directory, run `keyboard-fl main --preset tiny`;
#   4. start `keyboard-fl demo` on a free loopback port, fetch / and /static/app.js, stop it.
# Everything lives in one temporary directory, removed on exit with the demo process.
# PYTHON picks the interpreter for the clean venv (default python3, >= 3.11).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
PY="${PYTHON:-python3}"
BUILD_PY="${BUILD_PY:-.venv/bin/python}"  # builds the distributions (build is installed into it if missing)
[ -x "$BUILD_PY" ] || BUILD_PY="$PY"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/keyboard_fl-wheel.XXXXXX")
demo_pid=""
cleanup() {
  if [ -n "$demo_pid" ] && kill -0 "$demo_pid" 2>/dev/null; then
    kill "$demo_pid" 2>/dev/null || true
    wait "$demo_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT
say() { echo "[check_wheel $((SECONDS - start))s] $*"; }

"$BUILD_PY" -m build --version >/dev/null 2>&1 || "$BUILD_PY" -m pip install --quiet build
say "building wheel and sdist"
"$BUILD_PY" -m build --outdir "$tmp/dist" . >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; exit 1; }
if grep -iE "SetuptoolsDeprecationWarning|license.*deprecated" "$tmp/build.log"; then
  echo "error: setuptools warns about the package metadata (see above)" >&2
  exit 1
fi
wheel=$(ls "$tmp"/dist/*.whl)
sdist=$(ls "$tmp"/dist/*.tar.gz)
"$PY" - "$wheel" "$sdist" <<'EOF'
import sys, tarfile, zipfile
wheel, sdist = sys.argv[1:]
need = ["keyboard_fl/data/lang/persona.json", "keyboard_fl/data/lang/slots/verb.txt",
        "keyboard_fl/data/lang/templates/chat.txt", "keyboard_fl/demo/static/index.html",
        "keyboard_fl/demo/static/app.js", "keyboard_fl/flower/app/pyproject.toml"]
names = zipfile.ZipFile(wheel).namelist()
missing = [n for n in need if n not in names]
if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
    missing.append("*.dist-info/licenses/LICENSE")
snames = {n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n}
missing += [f"sdist: {n}" for n in need + ["LICENSE"] if n not in snames]
if missing:
    sys.exit(f"error: missing from the built distributions: {', '.join(missing)}")
print(f"wheel: {len(names)} files, sdist: {len(snames)} files; package data and LICENSE present")
EOF

say "installing the wheel into a clean venv"
"$PY" -m venv "$tmp/venv"
"$tmp/venv/bin/python" -m pip install --quiet --disable-pip-version-check "$wheel"
mkdir "$tmp/work"
cd "$tmp/work"  # no checkout here: everything must come from the installed wheel
unset PYTHONPATH
where=$("$tmp/venv/bin/python" -c "import keyboard_fl; print(keyboard_fl.__file__)")
case "$where" in
  "$tmp/venv/"*) ;;
  *) echo "error: keyboard_fl imported from $where, not from the clean venv" >&2; exit 1 ;;
esac

say "keyboard-fl main --preset tiny"
"$tmp/venv/bin/keyboard-fl" main --preset tiny --out "$tmp/work/runs" >"$tmp/main.log" 2>&1 || { cat "$tmp/main.log"; exit 1; }
for m in central fedavg dp-fedavg; do
  [ -f "$tmp/work/runs/$m/metrics.json" ] || { cat "$tmp/main.log"; echo "error: no $m/metrics.json" >&2; exit 1; }
done

port=$("$tmp/venv/bin/python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
say "keyboard-fl demo on 127.0.0.1:$port"
"$tmp/venv/bin/keyboard-fl" demo --runs "$tmp/work/runs" --host 127.0.0.1 --port "$port" >"$tmp/demo.log" 2>&1 &
demo_pid=$!
"$tmp/venv/bin/python" - "$port" "$demo_pid" <<'EOF' || { cat "$tmp/demo.log"; exit 1; }
import os, sys, time, urllib.request
port, pid = int(sys.argv[1]), int(sys.argv[2])
base = f"http://127.0.0.1:{port}"
deadline = time.monotonic() + 300  # three models load and warm up (JAX compiles) before it listens
while True:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("error: the demo exited before serving")
    try:
        page = urllib.request.urlopen(base + "/", timeout=5).read().decode()
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("error: the demo did not answer within 300 s")
        time.sleep(1)
js = urllib.request.urlopen(base + "/static/app.js", timeout=5).read().decode()
assert "<html" in page.lower() and "app.js" in page, "GET / is not the demo page"
assert "/api/suggest" in js, "GET /static/app.js is not the demo script"
print(f"GET / ({len(page)} bytes) and /static/app.js ({len(js)} bytes) served by the installed wheel")
EOF
kill "$demo_pid"
wait "$demo_pid" 2>/dev/null || true
if kill -0 "$demo_pid" 2>/dev/null; then
  echo "error: the demo (pid $demo_pid) did not stop" >&2
  exit 1
fi
demo_pid=""
say "wheel check passed"
