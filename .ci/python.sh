#!/usr/bin/env bash
# The Python package (clients/python): install it with its extras into a fresh virtual
# environment and run its pytest suite against the real server binary (the dev build
# that `cargo test` makes, or STREAMPCA_BIN).
#
# Without a usable Python (no python3, no venv, PyPI unreachable) the suite is skipped
# with a message, unless STREAMPCA_REQUIRE_PYTHON=1, which makes that a failure. CI sets
# it (.ci/run), so CI never passes by skipping.
#
# Usage: .ci/python.sh [pytest args]   (env: STREAMPCA_BIN, PYTHON, VENV)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${STREAMPCA_BIN:-target/debug/streampca}
PYTHON=${PYTHON:-python3}
VENV=${VENV:-target/python-venv}
# Absolute, so that the pytest step (run from clients/python) finds it too.
VENV=$(realpath -m "$VENV")

skip() {
    if [[ "${STREAMPCA_REQUIRE_PYTHON:-0}" == "1" ]]; then
        echo "python: $1 (STREAMPCA_REQUIRE_PYTHON=1)" >&2
        exit 1
    fi
    echo "python: $1; skipping the Python suite" >&2
    exit 0
}

command -v "$PYTHON" >/dev/null 2>&1 || skip "$PYTHON not found"
"$PYTHON" -c 'import sys; assert sys.version_info >= (3, 9)' 2>/dev/null ||
    skip "$PYTHON is older than 3.9"
# `cargo test --no-run` builds the binary with the tests' features, reusing their build.
[[ -x "$BIN" ]] || cargo test --locked --no-run
export STREAMPCA_BIN
STREAMPCA_BIN=$(realpath "$BIN")

if [[ ! -x "$VENV/bin/python" ]]; then
    if ! "$PYTHON" -m venv "$VENV" 2>/dev/null; then
        # Debian's python3 keeps venv in a separate package.
        if command -v apt-get >/dev/null 2>&1; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
        fi
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV" || skip "cannot create a virtual environment"
    fi
fi
# A fresh install of the package as a user would do it, with the test extras.
"$VENV/bin/python" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
"$VENV/bin/python" -m pip install --quiet --force-reinstall --no-deps ./clients/python ||
    skip "pip cannot install ./clients/python"
"$VENV/bin/python" -m pip install --quiet "./clients/python[sklearn,test]" ||
    skip "pip cannot install the test dependencies"

# Run from the tests' directory so `import streampca` is the installed package.
cd clients/python
exec "$VENV/bin/python" -m pytest tests -q -p no:cacheprovider "$@"
