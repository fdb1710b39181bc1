#!/usr/bin/env bash
# The suites that need no server process (the store contract on the memory, cookie, JWT and
# SQLite stores, the hostile-input families, sessions, crypto, JWT, transports, config, the
# docs' examples) on the supported Python versions other than the main run's, each in a venv
# of its own (.venv-pyX.Y) at the same locked versions. The library leans on CPython details
# (the json module's C scanner, recursion limits), so a version it claims is a version it runs.
#
# Environment:
#   SESSIONKIT_OTHER_PYTHONS  versions to run (default "3.12 3.13"); each is found
#                             under pyenv's versions directory or as pythonX.Y on PATH (a
#                             candidate counts only if it runs and is that version)
#   SESSIONKIT_DEPS, CI       as for scripts/test.sh; with CI set, a missing version fails
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh

find_python() {
    # The first candidate that really is Python X.Y: a pyenv shim on PATH exists for every
    # installed version but fails unless that version is selected, so each one is asked.
    local version="$1" candidate
    for candidate in \
        $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}/versions/$version".*/bin/"python$version" \
            2>/dev/null | sort -rV) \
        "$(command -v "python$version" || true)"; do
        if [[ -n "$candidate" ]] && [[ "$("$candidate" -c \
            'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" == "$version" ]]; then
            printf '%s' "$candidate"
            return
        fi
    done
}

ci=false
case "${CI:-}" in "" | 0 | false | no | off) ;; *) ci=true ;; esac
suites=(
    tests/unit tests/system/test_docs.py
    tests/stores/test_contract.py tests/stores/test_hostile.py tests/stores/test_store_jwt.py
    tests/stores/test_jwt_cache.py tests/stores/test_jwks.py tests/stores/test_jwks_url.py
    tests/stores/test_cookie_store_cache.py tests/stores/test_memory_store.py
    tests/stores/test_security.py tests/stores/test_races.py
    tests/stores/test_merge.py tests/stores/test_user_sessions.py tests/stores/test_deny_list.py
    tests/stores/test_save_rules.py tests/system/test_observability.py
)
status=0
for version in ${SESSIONKIT_OTHER_PYTHONS-3.12 3.13}; do
    python="$(find_python "$version")"
    if [[ -z "$python" ]]; then
        message="Python $version not found (under pyenv, or as python$version on PATH): its suites did not run"
        if $ci; then
            printf 'test-other-pythons: FAIL: %s\n' "$message" >&2
            exit 1
        fi
        printf 'test-other-pythons: WARNING: %s\n' "$message" >&2
        continue
    fi
    printf 'test-other-pythons: Python %s (%s), the suites that need no server\n' \
        "$version" "$python"
    venv_name=".venv-py$version"
    [[ "${SESSIONKIT_DEPS:-locked}" == latest ]] && venv_name=".venv-latest-py$version"
    SESSIONKIT_VENV="$PWD/$venv_name" PYTHON="$python" sessionkit_venv all test
    SESSIONKIT_TEST_SERVERS=none "$VENV_PYTHON" -m pytest -n auto --dist worksteal -q \
        -p no:cacheprovider "${suites[@]}" || status=1
done
exit "$status"
