#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs the package with its drivers and test
# and docs tools into the project's virtual environment (.venv, see scripts/venv.sh) at the
# locked versions (requirements/constraints.txt), the test servers and Chromium
# (scripts/install-test-deps.sh), then runs ruff, mypy, the documentation build (warnings are
# errors), the packaging check and pytest (pytest-xdist, one worker per core plus one), and
# then the suites that need no server on the other supported Python versions
# (scripts/test-other-pythons.sh).
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
# One worker more than the machine has cores: many tests spend their time waiting (for a
# store_timeout, an expiry, a failover, a server starting), and a third worker on a 2-core
# machine runs other tests meanwhile (measured: the pytest run took 9 min 08 s with two
# workers, 6 min 35 s with three).
workers=$(($(nproc) + 1))
if (($#)); then
    exec "$VENV_PYTHON" -m pytest -n "$workers" --dist worksteal "$@"
fi
"$VENV_PYTHON" -m pytest -n "$workers" --dist worksteal
bash scripts/test-other-pythons.sh
