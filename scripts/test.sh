#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs the package with its drivers and test
# and docs tools into the project's virtual environment (.venv, see scripts/venv.sh) at the
# locked versions (requirements/constraints.txt), the test servers and Chromium
# (scripts/install-test-deps.sh), then runs ruff, mypy, the documentation build (warnings are
# errors), the packaging check and pytest (two workers, pytest-xdist), and then the suites that
# need no server on the other supported Python versions (scripts/test-other-pythons.sh).
#
# Arguments go to pytest, and then only that pytest run happens after the checks:
#   bash scripts/test.sh -k redis -x
# Environment:
#   SESSIONKIT_DEPS=latest   the newest release of every dependency instead of the lock
#   SESSIONKIT_OTHER_PYTHONS the other versions to run (default "3.12 3.13"; "" for none)
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
# Each xdist worker starts its own throwaway servers; "worksteal" rebalances the long tests.
if (($#)); then
    exec "$VENV_PYTHON" -m pytest -n auto --dist worksteal "$@"
fi
"$VENV_PYTHON" -m pytest -n auto --dist worksteal
bash scripts/test-other-pythons.sh
