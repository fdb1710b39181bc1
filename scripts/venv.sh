# Sourced by scripts/demo.sh and scripts/test.sh: the project's own virtual environment.
#
# Installing into whatever `python3` is active would repoint an editable install the user
# already has (or pollute the system's site-packages), so both commands install into a
# venv they create in the project, and reinstall only when the package metadata, the lock or
# the requested extras change.
#
# Every dependency is installed at the version in requirements/constraints.txt, the lock of
# what the suite was last run green with (refresh it with `bash scripts/lock.sh`): a
# dependency's new release cannot turn the test command red on the day someone runs it. The
# library's own install_requires stay ranges; the lock only constrains this venv.
#
# Environment:
#   SESSIONKIT_DEPS  locked (default) or latest: the newest release of every dependency,
#                    in a venv of its own (.venv-latest), to see drift before users do
#   SESSIONKIT_VENV  where the venv lives (default: .venv, or .venv-latest; gitignored)
#   PYTHON           the interpreter that creates it (default: python3; 3.11 or newer)

# sessionkit_venv [EXTRA...]: create the venv if needed, install the package (editable) with
# the given extras, and set VENV_PYTHON to the venv's interpreter. Also exports
# PIP_CONSTRAINT (locked mode), so every later pip call of the same command (the packaging
# check's fresh venvs) installs the locked versions too.
sessionkit_venv() {
    local root venv extras stamp want deps pip_args=()
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    deps="${SESSIONKIT_DEPS:-locked}"
    case "$deps" in
        locked)
            venv="${SESSIONKIT_VENV:-$root/.venv}"
            export PIP_CONSTRAINT="$root/requirements/constraints.txt"
            ;;
        latest)
            venv="${SESSIONKIT_VENV:-$root/.venv-latest}"
            unset PIP_CONSTRAINT
            pip_args=(--upgrade --upgrade-strategy eager)
            ;;
        *)
            printf 'SESSIONKIT_DEPS must be "locked" (the default) or "latest", not %s\n' \
                "$deps" >&2
            return 1
            ;;
    esac
    if [[ ! -x "$venv/bin/python" ]]; then
        local python="${PYTHON:-python3}"
        "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || {
            printf 'aiohttp-sessionkit needs Python 3.11 or newer as %s (set PYTHON=...)\n' \
                "$python" >&2
            return 1
        }
        "$python" -m venv "$venv" || {
            printf 'could not create a virtual environment in %s (on Debian: apt-get install python3-venv)\n' \
                "$venv" >&2
            return 1
        }
    fi
    extras="$(IFS=,; echo "$*")"
    # The stamp names what was installed; setup.cfg, pyproject.toml and the lock decide the
    # dependencies. "latest" reinstalls every time: that is its point.
    want="$(cat "$root/setup.cfg" "$root/pyproject.toml" "$root/requirements/constraints.txt" \
        | cksum | cut -d' ' -f1) $deps [$extras]"
    stamp="$venv/.sessionkit-installed"
    if [[ "$deps" == latest ]] || ! grep -qxF -- "$want" "$stamp" 2>/dev/null; then
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            --root-user-action=ignore "${pip_args[@]}" -e "$root${extras:+[$extras]}"
        printf '%s\n' "$want" >>"$stamp"
    fi
    VENV_PYTHON="$venv/bin/python"
}
