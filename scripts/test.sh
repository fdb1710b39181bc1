#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs the package with its drivers and test
# and docs tools into the project's virtual environment (.venv, see scripts/venv.sh), the
# test servers and Chromium (scripts/install-test-deps.sh), then runs ruff, mypy, the
# documentation build (warnings are errors), the packaging check and pytest.
# Arguments go to pytest: bash scripts/test.sh -k redis -x
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
sessionkit_venv all test docs
bin="$(dirname "$VENV_PYTHON")"
PYTHON="$VENV_PYTHON" bash scripts/install-test-deps.sh
"$bin/ruff" check aiohttp_sessionkit tests examples benchmarks docs scripts
"$bin/mypy"
PYTHON="$VENV_PYTHON" bash scripts/build-docs.sh
PYTHON="$VENV_PYTHON" bash scripts/check-package.sh
"$VENV_PYTHON" -m pytest "$@"
