#!/usr/bin/env bash
# Refreshes requirements/constraints.txt, the lock of the versions the test suite runs with:
# the newest releases of the package's dependencies, every extra and the test and docs tools,
# resolved by pip in a throwaway venv. Run the whole suite on the new lock before committing it
# (`bash scripts/test.sh`); `SESSIONKIT_DEPS=latest bash scripts/test.sh` tries the newest
# releases without touching the lock.
#
# Environment:
#   PYTHON  the interpreter to resolve with (default: python3; the oldest supported version,
#           3.11, so that every pin exists there; 3.12 and 3.13 use the same pins)
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
unset PIP_CONSTRAINT
"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --root-user-action=ignore --upgrade pip
# Not editable, so that the lock does not name this checkout.
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --root-user-action=ignore ".[all,test,docs]"
{
    printf '# The versions the test suite was last run green with: a pip constraints file.\n'
    printf '# scripts/venv.sh installs with it; refresh it with: bash scripts/lock.sh\n'
    printf '# Resolved on Python %s.\n' "$("$work/venv/bin/python" -c 'import platform; print(platform.python_version())')"
    "$work/venv/bin/python" -m pip freeze --disable-pip-version-check --exclude aiohttp-sessionkit \
        | LC_ALL=C sort -f
} >"$work/constraints.txt"
mkdir -p requirements
mv "$work/constraints.txt" requirements/constraints.txt
printf 'lock.sh: wrote requirements/constraints.txt (%s packages)\n' \
    "$(grep -cv '^#' requirements/constraints.txt)"
