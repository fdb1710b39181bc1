# Sourced by scripts/demo.sh and scripts/test.sh: the project's own virtual environment.
#
# Installing into whatever `python3` is active would repoint an editable install the user
# already has (or pollute the system's site-packages), so both commands install into a
# venv they create in the project, and reinstall only when the package metadata or the
# requested extras change.
#
# Environment:
#   SESSIONKIT_VENV  where the venv lives (default: .venv in the project; gitignored)
#   PYTHON           the interpreter that creates it (default: python3; 3.11 or newer)

# sessionkit_venv [EXTRA...]: create the venv if needed, install the package (editable) with
# the given extras, and set VENV_PYTHON to the venv's interpreter.
sessionkit_venv() {
    local root venv extras stamp want
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    venv="${SESSIONKIT_VENV:-$root/.venv}"
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
    # The stamp names what was installed; setup.cfg and pyproject.toml decide the dependencies.
    want="$(cat "$root/setup.cfg" "$root/pyproject.toml" | cksum | cut -d' ' -f1) [$extras]"
    stamp="$venv/.sessionkit-installed"
    if ! grep -qxF -- "$want" "$stamp" 2>/dev/null; then
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            --root-user-action=ignore -e "$root${extras:+[$extras]}"
        printf '%s\n' "$want" >>"$stamp"
    fi
    VENV_PYTHON="$venv/bin/python"
}
