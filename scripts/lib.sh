# Shared by scripts/demo and scripts/test: a virtual environment built from the lock files.
# shellcheck shell=bash
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${RETENTION_VENV:-$ROOT/.venv}"

die() { echo "error: $*" >&2; exit 1; }
say() { echo "==> $*"; }

find_python() {
  local candidate
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  die "Python 3.11 or newer is needed (set PYTHON=/path/to/python3.11)"
}

# Install the locked dependencies (hash-checked) and the project itself, once per lock change.
setup_venv() {
  local lock="$1" stamp python
  python="$(find_python)"
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV with $python"
    "$python" -m venv "$VENV" || die "could not create a virtual environment (on Debian: apt-get install python3-venv)"
  fi
  stamp="$VENV/.installed-$(basename "$lock")-$(sha256sum "$ROOT/$lock" "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    say "installing dependencies from $lock"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet --require-hashes -r "$ROOT/$lock"
    "$VENV/bin/python" -m pip install --quiet --no-deps -e "$ROOT"
    # Compiled bytecode keeps the CLI's start-up quick even where PYTHONDONTWRITEBYTECODE is set.
    "$VENV/bin/python" -m compileall -q -j 0 "$VENV/lib" "$ROOT/worker" >/dev/null || true
    rm -f "$VENV"/.installed-*
    touch "$stamp"
  fi
  export PATH="$VENV/bin:$PATH"
}

# A second S3 implementation for the archive tests: s3rver from npm, pinned, in .s3rver/ (or
# $RETENTION_S3RVER_DIR), installed once per version like the venv. Keep the version in step
# with S3RVER_VERSION in worker/simulators/s3rver.py (a test checks). Without node and npm the
# tests against s3rver are skipped, and they say so.
S3RVER_VERSION="3.7.1"
setup_s3rver() {
  local dir="${RETENTION_S3RVER_DIR:-$ROOT/.s3rver}" stamp
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    say "node or npm not found: the archive tests will skip s3rver (install Node.js 18+ to run them)"
    return 0
  fi
  stamp="$dir/.installed-s3rver-$S3RVER_VERSION"
  if [ ! -f "$stamp" ]; then
    say "installing s3rver $S3RVER_VERSION into $dir with npm"
    mkdir -p "$dir"
    npm install --no-audit --no-fund --save-exact --prefix "$dir" "s3rver@$S3RVER_VERSION" \
      >"$dir/npm.log" 2>&1 || die "npm could not install s3rver $S3RVER_VERSION (see $dir/npm.log)"
    rm -f "$dir"/.installed-s3rver-*
    touch "$stamp"
  fi
  export RETENTION_S3RVER_DIR="$dir"
}
